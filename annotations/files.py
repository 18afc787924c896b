"""Checks for uploaded files: images, zip archives and paths named by CSV/JSONL rows.

Every upload is treated as hostile. ``check_image`` accepts only JPEG, PNG, WEBP and BMP, reads the size from
the header and rejects oversized images *before* any pixel is decoded, then decodes fully to catch truncated
files. ``read_zip`` validates every member (name, type, encryption, compression, declared sizes) before it
extracts anything, and caps the bytes it actually reads so a lying header cannot inflate past the limits.
``safe_member_name`` and ``resolve_inside`` keep relative paths inside their folder.

Rejections raise ``ImageRejected`` (images) or ``UnsafeArchiveError`` (archives and paths); the message names
the offending file, says what was wrong and what is accepted. Nothing is written to disk here.
Callers should bound the size of the upload itself (the zip file) before calling ``read_zip``.
"""
from __future__ import annotations

import hashlib
import io
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from annotations.errors import ImageRejected, UnsafeArchiveError

_MIB = 2**20

# PIL format id -> our lower-case name. MPO is a JPEG with extra pictures appended (phone cameras write it).
_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
_SUFFIXES = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp"}
_PIL_OPENERS = ("JPEG", "PNG", "WEBP", "BMP")  # only these PIL parsers ever see an upload
_ACCEPTED_IMAGES = "JPEG, PNG, WEBP or BMP"
_SIGNATURES = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
               (b"%PDF", "PDF"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"))
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # transposed / rotated 90 or 270 degrees
_PIL_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

_DRIVE = re.compile(r"^[A-Za-z]:")
_ACCEPTED_PATHS = "a relative path with '/' separators inside the upload"
_ACCEPTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_CHUNK = 64 * 1024
# Hostile archives make zipfile raise almost anything; all of these mean "corrupt member".
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


def _shown(name: object) -> str:
    """The name quoted for a message: repr escapes control characters, and long names are cut."""
    text = str(name)
    return repr(text if len(text) <= 120 else text[:117] + "...")


# ---------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * _MIB
    max_pixels: int = 40_000_000
    max_side: int = 16384
    min_side: int = 16


@dataclass(frozen=True)
class CheckedImage:
    """An accepted image: ``data`` is the upload unchanged; width/height are as displayed (EXIF-rotated)."""

    sha256: str
    format: str
    width: int
    height: int
    data: bytes

    @property
    def suffix(self) -> str:
        return _SUFFIXES[self.format]


def check_image(data: bytes, name: str = "image", limits: ImageLimits = ImageLimits()) -> CheckedImage:
    """Accept ``data`` as an image or raise ``ImageRejected``; never decodes pixels of an oversized image."""
    data = bytes(data)
    _check_byte_size(data, name, limits)
    with _pil_bomb_guard(name, limits), _open_image(data, name) as image:
        image_format = _accepted_format(image, name)
        _check_dimensions(image.size, name, limits)
        _decode(image, name)
        width, height = _displayed_size(image, name)
    return CheckedImage(hashlib.sha256(data).hexdigest(), image_format, width, height, data)


def _check_byte_size(data: bytes, name: str, limits: ImageLimits) -> None:
    if not data:
        raise ImageRejected(f"image {_shown(name)} is empty: a non-empty {_ACCEPTED_IMAGES} file is accepted")
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"image {_shown(name)} is {len(data):,} bytes: files of at most "
                            f"{limits.max_bytes:,} bytes are accepted")


@contextmanager
def _pil_bomb_guard(name: str, limits: ImageLimits) -> Iterator[None]:
    """Turn PIL's own decompression-bomb error and warning into ``ImageRejected`` (PIL's globals stay as they are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except _PIL_BOMBS as exc:
            raise ImageRejected(f"image {_shown(name)} claims too many pixels to decode safely ({exc}); "
                                f"at most {limits.max_pixels:,} pixels are accepted") from exc


def _open_image(data: bytes, name: str) -> Image.Image:
    """Parse the header only, with no parser other than the accepted formats'."""
    try:
        return Image.open(io.BytesIO(data), formats=_PIL_OPENERS)
    except _PIL_BOMBS:
        raise
    except UnidentifiedImageError as exc:
        raise ImageRejected(_unidentified_message(data, name)) from exc
    except Exception as exc:  # a hostile header can make a parser raise nearly anything
        raise ImageRejected(f"image {_shown(name)} is not a readable image ({type(exc).__name__}: {exc}); "
                            f"{_ACCEPTED_IMAGES} files are accepted") from exc


def _unidentified_message(data: bytes, name: str) -> str:
    sniffed = next((label for magic, label in _SIGNATURES if data.startswith(magic)), None)
    if sniffed is None and data[4:8] == b"ftyp":
        sniffed = "HEIF/AVIF"
    if sniffed:
        return f"image {_shown(name)}: format {sniffed} not accepted; {_ACCEPTED_IMAGES} files are accepted"
    return f"image {_shown(name)} is not a readable image: {_ACCEPTED_IMAGES} files are accepted"


def _accepted_format(image: Image.Image, name: str) -> str:
    image_format = _FORMATS.get(image.format or "")
    if image_format is None:
        raise ImageRejected(f"image {_shown(name)}: format {image.format} not accepted; "
                            f"{_ACCEPTED_IMAGES} files are accepted")
    return image_format


def _check_dimensions(size: tuple[int, int], name: str, limits: ImageLimits) -> None:
    """Header size only: runs before any pixel is decoded (decompression-bomb defence)."""
    width, height = size
    shown = f"image {_shown(name)} is {width}x{height} pixels"
    if max(width, height) > limits.max_side:
        raise ImageRejected(f"{shown}: sides of at most {limits.max_side} pixels are accepted")
    if min(width, height) < limits.min_side:
        raise ImageRejected(f"{shown}: sides of at least {limits.min_side} pixels are accepted")
    if width * height > limits.max_pixels:
        raise ImageRejected(f"{shown} ({width * height:,} pixels): at most {limits.max_pixels:,} pixels are accepted")


def _decode(image: Image.Image, name: str) -> None:
    try:
        image.load()
    except _PIL_BOMBS:
        raise
    except Exception as exc:  # truncated or corrupt data surfaces as OSError, SyntaxError, zlib errors, ...
        raise ImageRejected(f"image {_shown(name)} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                            f"complete {_ACCEPTED_IMAGES} files are accepted") from exc


def _displayed_size(image: Image.Image, name: str) -> tuple[int, int]:
    """Width and height after the EXIF orientation is applied (read after ``load()``: PNG keeps EXIF at the end)."""
    width, height = image.size
    try:
        swapped = image.getexif().get(_ORIENTATION_TAG) in _SWAPPING_ORIENTATIONS
    except Exception as exc:  # malformed EXIF: we could not tell how viewers would rotate it
        raise ImageRejected(f"image {_shown(name)} has unreadable EXIF metadata ({type(exc).__name__}: {exc}); "
                            f"{_ACCEPTED_IMAGES} files with valid or no EXIF are accepted") from exc
    return (height, width) if swapped else (width, height)


# ---------------------------------------------------------------------------------------------- paths


def safe_member_name(name: str) -> str:
    """``name`` as a clean relative POSIX path (``./a//b`` -> ``a/b``), or ``UnsafeArchiveError``."""
    if not isinstance(name, str) or not name:
        raise UnsafeArchiveError(f"path {_shown(name)} is empty or not text: {_ACCEPTED_PATHS} is accepted")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise UnsafeArchiveError(f"path {_shown(name)} contains a NUL or control character: {_ACCEPTED_PATHS} "
                                 "is accepted")
    if "\\" in name:
        raise UnsafeArchiveError(f"path {_shown(name)} contains a backslash: {_ACCEPTED_PATHS} is accepted")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchiveError(f"path {_shown(name)} is absolute or names a drive: {_ACCEPTED_PATHS} is accepted")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"path {_shown(name)} contains '..': {_ACCEPTED_PATHS} is accepted")
    if not parts:
        raise UnsafeArchiveError(f"path {_shown(name)} names no file: {_ACCEPTED_PATHS} is accepted")
    return "/".join(parts)


def resolve_inside(base: Path, relative: str) -> Path:
    """The resolved path of ``relative`` under ``base`` (symlinks followed); it must stay inside ``base``.

    The file need not exist. A symlink that leads outside ``base`` is rejected.
    """
    clean = safe_member_name(relative)
    root = Path(base).resolve()
    try:
        target = (root / clean).resolve()
    except (RuntimeError, OSError) as exc:  # symlink loop (RuntimeError before Python 3.13)
        raise UnsafeArchiveError(f"path {_shown(relative)} cannot be resolved ({exc}); "
                                 "only files inside the upload folder are accepted") from exc
    if target == root or not target.is_relative_to(root):
        raise UnsafeArchiveError(f"path {_shown(relative)} leads outside the upload folder (through a symbolic "
                                 "link); only files inside the upload folder are accepted")
    return target


# ---------------------------------------------------------------------------------------------- zip archives


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 20000
    max_member_bytes: int = 25 * _MIB
    max_total_bytes: int = 512 * _MIB
    max_ratio: float = 200.0  # uncompressed / compressed, checked for members over 1 MiB uncompressed


def read_zip(source: Path | bytes, limits: ArchiveLimits = ArchiveLimits()) -> dict[str, bytes]:
    """``{safe name: bytes}`` of the regular files in a zip (a path or the bytes), or ``UnsafeArchiveError``.

    Directories, ``__MACOSX/`` and dot-files are skipped. Every member is checked before any is extracted,
    and any rejection raises: nothing is returned from a rejected archive.
    """
    with _open_zip(source) as archive:
        planned = _plan_members(archive, limits)
        return _extract(archive, planned, limits)


def _open_zip(source: Path | bytes) -> zipfile.ZipFile:
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    label = "the uploaded archive" if is_bytes else f"archive {_shown(source)}"
    try:
        return zipfile.ZipFile(io.BytesIO(bytes(source)) if is_bytes else Path(source))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise UnsafeArchiveError(f"{label} is not a readable zip archive ({exc}); a .zip file is accepted") from exc


def _plan_members(archive: zipfile.ZipFile, limits: ArchiveLimits) -> list[tuple[str, zipfile.ZipInfo]]:
    """Validate every entry; return the regular files to extract as (safe name, info)."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeArchiveError(f"the archive has {len(infos):,} entries: at most {limits.max_members:,} "
                                 "are accepted")
    planned = []
    for info in infos:
        name = _checked_member(info)
        if not info.is_dir() and not _is_skipped(name):
            planned.append((name, info))
    _check_unique(planned)
    _check_declared_sizes(planned, limits)
    return planned


def _checked_member(info: zipfile.ZipInfo) -> str:
    name = safe_member_name(info.filename)
    shown = f"archive member {_shown(info.filename)}"
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"{shown} is a symbolic link: only regular files and folders are accepted")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"{shown} is encrypted: only unencrypted archives are accepted")
    if info.compress_type not in _ACCEPTED_METHODS:
        raise UnsafeArchiveError(f"{shown} uses compression method {info.compress_type}: only "
                                 f"{' or '.join(_ACCEPTED_METHODS.values())} members are accepted")
    return name


def _is_skipped(name: str) -> bool:
    """macOS resource forks and dot-files (``.DS_Store``, ``._x.jpg``) are not content."""
    return name.split("/", 1)[0] == "__MACOSX" or name.rsplit("/", 1)[-1].startswith(".")


def _check_unique(planned: list[tuple[str, zipfile.ZipInfo]]) -> None:
    """No two members may share a (normalised) name, and no file may also be a folder of another."""
    names: set[str] = set()
    for name, info in planned:
        if name in names:
            raise UnsafeArchiveError(f"archive member {_shown(info.filename)} duplicates {_shown(name)}: "
                                     "each file name may appear once")
        names.add(name)
    for name in names:
        parts = name.split("/")
        clash = next((prefix for prefix in ("/".join(parts[:i]) for i in range(1, len(parts))) if prefix in names),
                     None)
        if clash is not None:
            raise UnsafeArchiveError(f"archive member {_shown(name)} lies under {_shown(clash)}, which is also a "
                                     "file: each path must be either a file or a folder")


def _check_declared_sizes(planned: list[tuple[str, zipfile.ZipInfo]], limits: ArchiveLimits) -> None:
    total = 0
    for name, info in planned:
        shown = f"archive member {_shown(name)}"
        if info.file_size > limits.max_member_bytes:
            raise UnsafeArchiveError(f"{shown} is {info.file_size:,} bytes uncompressed: members of at most "
                                     f"{limits.max_member_bytes:,} bytes are accepted")
        if info.file_size > _MIB and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise UnsafeArchiveError(f"{shown} has a compression ratio of {ratio:,.0f} (a zip bomb?): at most "
                                     f"{limits.max_ratio:g} is accepted for members over 1 MiB")
        total += info.file_size
    if total > limits.max_total_bytes:
        raise UnsafeArchiveError(f"the archive holds {total:,} bytes uncompressed: at most "
                                 f"{limits.max_total_bytes:,} bytes in total are accepted")


def _extract(archive: zipfile.ZipFile, planned: list[tuple[str, zipfile.ZipInfo]],
             limits: ArchiveLimits) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    budget = limits.max_total_bytes
    for name, info in planned:
        data = _read_member(archive, name, info, min(limits.max_member_bytes, budget), limits)
        budget -= len(data)
        files[name] = data
    return files


def _read_member(archive: zipfile.ZipFile, name: str, info: zipfile.ZipInfo, cap: int,
                 limits: ArchiveLimits) -> bytes:
    """Read in chunks, never holding more than ``cap`` bytes, whatever the header says."""
    chunks, size = [], 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise UnsafeArchiveError(
                        f"archive member {_shown(name)} decompresses to more than {cap:,} bytes although its header "
                        f"declares {info.file_size:,}: members of at most {limits.max_member_bytes:,} bytes and "
                        f"{limits.max_total_bytes:,} bytes in total are accepted")
                chunks.append(chunk)
    except UnsafeArchiveError:
        raise
    except _ZIP_READ_ERRORS as exc:
        raise UnsafeArchiveError(f"archive member {_shown(name)} is corrupt or unreadable ({exc}): intact "
                                 "stored or deflate members are accepted") from exc
    if size != info.file_size:
        raise UnsafeArchiveError(f"archive member {_shown(name)} holds {size:,} bytes but its header declares "
                                 f"{info.file_size:,}: intact members are accepted")
    return b"".join(chunks)
