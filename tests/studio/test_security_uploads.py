"""Issue 15, item 1: no handler ever opens a file the server did not receive as an upload.

The attack: a client sends a server path as a file input through Gradio's queue protocol
(``{"path": "/secret.png", "meta": {"_type": "gradio.FileData"}}``). Every endpoint of every mounted
page that takes a file is fired at with forged paths (so a tab added later is covered without
editing this file), through the raw protocol (``raw_queue``). Each must refuse, store nothing,
and leave nothing derived from the secret files in any folder the server serves from.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from annotations import models
from engine.errors import InputError
from raw_queue import RawPage, forged
from studio.uploads import EXAMPLES, accept_upload, upload_roots

from conftest import ADMIN_PASSWORD, ADMIN_USER

REFUSAL = "was not uploaded to this server"
TABLES = (models.ImageRow, models.TaskRow, models.ObjectRow, models.AssignmentRow, models.BatchRow, models.RunRow)


def counts(store) -> dict[str, int]:
    with store.session() as db:
        return {table.__tablename__: db.scalar(select(func.count()).select_from(table)) for table in TABLES}


def served_files(studio) -> list[Path]:
    return [path for root in upload_roots(studio) if root.exists() for path in root.rglob("*") if path.is_file()]


@pytest.fixture(scope="module")
def secrets_outside(tmp_path_factory) -> dict[str, Path]:
    """A PNG, an OBJ, a points .txt and a batch zip outside every upload folder."""
    folder = tmp_path_factory.mktemp("server-secrets")
    seed = int.from_bytes(os.urandom(4), "little")  # bytes no earlier run left in a shared upload folder
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / "secret.png")
    (folder / "secret.txt").write_text("\n".join(f"{i}.25 {i}.5 {seed % 1000 + i}.75" for i in range(40)) + "\n")
    (folder / "secret.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\n")
    import zipfile
    with zipfile.ZipFile(folder / "secret.zip", "w") as archive:
        archive.writestr("s.png", (folder / "secret.png").read_bytes())
        archive.writestr("tasks.csv", "image,labels,topology,redundancy\ns.png,chair,openbody-v1,1\n")
    return {path.suffix: path for path in folder.iterdir()}


def is_file_input(component) -> bool:
    """Whether a component's payload carries files (its example payload has a file object)."""
    try:
        example = component.example_payload()
    except (AttributeError, NotImplementedError, TypeError):
        return False
    items = example if isinstance(example, list) else [example]
    return any(isinstance(item, dict) and "path" in item for item in items)


def file_endpoints(pages: dict) -> list[tuple[str, int, list]]:
    """(mount path, fn index, input components) of every event whose inputs include a file component."""
    found = []
    for mount_path, page in pages.items():
        for fn_id, block_fn in page.fns.items():
            if any(is_file_input(component) for component in block_fn.inputs):
                found.append((mount_path, fn_id, list(block_fn.inputs)))
    return found


def payload_for(inputs, file_value) -> list:
    data = []
    for component in inputs:
        if is_file_input(component):
            data.append([file_value] if getattr(component, "file_count", "single") != "single" else file_value)
        else:
            data.append(getattr(component, "value", None))
    return data


def page_for(url: str, mount_path: str) -> RawPage:
    page = RawPage(url, "" if mount_path == "/" else mount_path)
    if mount_path == "/admin":
        assert page.login(ADMIN_USER, ADMIN_PASSWORD).status_code in (200, 303)
    return page


def attack_values(secrets: dict[str, Path], studio) -> list:
    """Forged file objects: with and without Gradio's meta, a traversal out of the upload folder, a
    symlink inside it that points out, an example script, a URL (no server-side fetch either)."""
    upload_root = upload_roots(studio)[0]
    upload_root.mkdir(parents=True, exist_ok=True)
    link = upload_root / "studio-test-link" / "innocent.png"
    link.parent.mkdir(exist_ok=True)
    if not link.is_symlink():
        os.symlink(secrets[".png"], link)
    traversal = f"{upload_root}/../../../../../../..{secrets['.png']}"
    values = [forged(path) for path in secrets.values()]
    values += [{"path": str(secrets[".png"])}, forged(traversal), forged(link), forged(EXAMPLES / "make_examples.py"),
               forged("http://127.0.0.1:9/secret.png"), forged(upload_root)]
    return values


def test_every_file_endpoint_of_every_page_refuses_forged_paths(studio_server, secrets_outside):
    studio = studio_server.studio
    endpoints = file_endpoints(studio_server.pages)
    names = {(path, studio_server.pages[path].fns[fn].api_name) for path, fn, _ in endpoints}
    # the pages of today; a tab added later is found and attacked the same way
    assert {("/", "predict_contact"), ("/", "predict_affordance"), ("/", "paint_affordance"),
            ("/admin", "import_batch")} <= names
    before = counts(studio.store)
    secret_bytes = {path.read_bytes() for path in secrets_outside.values()}
    for mount_path, fn_id, inputs in endpoints:
        page = page_for(studio_server.url, mount_path)
        try:
            for value in attack_values(secrets_outside, studio):
                outcome = page.call(fn_id, payload_for(inputs, value))
                assert not outcome.success, (mount_path, fn_id, value)
                assert REFUSAL in (outcome.error or ""), (mount_path, fn_id, value, outcome)
                assert "/" not in outcome.error.replace(" / ", "")  # never a path in the message
        finally:
            page.close()
    assert counts(studio.store) == before
    leaked = [path for path in served_files(studio) if path.read_bytes() in secret_bytes and not path.is_symlink()]
    assert leaked == []


def test_a_genuine_upload_still_works_next_to_the_forged_one(studio_server, secrets_outside, picture):
    """The same endpoint, the same client: the forged path is refused, the real upload becomes a task."""
    studio = studio_server.studio
    page = RawPage(studio_server.url)
    before = counts(studio.store)
    refused = page.call("paint_affordance", [forged(secrets_outside[".png"]), "chair", None, "chair", "sit"])
    assert not refused.success and REFUSAL in refused.error
    assert counts(studio.store) == before
    points = page.upload(secrets_outside[".txt"], "cloud.txt")  # the same bytes, uploaded honestly
    made = page.call("paint_affordance", [page.upload(picture), "my upload", points, "chair", "sit"])
    assert made.success, made
    after = counts(studio.store)
    assert after["tasks"] == before["tasks"] + 1 and after["objects"] == before["objects"] + 1
    # and a forged object file next to a genuine image is refused as well
    again = page.call("paint_affordance", [page.upload(picture), "my upload", forged(secrets_outside[".obj"]),
                                           "chair", "sit"])
    assert not again.success and REFUSAL in again.error
    assert counts(studio.store) == after
    page.close()


def test_accept_upload_takes_every_form_a_handler_receives(studio_server, tmp_path):
    studio = studio_server.studio
    root = upload_roots(studio)[0]
    inside = root / "studio-test-forms" / "a.png"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_bytes(b"x")

    class Wrapper:  # gradio's old NamedString / tempfile wrappers carry the path in .name
        name = str(inside)

    class FileDataLike:
        path = str(inside)

    for value in (str(inside), inside, {"path": str(inside)}, {"name": str(inside)}, Wrapper(), FileDataLike()):
        assert accept_upload(studio, value, what="the image") == inside.resolve()
    assert accept_upload(studio, str(EXAMPLES / "person_chair.png"), what="the image").name == "person_chair.png"
    outside = tmp_path / "b.png"
    outside.write_bytes(b"x")
    for value in (str(outside), {"path": str(outside)}, str(EXAMPLES / "make_examples.py"), str(EXAMPLES / "README.md"),
                  str(root), str(root / "missing.png"), 42, "a\x00b"):
        with pytest.raises(InputError, match="the image was not uploaded to this server"):
            accept_upload(studio, value, what="the image")
    for empty in (None, ""):
        with pytest.raises(InputError, match="upload the image first"):
            accept_upload(studio, empty, what="the image")


def test_example_scripts_and_readmes_are_not_served(studio_server):
    import httpx

    assert (EXAMPLES / "make_examples.py").is_file() and (EXAMPLES / "README.md").is_file()
    with httpx.Client(timeout=30) as client:
        for prefix in ("", "/annotate"):
            for name in ("make_examples.py", "README.md", "person_chair.png"):
                answer = client.get(f"{studio_server.url}{prefix}/gradio_api/file={EXAMPLES / name}")
                assert answer.status_code == 403, (prefix, name)
    # the example images reach the page through Gradio's cache, the scripts never
    page = RawPage(studio_server.url)
    served = [item for row in page.config()["components"] if row.get("type") == "dataset"
              for item in json.dumps(row.get("props", {})).split('"') if "person_" in item or "make_examples" in item]
    page.close()
    assert served and not any("make_examples" in item or "README" in item for item in served)


def test_an_unexpected_failure_shows_no_path_exception_name_or_traceback(studio_server, picture, monkeypatch):
    """A bug (here: a RuntimeError naming a server path) reaches the visitor as a bare failure."""
    from studio.context import Studio

    def broken(self, topology):
        raise RuntimeError(f"boom in {studio_server.models_dir}/secret/file.npz")

    monkeypatch.setattr(Studio, "body", broken)
    page = RawPage(studio_server.url)
    outcome = page.call("predict_contact", [page.upload(picture), ["chair"]])
    page.close()
    assert not outcome.success
    shown = json.dumps(outcome.raw)
    assert "secret/file.npz" not in shown and "RuntimeError" not in shown and "Traceback" not in shown
