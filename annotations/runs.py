"""Runs: every result a tab produces, kept with its inputs' sources and its files.

A run's files live under ``<data dir>/runs/<id>/`` and are written atomically; the id is 128 random bits
in hex, so a run is only found by whoever was handed its id. Runs are what a user downloads again and
what a perceptual study shows as stimuli (runs sharing a ``group_key`` came from the same input).

    run = save_run(store, kind="hoi", method="interactvlm-hoi", inputs={"contacts": "painted"},
                   files={"fit.glb": glb_bytes, "fit.npz": Path("/tmp/fit.npz")}, group_key=image_sha)
    load_run(store, run.id).files["fit.glb"]   # -> Path

A run made from a photo keeps it as ``input<suffix>`` (``input_photo_name``): a study shows it as the item's
reference image, never as a stimulus.
"""
from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from sqlalchemy import delete, select

from annotations import models
from annotations.domain import Run
from annotations.store import Store, utcnow
from engine.errors import InputError
from engine.paths import write_atomically

RUN_ID = re.compile(r"[0-9a-f]{32}")
FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
MAX_FILES = 32
MAX_JSON_BYTES = 64 * 1024
MAX_LIST = 1000
INPUT_STEM = "input"


def save_run(store: Store, *, kind: str, method: str, inputs: Mapping, files: Mapping[str, bytes | Path],
             summary: Mapping | None = None, group_key: str | None = None, owner: str | None = None) -> Run:
    """Store a run: its files first (atomically, under a fresh id), then its row."""
    _check_fields(kind, method, group_key, files)
    inputs, summary = _json_field("inputs", inputs), _json_field("summary", summary or {})
    run_id = secrets.token_hex(16)
    folder = runs_dir(store) / run_id
    folder.mkdir(parents=True)
    try:
        sizes = {name: _write_file(folder / name, content) for name, content in files.items()}
        with store.session(write=True) as session:
            session.add(models.RunRow(id=run_id, kind=kind, method=method, group_key=group_key, owner=owner,
                                      inputs=inputs, outputs=sizes, summary=summary, created_at=utcnow()))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return load_run(store, run_id)


def load_run(store: Store, run_id: str) -> Run:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise InputError("a run id is 32 lowercase hex digits")
    with store.session() as session:
        row = session.get(models.RunRow, run_id)
        if row is None:
            raise InputError(f"no run with id {run_id}")
        return _run_from_row(store, row)


def list_runs(store: Store, kind: str | None = None, group_key: str | None = None,
              limit: int = 200) -> list[Run]:
    """Newest first, optionally of one kind and/or one group."""
    if kind is not None and kind not in models.RUN_KINDS:
        raise InputError(f"run kind must be one of {models.RUN_KINDS}, got {kind!r}")
    statement = select(models.RunRow).order_by(models.RunRow.created_at.desc(), models.RunRow.id)
    if kind is not None:
        statement = statement.where(models.RunRow.kind == kind)
    if group_key is not None:
        statement = statement.where(models.RunRow.group_key == group_key)
    with store.session() as session:
        rows = session.scalars(statement.limit(max(1, min(int(limit), MAX_LIST))))
        return [_run_from_row(store, row) for row in rows]


def prune_runs(store: Store, max_bytes: int) -> tuple[int, int]:
    """Delete the oldest runs (row and folder) while all runs' files hold more than ``max_bytes``.

    Studies keep their own copy of every stimulus, so a pruned run leaves existing studies whole.
    Returns (runs deleted, bytes kept)."""
    if max_bytes < 0:
        raise InputError("the runs budget must be zero or more bytes")
    with store.session() as session:
        rows = session.execute(select(models.RunRow.id, models.RunRow.outputs)
                               .order_by(models.RunRow.created_at, models.RunRow.id)).all()
    sizes = [(run_id, sum(int(size) for size in (outputs or {}).values())) for run_id, outputs in rows]
    total, doomed = sum(size for _, size in sizes), []
    for run_id, size in sizes:  # oldest first
        if total <= max_bytes:
            break
        doomed.append(run_id)
        total -= size
    if doomed:
        with store.session(write=True) as session:
            session.execute(delete(models.RunRow).where(models.RunRow.id.in_(doomed)))
        for run_id in doomed:
            shutil.rmtree(runs_dir(store) / run_id, ignore_errors=True)
    return len(doomed), total


def input_photo_name(suffix: str) -> str:
    """The run file name of the input photo, from its checked format's suffix (``CheckedImage.suffix``)."""
    return INPUT_STEM + suffix


def input_photo(run: Run) -> str | None:
    """The name of the run's input photo file, or None when it kept none (e.g. GenZI: a scene, no photo)."""
    return next((name for name in run.files if Path(name).stem == INPUT_STEM), None)


def runs_dir(store: Store) -> Path:
    return store.data_dir / "runs"


def _check_fields(kind: str, method: str, group_key: str | None, files: Mapping) -> None:
    if kind not in models.RUN_KINDS:
        raise InputError(f"run kind must be one of {models.RUN_KINDS}, got {kind!r}")
    if not isinstance(method, str) or not method.strip() or len(method) > 200:
        raise InputError("a run's method must be 1-200 characters")
    if group_key is not None and (not isinstance(group_key, str) or not 0 < len(group_key) <= 128):
        raise InputError("a run's group key must be 1-128 characters")
    if len(files) > MAX_FILES:
        raise InputError(f"a run holds at most {MAX_FILES} files, got {len(files)}")
    for name in files:
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
            raise InputError(f"run file name {name!r} may only hold letters, digits, '.', '_' and '-' "
                             "(at most 64, no leading '.')")


def _json_field(name: str, value: Mapping) -> dict:
    try:
        text = json.dumps(dict(value), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise InputError(f"a run's {name} must be plain JSON (no NaN): {error}") from None
    if len(text) > MAX_JSON_BYTES:
        raise InputError(f"a run's {name} is over {MAX_JSON_BYTES // 1024} KiB of JSON")
    return json.loads(text)


def _write_file(path: Path, content: bytes | Path) -> int:
    if isinstance(content, (bytes, bytearray)):
        write_atomically(path, lambda handle: handle.write(content))
    elif isinstance(content, Path):
        write_atomically(path, lambda handle: _copy_into(content, handle))
    else:
        raise InputError(f"run file {path.name} must be bytes or a path, got {type(content).__name__}")
    return path.stat().st_size


def _copy_into(source: Path, handle) -> None:
    with open(source, "rb") as reader:
        shutil.copyfileobj(reader, handle)


def _run_from_row(store: Store, row: models.RunRow) -> Run:
    folder = runs_dir(store) / row.id
    files = MappingProxyType({name: folder / name for name in sorted(row.outputs)})
    return Run(id=row.id, kind=row.kind, method=row.method, group_key=row.group_key,
               inputs=MappingProxyType(dict(row.inputs)), files=files,
               summary=MappingProxyType(dict(row.summary)), created_at=row.created_at)
