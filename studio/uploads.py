"""Files that reach a handler: only what this server received as an upload, or one of its own examples.

Gradio apps mounted with ``gr.mount_gradio_app`` skip Gradio's own allowed-path check, so a client can
send any server path as a file input (``{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}``
through ``/gradio_api/queue/join``) and Gradio would copy it into its cache and hand it to the handler.
Two guards close this, and every page and tab gets both:

1. ``guard_file_inputs(page, studio)``: installed by ``studio.server.mount`` on every mounted Blocks.
   Before Gradio touches the request's inputs (before it copies anything into its cache), every
   file object in the raw payload (any dict with a string ``path``) must name a file this server
   accepts, else the event fails with "... was not uploaded to this server" and nothing is copied.
   A new tab needs nothing to get it; ``tests/studio/test_security_uploads.py`` fires forged paths at
   every endpoint of every mounted page that takes a file, so a page mounted another way fails it.
2. ``accept_upload(studio, value, *, what)``: every handler that opens a file calls it first.

    accept_upload(studio, value, *, what: str) -> Path

    value: what the handler received for a file input: a str or ``Path``, a dict with ``path`` (or
           ``name``), a ``gradio.FileData``, or an object with ``.path`` / ``.name`` (tempfile wrappers).
    what:  how the message names the input, e.g. "the image" or "the object file".
    Returns the real path (symlinks resolved) of a regular file inside one of the server's upload
    folders (Gradio's upload folder and every mounted page's cache) or inside ``studio/examples``
    (never its scripts or READMEs). Raises ``InputError`` otherwise: "<what> was not uploaded to this
    server" (no path in the message), or "upload <what> first" when ``value`` is empty.

Keep that signature stable: the HOI, GenZI and study tabs call it.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from engine.errors import InputError

EXAMPLES = Path(__file__).resolve().parent / "examples"
NOT_SERVED_SUFFIXES = (".py", ".md", ".sh", ".cfg", ".toml", ".ini", ".pyc")  # example scripts and docs


def upload_roots(studio) -> tuple[Path, ...]:
    """The folders whose files count as uploads to this server (resolved): Gradio's upload folder and
    every folder the studio registered (each mounted page's cache, see ``Studio.upload_dirs``)."""
    roots = [Path(get_upload_folder()), *getattr(studio, "upload_dirs", ())]
    return tuple(dict.fromkeys(_resolved(root) for root in roots))


def is_example(path: Path) -> bool:
    """An example file the studio ships (a resolved path): inside ``studio/examples``, not a script or doc."""
    return _inside(path, EXAMPLES.resolve()) and path.suffix.lower() not in NOT_SERVED_SUFFIXES \
        and not any(part.startswith(".") for part in path.relative_to(EXAMPLES.resolve()).parts)


def accept_upload(studio, value, *, what: str) -> Path:
    """The real path of an uploaded (or example) file; ``InputError`` for anything else (see the module doc)."""
    raw = _raw_path(value)
    if raw is None or raw == "":
        raise InputError(f"upload {what} first")
    refused = InputError(f"{what} was not uploaded to this server; upload it through the page")
    if not isinstance(raw, (str, Path)) or "\x00" in str(raw) or len(str(raw)) > 4096:
        raise refused
    try:
        path = Path(raw).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, an unreadable parent
        raise refused from None
    if not path.is_file():
        raise refused
    if any(_inside(path, root) for root in upload_roots(studio)) or is_example(path):
        return path
    raise refused


def check_payload(studio, payload, refused_roots=()) -> None:
    """Every file object in a raw Gradio payload (lists and dicts, any depth) must pass ``accept_upload``
    and lie outside ``refused_roots`` (another page's private folder)."""
    for value in _file_objects(payload):
        path = accept_upload(studio, value, what="a file")
        if any(_inside(path, _resolved(root)) for root in refused_roots):
            raise InputError("a file was not uploaded to this server; upload it through the page")


def guard_file_inputs(page: gr.Blocks, studio, refused_roots=()) -> None:
    """Check the raw inputs of every event of ``page`` before Gradio copies any file (see the module doc).

    ``refused_roots``: folders this page must never take files from (the admin's private folder, for the
    public pages)."""
    if getattr(page, "_studio_file_guard", False):
        return
    original = page.preprocess_data

    async def preprocess_data(block_fn, inputs, state=None, explicit_call=False):
        try:
            check_payload(studio, inputs, refused_roots)
        except InputError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return await original(block_fn, inputs, state, explicit_call)

    page.preprocess_data = preprocess_data
    page._studio_file_guard = True


def _file_objects(payload, depth: int = 0):
    if depth > 32:  # Gradio payloads are shallow; anything deeper is refused as a whole
        raise InputError("the request is nested too deeply")
    if isinstance(payload, dict):
        if isinstance(payload.get("path"), str) or ("path" in payload and payload.get("meta")):
            yield payload
            return
        for item in payload.values():
            yield from _file_objects(item, depth + 1)
    elif isinstance(payload, (list, tuple)):
        for item in payload:
            yield from _file_objects(item, depth + 1)


def _raw_path(value):
    if value is None or isinstance(value, (str, Path)):
        return value
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    for attribute in ("path", "name"):
        found = getattr(value, attribute, None)
        if isinstance(found, (str, Path)):
            return found
    return value  # refused by the type check


def _resolved(path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path).absolute()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
