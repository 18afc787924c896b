"""Bounded resources: a budget of decoded image pixels per request lane, and the sweep of old files.

- ``PixelBudget``: every request of a lane that decodes an image holds its pixel count (from the
  image header, before any decode) while it runs. A request that would take the lane over its
  budget waits up to ``pixel_wait_s``, then is refused with a message; an image larger than the
  whole budget is refused at once. Decoded RGB costs 3 bytes a pixel (4 with alpha) plus the model's
  own copies, so the budget bounds that part of memory no matter how many visitors arrive at once.
- ``Sweeper``: a background thread that deletes files older than ``cache_max_age_s`` from Gradio's
  upload folder and the studio's output and admin folders, then the oldest files while the folders
  hold more than ``cache_max_bytes``; empty folders go too. Every pass is logged with its counts.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from pathlib import Path

from PIL import Image

from engine.errors import InputError

log = logging.getLogger("studio.resources")


def header_pixels(source) -> int:
    """Width x height from an image's header (a path or bytes; PIL reads only what the header needs and
    decodes no pixel); 0 when it is unreadable (the store's image checks then refuse it with a message)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0
    return int(width) * int(height)


class PixelBudget:
    """At most ``limit`` decoded pixels held at once by one lane's requests."""

    def __init__(self, limit: int, wait_s: float, lane: str):
        self.limit, self.wait_s, self.lane = limit, wait_s, lane
        self.used = self.peak = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        pixels = max(int(pixels), 0)
        if pixels > self.limit:
            raise InputError(f"the image has {pixels / 1e6:.1f} million pixels; this server decodes at most "
                             f"{self.limit / 1e6:.1f} million at once; send a smaller image")
        with self._changed:
            if not self._changed.wait_for(lambda: self.used + pixels <= self.limit, timeout=self.wait_s):
                log.warning("pixel budget of lane %s full (%d of %d held); refused %d", self.lane, self.used,
                            self.limit, pixels)
                raise InputError("the server is busy with other large images right now; try again in a minute")
            self.used += pixels
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._changed:
                self.used -= pixels
                self._changed.notify_all()


def sweep(folders, max_age_s: float, max_bytes: int, now: float | None = None) -> tuple[int, int]:
    """Delete files older than ``max_age_s`` in ``folders``, then the oldest while they hold more than
    ``max_bytes``, then empty sub-folders. Returns (files deleted, bytes kept)."""
    now = time.time() if now is None else now
    files = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for root, _, names in os.walk(folder):
            for name in names:
                path = Path(root) / name
                try:
                    stat = path.lstat()
                except FileNotFoundError:
                    continue
                files.append((stat.st_mtime, stat.st_size, path))
    files.sort()  # oldest first
    total, deleted = sum(size for _, size, _ in files), 0
    for mtime, size, path in files:
        if now - mtime <= max_age_s and total <= max_bytes:
            break
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted += 1
            total -= size
    for folder in folders:
        for root, dirs, _ in os.walk(folder, topdown=False):
            for name in dirs:
                with contextlib.suppress(OSError):  # not empty (or already gone): kept
                    (Path(root) / name).rmdir()
    return deleted, total


class Sweeper:
    """Runs ``sweep`` every ``every_s`` seconds on a daemon thread until ``stop``, then ``after_sweep``
    (e.g. pruning kept runs), if given."""

    def __init__(self, folders, max_age_s: float, max_bytes: int, every_s: float, after_sweep=None):
        self.folders, self.max_age_s, self.max_bytes, self.every_s = folders, max_age_s, max_bytes, every_s
        self.after_sweep = after_sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="studio-sweeper", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                deleted, kept = sweep(self.folders(), self.max_age_s, self.max_bytes)
            except OSError as error:  # a folder vanished or turned unreadable: log it, try again next time
                log.warning("sweep failed: %s", error)
                continue
            if deleted:
                log.info("swept %d old files; %d bytes kept", deleted, kept)
            if self.after_sweep is not None:
                try:
                    self.after_sweep()
                except Exception:  # a store hiccup must not stop the sweeper: logged, tried again next time
                    log.exception("the step after the sweep failed")
