"""Training data readers (REFERENCE.md section 3): DAMON/export npz, PIAD points, manifests, images, splits."""
from __future__ import annotations

import io
import json
import pathlib
import pickle
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.body.topology import num_vertices
from engine.contact import data
from engine.contact.data import (AffordanceSample, HumanContactSample, load_image_rgb, read_affordance_manifest,
                                 read_damon_npz, read_piad_points, split)
from engine.contact.vocabulary import AFFORDANCES, PIAD_AFFORDANCES
from engine.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
OPENBODY = "openbody-v1"


def write_png(path: Path, seed: int = 0, size=(12, 8)) -> Path:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def damon_npz(folder: Path, count: int = 3, **overrides) -> tuple[Path, np.ndarray]:
    """A DAMON-layout hot_dca npz (float 0/1 labels, 6890 columns) and its images."""
    rng = np.random.default_rng(7)
    labels = (rng.random((count, 6890)) > 0.9).astype(np.float64)
    names = [f"images/img{i}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        write_png(folder / name, i)
    arrays = {"imgname": np.array(names), "contact_label": labels,
              "contact_label_smplx": (rng.random((count, 10475)) > 0.9).astype(np.float64), **overrides}
    path = folder / "hot_dca_test.npz"
    np.savez(path, **arrays)
    return path, labels


OBJECTWISE = [{"chair": [0, 5, 10614 - 1], "supporting": list(range(200, 260))}, {"cup": []}, {}]


def export_npz(folder: Path, objectwise=OBJECTWISE, topology: str = OPENBODY) -> Path:
    """Our store's export layout, written by the store's own deterministic writer."""
    from annotations.export import deterministic_npz

    vertices = num_vertices(topology)
    union = np.zeros((len(objectwise), vertices), np.uint8)
    for row, item in enumerate(objectwise):
        for ids in item.values():
            union[row, [i for i in ids if isinstance(i, int) and 0 <= i < vertices]] = 1  # bad ids: for the reader
    names = [f"images/{i:04d}.png" for i in range(len(objectwise))]
    for i, name in enumerate(names):
        write_png(folder / name, 10 + i)
    arrays = {"imgname": np.array(names), "contact_label": union, "topology": np.array(topology),
              OBJECTWISE_KEY: np.array([json.dumps(item, sort_keys=True).encode() for item in objectwise], dtype=bytes),
              "contact_label_objectwise": np.array(objectwise + [None], dtype=object)[:-1]}  # pickled, as DAMON
    path = folder / f"contact_{topology}.npz"
    path.write_bytes(deterministic_npz(arrays))
    return path


OBJECTWISE_KEY = "contact_label_objectwise_json"


# ---- DAMON and export npz ---------------------------------------------------------------------------
def test_damon_npz_binary_samples(tmp_path):
    path, labels = damon_npz(tmp_path)
    samples = read_damon_npz(path)
    assert len(samples) == 3 and all(isinstance(s, HumanContactSample) for s in samples)
    for i, sample in enumerate(samples):
        assert sample.topology == "smplh-6890" and sample.object_label is None
        assert sample.image_name == f"images/img{i}.jpg"
        assert sample.image_path == (tmp_path / sample.image_name).resolve()
        assert sample.contact.dtype == np.uint8 and sample.contact.shape == (6890,)
        assert np.array_equal(sample.contact, labels[i])
        assert not sample.contact.flags.writeable
    with pytest.raises(ValueError):
        samples[0].contact[0] = 1


def test_damon_npz_smplx_labels_on_request(tmp_path):
    path, _ = damon_npz(tmp_path)
    samples = read_damon_npz(path, topology="smplx-10475")
    with np.load(path) as stored:
        expected = stored["contact_label_smplx"]
    assert samples[1].topology == "smplx-10475" and np.array_equal(samples[1].contact, expected[1])


def test_damon_npz_image_root_argument(tmp_path):
    path, _ = damon_npz(tmp_path / "images-elsewhere")
    moved = tmp_path / "labels" / path.name
    moved.parent.mkdir()
    path.rename(moved)
    with pytest.raises(InputError, match="3 image"):
        read_damon_npz(moved)
    assert len(read_damon_npz(moved, image_root=tmp_path / "images-elsewhere")) == 3


def test_export_npz_semantic_expansion_round_trips_vertex_ids(tmp_path):
    path = export_npz(tmp_path)
    binary = read_damon_npz(path)
    assert [s.topology for s in binary] == [OPENBODY] * 3 and binary[0].contact.shape == (num_vertices(OPENBODY),)
    semantic = read_damon_npz(path, semantic=True)
    assert [(s.image_name, s.object_label) for s in semantic] == [
        ("images/0000.png", "chair"), ("images/0000.png", "supporting"), ("images/0001.png", "cup")]
    for sample in semantic:
        ids = OBJECTWISE[int(sample.image_name[7:11])][sample.object_label]
        assert np.flatnonzero(sample.contact).tolist() == sorted(ids)
        assert not sample.contact.flags.writeable


def test_openbody_topology_needs_no_body_and_no_torch(tmp_path):
    path = export_npz(tmp_path)
    code = ("import sys; from engine.contact.data import read_damon_npz; "
            f"s = read_damon_npz({str(path)!r}, semantic=True); assert len(s) == 3; "
            "loaded = [m for m in ('torch', 'engine.body.openbody', 'engine.body.model') if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_semantic_needs_the_json_key(tmp_path):
    path, _ = damon_npz(tmp_path)
    with pytest.raises(InputError, match="pickled 'contact_label_objectwise' is never loaded"):
        read_damon_npz(path, semantic=True)


def test_semantic_vertex_ids_are_checked(tmp_path):
    path = export_npz(tmp_path, [{"chair": [1, 10614]}])
    with pytest.raises(InputError, match=r"row 0, label 'chair'.*0\.\.10613"):
        read_damon_npz(path, semantic=True)
    path = export_npz(tmp_path / "b", [{"chair": [1.5]}])
    with pytest.raises(InputError, match="integers"):
        read_damon_npz(path, semantic=True)


def test_topology_conflict_and_unknown_widths(tmp_path):
    path = export_npz(tmp_path)
    with pytest.raises(InputError, match="holds topology openbody-v1, not the requested smplh-6890"):
        read_damon_npz(path, topology="smplh-6890")
    np.savez(tmp_path / "odd.npz", imgname=np.array(["images/0000.png"]), contact_label=np.zeros((1, 6889)))
    with pytest.raises(InputError, match="6889 label columns; pass topology="):
        read_damon_npz(tmp_path / "odd.npz")
    with pytest.raises(InputError, match=r"shape \(1, 6890\)"):
        read_damon_npz(tmp_path / "odd.npz", topology="smpl-6890")
    with pytest.raises(InputError, match="unknown topology"):
        read_damon_npz(tmp_path / "odd.npz", topology="mano-778")


@pytest.mark.parametrize("value, shown", [(2.0, "2.0"), (np.nan, "nan"), (-1.0, "-1.0")])
def test_non_binary_labels_are_rejected(tmp_path, value, shown):
    labels = np.zeros((2, 6890))
    labels[1, 17] = value
    path, _ = damon_npz(tmp_path, count=2, contact_label=labels)
    with pytest.raises(InputError, match=f"only 0 or 1; row 1, vertex 17 is {shown}"):
        read_damon_npz(path)


def test_row_count_must_match_imgname(tmp_path):
    path, _ = damon_npz(tmp_path, count=2, contact_label=np.zeros((3, 6890)))
    with pytest.raises(InputError, match=r"must have shape \(2, 6890\)"):
        read_damon_npz(path)


class _Payload:
    """Unpickling this would touch a marker file: proof that nothing was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_pickled_arrays_are_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    labels = np.empty(1, dtype=object)
    labels[0] = _Payload(marker)
    write_png(tmp_path / "a.png")
    np.savez(tmp_path / "evil.npz", imgname=np.array(["a.png"]), contact_label=labels)
    with pytest.raises(InputError, match="'contact_label' holds pickled Python objects"):
        read_damon_npz(tmp_path / "evil.npz", topology="smplh-6890")
    (tmp_path / "raw.npz").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(InputError, match="could not read .* as an npz archive"):
        read_damon_npz(tmp_path / "raw.npz")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside.png", "images/../../outside.png", "/etc/hostname", "..\\outside.png",
                                  "C:/outside.png", ""])
def test_image_names_must_stay_inside_the_root(tmp_path, name):
    root = tmp_path / "root"
    write_png(tmp_path / "outside.png")
    path, _ = damon_npz(root, count=1, imgname=np.array([name]))
    with pytest.raises(InputError, match="leaves the folder|is not accepted"):
        read_damon_npz(path)


def test_symlink_out_of_the_root_is_rejected(tmp_path):
    root = tmp_path / "root"
    write_png(tmp_path / "outside.png")
    path, _ = damon_npz(root, count=1, imgname=np.array(["link.png"]))
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(InputError, match="leaves the folder"):
        read_damon_npz(path)


def test_missing_images_are_named(tmp_path):
    names = np.array([f"images/img{i}.jpg" for i in range(9)])
    path, _ = damon_npz(tmp_path, count=2, imgname=names, contact_label=np.zeros((9, 6890)))
    with pytest.raises(InputError, match=r"7 image\(s\) not found .*'images/img2.jpg'.*'images/img6.jpg' and 2 more"):
        read_damon_npz(path)


def test_not_an_npz(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match="as an npz archive"):
        read_damon_npz(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(InputError, match="single array"):
        read_damon_npz(tmp_path / "single.npy")
    with pytest.raises(InputError, match="not found"):
        read_damon_npz(tmp_path / "absent.npz")


# ---- PIAD point files --------------------------------------------------------------------------------
def piad_lines(points: np.ndarray, values: np.ndarray, object_class: str = "Mug") -> list[str]:
    return [f"{i} {object_class} " + " ".join(f"{x:.6f}" for x in point) + " " + " ".join(f"{v:.4f}" for v in row)
            for i, (point, row) in enumerate(zip(points, values))]


def write_piad(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def known_table(columns: int = 17, count: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((count, 3)) - 0.5, rng.random((count, columns))


def test_piad_round_trip_is_exact(tmp_path):
    points, values = known_table()
    table = read_piad_points(write_piad(tmp_path / "mug.txt", piad_lines(points, values)))
    expected_points = np.array([[float(f"{x:.6f}") for x in row] for row in points], dtype=np.float32)
    expected_values = np.array([[float(f"{v:.4f}") for v in row] for row in values], dtype=np.float32)
    assert table.points.dtype == np.float32 and table.values.dtype == np.float32
    assert np.array_equal(table.points, expected_points) and np.array_equal(table.values, expected_values)
    assert table.object_class == "Mug" and table.affordances == PIAD_AFFORDANCES
    assert np.array_equal(table.column("sit"), expected_values[:, 5])
    with pytest.raises(InputError, match="'carry' is not a column of this 17-column file"):
        table.column("carry")


def test_lemon_21_columns(tmp_path):
    points, values = known_table(columns=21, count=10)
    table = read_piad_points(write_piad(tmp_path / "bike.txt", piad_lines(points, values, "Bicycle")))
    assert table.values.shape == (10, 21) and table.affordances == AFFORDANCES
    assert np.allclose(table.column("carry"), values[:, 20], atol=1e-4)


@pytest.mark.parametrize("line_number, edit, message", [
    (3, lambda t: t[:-1], r"line 3: 21 columns; expected 'id class x y z' \+ 17"),
    (5, lambda t: t[:7] + ["nan"] + t[8:], "line 5: coordinates and values must be finite"),
    (7, lambda t: t[:9] + ["1.5"] + t[10:], r"line 7: affordance value 1.5 is outside \[0, 1\]"),
    (2, lambda t: t[:3] + ["abc"] + t[4:], "line 2: 'abc' is not a number"),
    (4, lambda t: t[:1] + ["Cup"] + t[2:], "line 4: class 'Cup' differs from 'Mug'"),
    (6, lambda t: t[:4] + ["1" * 100] + t[5:], "line 6: .* is not a number"),
])
def test_bad_piad_lines_name_the_line(tmp_path, line_number, edit, message):
    lines = piad_lines(*known_table(count=8))
    lines[line_number - 1] = " ".join(edit(lines[line_number - 1].split()))
    with pytest.raises(InputError, match=message):
        read_piad_points(write_piad(tmp_path / "bad.txt", lines))


def test_piad_limits(tmp_path, monkeypatch):
    path = write_piad(tmp_path / "p.txt", piad_lines(*known_table(count=20)))
    monkeypatch.setattr(data, "MAX_PIAD_LINES", 10)
    with pytest.raises(InputError, match="20 lines; point files may have at most 10"):
        read_piad_points(path)
    monkeypatch.setattr(data, "MAX_PIAD_BYTES", 100)
    with pytest.raises(InputError, match="at most 100"):
        read_piad_points(path)
    (tmp_path / "empty.txt").write_text("\n\n")
    monkeypatch.undo()
    with pytest.raises(InputError, match="no points"):
        read_piad_points(tmp_path / "empty.txt")


# ---- affordance manifests ----------------------------------------------------------------------------
def plain_manifest(folder: Path, lines: list[dict]) -> Path:
    points, values = known_table(count=32)
    write_piad(folder / "points/mug.txt", piad_lines(points, values))
    write_png(folder / "images/mug.png")
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_plain_manifest(tmp_path):
    path = plain_manifest(tmp_path, [
        {"image": "images/mug.png", "points": "points/mug.txt", "affordance": "grasp"},
        {"image": "images/mug.png", "points": "points/mug.txt", "affordance": "contain", "object_class": "mug"}])
    samples = read_affordance_manifest(path)
    table = read_piad_points(tmp_path / "points/mug.txt")
    assert all(isinstance(s, AffordanceSample) for s in samples)
    assert [(s.affordance, s.object_class) for s in samples] == [("grasp", "Mug"), ("contain", "mug")]
    assert np.array_equal(samples[1].values, table.values[:, 1]) and samples[1].values.shape == (32,)
    assert np.array_equal(samples[0].points, table.points) and samples[0].points.dtype == np.float32
    assert samples[0].image_path == (tmp_path / "images/mug.png").resolve()


def test_export_layout_manifest_lines(tmp_path):
    """Lines shaped as annotations.export.manifest_lines writes them; human lines are skipped."""
    points, values = known_table(columns=21, count=16)
    write_piad(tmp_path / "affordance/ab_wine_glass_carry.txt", piad_lines(points, values, "wine_glass"))
    write_png(tmp_path / "images/ab.png")
    lines = [{"kind": "human_contact", "imgname": "images/ab.png", "labels": ["chair"], "npz": "contact_x.npz",
              "row": 0, "topology": "smplh-6890", "task_id": 1, "provenance": {}},
             {"kind": "object_affordance", "imgname": "images/ab.png", "labels": ["carry"], "task_id": 2,
              "points": "affordance/ab_wine_glass_carry.txt", "topology": None, "provenance": {}}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    (sample,) = read_affordance_manifest(tmp_path)
    assert (sample.affordance, sample.object_class, sample.image_name) == ("carry", "wine glass", "images/ab.png")
    assert np.allclose(sample.values, values[:, 20], atol=1e-4) and not sample.values.flags.writeable


@pytest.mark.parametrize("line, message", [
    ({"image": "images/mug.png", "points": "../mug.txt", "affordance": "grasp"}, "leaves the folder"),
    ({"image": "/tmp/mug.png", "points": "points/mug.txt", "affordance": "grasp"}, "is not accepted"),
    ({"image": "images/mug.png", "points": "points/mug.txt", "affordance": "fly"}, "line 1: unknown affordance 'fly'"),
    ({"image": "images/mug.png", "points": "points/mug.txt", "affordance": "ride"},
     "line 1: .*'ride' is not a column of this 17-column file"),
    ({"image": "images/nope.png", "points": "points/mug.txt", "affordance": "grasp"}, "'images/nope.png'"),
    ({"image": "images/mug.png", "affordance": "grasp"}, "line 1 needs string fields"),
    (["not", "an", "object"], "line 1 must be a JSON object"),
])
def test_bad_manifest_lines(tmp_path, line, message):
    path = plain_manifest(tmp_path, [line])
    with pytest.raises(InputError, match=message):
        read_affordance_manifest(path)


def write_store_export(tmp_path: Path, answers: list[dict], affordance: np.ndarray) -> tuple[Path, np.ndarray]:
    """A real export of a fresh store: two contact tasks and one 'sit' task, answered by one person."""
    from annotations import workflow
    from annotations.batch import import_batch
    from annotations.export import export_training_data
    from annotations.store import Store, StoreConfig

    store = Store(f"sqlite:///{tmp_path / 'x.db'}", data_dir=tmp_path / "data", config=StoreConfig(gold_rate=0.0))
    batch = tmp_path / "batch"
    points = np.random.default_rng(1).random((2048, 3)) - 0.5
    batch.mkdir()
    np.savez(batch / "mug.npz", points=points)
    for i in range(2):
        write_png(batch / f"img{i}.png", i, size=(48, 40))
    rows = [{"image": f"img{i}.png", "labels": ["chair", "supporting"], "topology": "smplh-6890", "redundancy": 1}
            for i in range(2)]
    rows.append({"image": "img0.png", "kind": "object_affordance", "labels": ["sit"], "object": "mug.npz",
                 "object_class": "mug", "redundancy": 1})
    (batch / "tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    import_batch(store, batch)
    person = store.ensure_annotator("a").id
    for answer in answers + [{"sit": affordance}]:
        task = workflow.next_task(store, person).task
        workflow.submit(store, person, task.id, answer, uuid.uuid4().hex)
    export_training_data(store, tmp_path / "out")
    return tmp_path / "out", points


def test_store_export_folder_reads_back(tmp_path):
    """End to end: a real store export is read by both readers, labels equal to the store's answers."""
    answers = [{"chair": list(range(0, 100)), "supporting": list(range(6000, 6010))}, {"chair": [5, 6]}]
    out, points = write_store_export(tmp_path, answers, np.linspace(0, 1, 2048))
    semantic = read_damon_npz(out / "contact_smplh-6890.npz", semantic=True)
    got = [(s.object_label, np.flatnonzero(s.contact).tolist()) for s in semantic]
    assert got == [("chair", list(range(100))), ("supporting", list(range(6000, 6010))), ("chair", [5, 6]),
                   ("supporting", [])]
    assert all(s.image_path.is_file() and s.topology == "smplh-6890" for s in semantic)
    (sample,) = read_affordance_manifest(out)  # the folder: its manifest.jsonl
    assert (sample.affordance, sample.object_class) == ("sit", "mug")
    assert np.allclose(sample.values, np.linspace(0, 1, 2048), atol=1e-4)
    assert np.allclose(sample.points, points, atol=1e-6) and sample.image_path.is_file()


# ---- images ------------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_exif_rotated_jpeg_is_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, "JPEG", exif=exif.tobytes())
    assert load_image_rgb(path).shape == (40, 20, 3)
    assert load_image_rgb(path.read_bytes()).shape == (40, 20, 3)
    assert load_image_rgb(Image.open(path)).shape == (40, 20, 3)


def test_rgba_composites_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 128)
    rgba[0, 1] = (10, 20, 30, 255)
    rgba[1, 0] = (10, 20, 30, 0)
    rgba[1, 1] = (0, 0, 0, 51)
    expected = np.array([[[255, 127, 127], [10, 20, 30]], [[255, 255, 255], [204, 204, 204]]], np.uint8)
    assert np.array_equal(load_image_rgb(rgba), expected)
    assert np.array_equal(load_image_rgb(encode(Image.fromarray(rgba, "RGBA"))), expected)


def test_grayscale_palette_and_16_bit_become_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for source in (gray, encode(Image.fromarray(gray, "L")), Image.fromarray(gray, "L").convert("P")):
        out = load_image_rgb(source)
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8
        assert np.array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    out = load_image_rgb(encode(Image.fromarray(deep)))
    assert np.array_equal(out[..., 0], (deep >> 8).astype(np.uint8))


def test_float_arrays():
    values = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    assert load_image_rgb(values).tolist() == [[[0, 128, 255]]]
    with pytest.raises(InputError, match="NaN"):
        load_image_rgb(np.full((2, 2, 3), np.nan))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image_rgb(np.full((2, 2, 3), 2.0))
    with pytest.raises(InputError, match=r"\(H, W\), \(H, W, 3\) or \(H, W, 4\)"):
        load_image_rgb(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(InputError, match="uint8 or float"):
        load_image_rgb(np.zeros((2, 2, 3), np.int64))


def test_undecodable_inputs():
    with pytest.raises(InputError, match="could not decode image"):
        load_image_rgb(b"definitely not an image")
    truncated = encode(Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)))
    with pytest.raises(InputError, match="could not decode image"):
        load_image_rgb(truncated[: len(truncated) // 2])
    with pytest.raises(InputError, match="could not decode image .*accepted: JPEG, PNG, WEBP, BMP"):
        load_image_rgb(encode(Image.new("RGB", (4, 4)), "GIF"))
    with pytest.raises(InputError, match="unsupported image input"):
        load_image_rgb(12)
    with pytest.raises(InputError, match="not found"):
        load_image_rgb("/nonexistent/image.png")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height whose pixel data is garbage: decoding it would fail."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")


def test_lazily_opened_truncated_pil_image_is_an_input_error(tmp_path):
    path = tmp_path / "cut.png"
    data = encode(Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)))
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as image, pytest.raises(InputError, match="could not decode image"):
        load_image_rgb(image)


def test_arrays_are_copied():
    pixels = np.zeros((2, 2, 3), np.uint8)
    out = load_image_rgb(pixels)
    out[0, 0, 0] = 9
    assert pixels[0, 0, 0] == 0


def test_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(InputError, match="7000x7000 = 49000000 pixels; at most 40000000"):
        load_image_rgb(png_header_only(7000, 7000))
    with pytest.raises(InputError, match="too many pixels"):
        load_image_rgb(png_header_only(60000, 60000))  # past PIL's own bomb limit
    with pytest.raises(InputError, match="at most 100"):
        load_image_rgb(encode(Image.new("RGB", (20, 20))), max_pixels=100)
    with pytest.raises(InputError, match="at most 100"):
        load_image_rgb(np.zeros((20, 20, 3), np.uint8), max_pixels=100)


# ---- splits ------------------------------------------------------------------------------------------
def test_split_is_deterministic_and_keeps_images_whole(tmp_path):
    objectwise = [{"chair": [i], "supporting": [i + 1]} if i % 2 else {"cup": [i]} for i in range(20)]
    samples = read_damon_npz(export_npz(tmp_path, objectwise), semantic=True)
    train, val = split(samples, 0.25, seed=3)
    assert len(train) + len(val) == len(samples)
    assert {s.image_name for s in train}.isdisjoint({s.image_name for s in val})
    assert len({s.image_name for s in val}) == 5  # round(0.25 x 20 images)
    assert split(samples, 0.25, seed=3) == (train, val)
    shuffled = list(reversed(samples))
    assert set(map(id, split(shuffled, 0.25, seed=3)[1])) == set(map(id, val))
    assert split(samples, 0.25, seed=4)[1] != val
    assert split(samples, 0.0, seed=3) == (tuple(samples), ())
    with pytest.raises(InputError, match="val_fraction"):
        split(samples, 1.5, seed=0)


def test_split_groups_affordance_samples_by_image(tmp_path):
    lines = []
    for i in range(6):
        write_png(tmp_path / f"images/{i}.png", i)
        lines += [{"image": f"images/{i}.png", "points": "points/mug.txt", "affordance": name}
                  for name in ("grasp", "contain")]
    samples = read_affordance_manifest(plain_manifest(tmp_path, lines))
    train, val = split(samples, 0.5, seed=0)
    assert len(train) == len(val) == 6
    assert {s.image_name for s in train}.isdisjoint({s.image_name for s in val})
