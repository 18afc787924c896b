"""Where a study's items come from: an uploaded pairs CSV or per-method folders, or runs the studio made.

Uploads arrive as ``{relative path: bytes}`` (``annotations.files.read_zip`` of a zip, or the files
themselves). Two layouts are accepted:

- a pairs CSV (``pairs.csv`` or any one ``.csv``) with columns ``item,a,b`` and optional ``reference`` and
  ``catch`` (1/yes/true marks an attention check whose ``b`` is the broken side); paths are relative to the CSV;
- one folder per method (``<A folder>/<item>.png``, ``<B folder>/<item>.png``, optionally
  ``reference/<item>.png``), matched by item name (the file name without its suffix).

Every problem is collected and reported at once (``StudyRejected``); nothing is created from a rejected upload.
Runs are paired by ``group_key`` (the same input): the newest run of method A against the newest of method B.
``run_pairings`` lists what the studio's runs offer: per kind, each two methods with runs on the same inputs:

- hoi: "interactvlm-hoi (<human contacts> / <object contacts>)" against "baseline: silhouette only (no
  contacts)" (the HOI tab saves both for one photo); stimuli: the first image (``overlay.png``, the fit drawn
  over the photo), or ``fit.glb``;
- contact: "interactvlm (<checkpoint>)" against "baseline: category prior": with a checkpoint installed the
  contact tab saves both for one image and label set (group: their hash); stimuli: ``views.png`` (the four
  body views with the masks), or ``contact.glb``; affordance: any two methods saved with ``save_run``;
- genzi: the GenZI tab saves method "genzi" (group: the scene, the point and the prompt). Method B is any other
  run of kind "genzi" on the same scene, point and prompt: a GenZI variant (other settings, e.g. fewer views or
  one inpainting stage) or a baseline's placements, saved with ``save_run(kind="genzi", method="<its name>",
  group_key=studio.genzi.group_key(scene, point, prompt), files={"scene_and_bodies.glb": ...})``. The stimulus is
  the run's ``scene_and_bodies.glb`` (the scene with the generated bodies), shown as an orbitable 3D model.

A run's input photo (``annotations.runs.input_photo``: the contact and HOI tabs keep it) is the item's reference
image and never a stimulus; GenZI runs have none (a scene, no photo), so their items have no reference.
"""
from __future__ import annotations

import csv
import io
from itertools import combinations
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Mapping

from annotations.errors import ProblemsRejected
from annotations.files import ImageLimits, safe_member_name
from annotations.runs import input_photo, list_runs
from annotations.store import Store
from annotations.studies import ItemSpec
from annotations.studies_media import (GLB_SUFFIXES, IMAGE_SUFFIXES, STIMULUS_SUFFIXES, VIDEO_SUFFIXES,
                                       broken_stimulus, check_stimulus)
from engine.errors import InputError

REFERENCE_FOLDER = "reference"
TRUE_WORDS = ("1", "yes", "true", "y")
FALSE_WORDS = ("", "0", "no", "false", "n")
MAX_RUNS = 1000


class StudyRejected(ProblemsRejected):
    """An upload or a run selection has problems; ``problems`` lists every one and nothing was created."""

    headline = "study items rejected, nothing created"


def items_from_upload(files: Mapping[str, bytes], folder_a: str | None = None, folder_b: str | None = None,
                      limits: ImageLimits = ImageLimits()) -> list[ItemSpec]:
    """Items from a pairs CSV when the upload holds one, else from the folders ``folder_a`` and ``folder_b``."""
    files = _strip_common_folder({safe_member_name(name): data for name, data in files.items()})
    tables = sorted(name for name in files if name.lower().endswith(".csv"))
    if len(tables) > 1:
        raise StudyRejected([f"the upload holds {len(tables)} CSV files ({', '.join(tables[:5])}); give one pairs CSV"])
    if tables:
        return items_from_pairs_csv(files[tables[0]], files, base=str(PurePosixPath(tables[0]).parent), limits=limits)
    return items_from_folders(files, folder_a, folder_b, limits=limits)


def _strip_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """A zip made of one folder (``study/pairs.csv``, ``study/a/1.png``) reads as if that folder were the root."""
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        top = tops.pop()
        if top not in (REFERENCE_FOLDER,) and any(name.count("/") >= 1 for name in files):
            stripped = {name.split("/", 1)[1]: data for name, data in files.items()}
            if any(name.lower().endswith(".csv") for name in stripped) or \
                    len({name.split("/", 1)[0] for name in stripped if "/" in name}) >= 2:
                return stripped
    return files


def items_from_pairs_csv(table: bytes, files: Mapping[str, bytes], base: str = "",
                         limits: ImageLimits = ImageLimits()) -> list[ItemSpec]:
    """Items from a CSV with columns item, a, b[, reference][, catch]; paths relative to ``base``."""
    try:
        reader = csv.DictReader(io.StringIO(table.decode("utf-8-sig")))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise StudyRejected([f"the pairs CSV is not readable UTF-8 CSV ({error})"]) from None
    columns = [name.strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in ("item", "a", "b") if name not in columns]
    if missing:
        raise StudyRejected([f"the pairs CSV lacks the column(s) {', '.join(missing)}; expected item,a,b"
                             "[,reference][,catch]"])
    problems, items, seen = [], [], set()
    for number, raw in enumerate(rows, start=2):
        row = {str(key).strip().lower(): (value or "").strip() for key, value in raw.items() if key is not None}
        if None in raw:
            problems.append(f"line {number}: more values than columns")
            continue
        item = _csv_item(row, number, files, base, seen, problems, limits)
        if item is not None:
            items.append(item)
    if not rows:
        problems.append("the pairs CSV has no rows")
    if problems:
        raise StudyRejected(problems)
    return items


def _csv_item(row: dict, number: int, files, base: str, seen: set, problems: list, limits) -> ItemSpec | None:
    name = row.get("item", "")
    before = len(problems)
    if not name:
        problems.append(f"line {number}: the item name is empty")
    elif name in seen:
        problems.append(f"line {number}: duplicate item {name!r} (each item appears once)")
    seen.add(name)
    for side in ("a", "b"):
        if not row.get(side):
            problems.append(f"line {number}: item {name!r} has no {side.upper()} file (every pair needs both sides)")
    catch = row.get("catch", "").lower()
    if catch not in TRUE_WORDS + FALSE_WORDS:
        problems.append(f"line {number}: catch must be yes/no (or 1/0), got {catch!r}")
    stimuli = {role: _csv_file(row[role], number, files, base, problems, limits)
               for role in ("a", "b", "reference") if row.get(role)}
    if len(problems) > before or None in stimuli.values():
        return None
    return ItemSpec(name=name, a=stimuli["a"], b=stimuli["b"], reference=stimuli.get("reference"),
                    is_catch=catch in TRUE_WORDS,
                    source={"upload": {role: row[role] for role in ("a", "b", "reference") if row.get(role)}})


def _csv_file(path: str, number: int, files, base: str, problems: list, limits):
    try:
        clean = safe_member_name(str(PurePosixPath(base) / path) if base not in ("", ".") else path)
    except InputError as error:
        problems.append(f"line {number}: {error}")
        return None
    if clean not in files:
        problems.append(f"line {number}: file {path!r} is missing from the upload")
        return None
    try:
        return check_stimulus(clean, files[clean], limits)
    except InputError as error:
        problems.append(f"line {number}: {error}")
        return None


def items_from_folders(files: Mapping[str, bytes], folder_a: str | None, folder_b: str | None,
                       limits: ImageLimits = ImageLimits()) -> list[ItemSpec]:
    """Items matched by name across the folders of method A and method B (and ``reference/``)."""
    by_folder: dict[str, dict[str, str]] = defaultdict(dict)
    problems = []
    for path in sorted(files):
        parts = PurePosixPath(path).parts
        if len(parts) != 2 or PurePosixPath(path).suffix.lower() not in STIMULUS_SUFFIXES:
            problems.append(f"{path!r}: expected <method folder>/<item><suffix> with {', '.join(STIMULUS_SUFFIXES)}")
            continue
        stem = PurePosixPath(parts[1]).stem
        if stem in by_folder[parts[0]]:
            problems.append(f"{path!r}: duplicate item {stem!r} in folder {parts[0]!r}")
        by_folder[parts[0]][stem] = path
    methods = sorted(name for name in by_folder if name != REFERENCE_FOLDER)
    if not folder_a or not folder_b:
        raise StudyRejected(problems + [f"name the folders of method A and method B; the upload has {methods}"])
    for folder in (folder_a, folder_b):
        if folder not in by_folder:
            problems.append(f"no folder {folder!r} in the upload (folders found: {methods})")
    if problems:
        raise StudyRejected(problems)
    return _matched_items(files, by_folder, folder_a, folder_b, limits)


def _matched_items(files, by_folder, folder_a: str, folder_b: str, limits) -> list[ItemSpec]:
    a, b, reference = by_folder[folder_a], by_folder[folder_b], by_folder.get(REFERENCE_FOLDER, {})
    problems = [f"item {name!r} is in {folder_a!r} but not in {folder_b!r}" for name in sorted(set(a) - set(b))]
    problems += [f"item {name!r} is in {folder_b!r} but not in {folder_a!r}" for name in sorted(set(b) - set(a))]
    problems += [f"reference {name!r} matches no item" for name in sorted(set(reference) - set(a))]
    items = []
    for name in sorted(set(a) & set(b)):
        try:
            stimuli = [check_stimulus(path, files[path], limits) if path else None
                       for path in (a[name], b[name], reference.get(name))]
        except InputError as error:
            problems.append(str(error))
            continue
        items.append(ItemSpec(name=name, a=stimuli[0], b=stimuli[1], reference=stimuli[2],
                              source={"upload": {"a": a[name], "b": b[name], "reference": reference.get(name)}}))
    if problems:
        raise StudyRejected(problems)
    return items


@dataclass(frozen=True)
class RunPairing:
    """Two methods of one run kind that share inputs: ``inputs`` is how many items a study of them would have."""

    kind: str
    method_a: str
    method_b: str
    inputs: int

    @property
    def label(self) -> str:
        return f"{self.kind}: {self.method_a}  vs  {self.method_b}  ({self.inputs} input{'s' * (self.inputs != 1)})"


def run_pairings(store: Store, kind: str | None = None) -> list[RunPairing]:
    """Every pair of methods with runs of the same kind on the same inputs (``group_key``), most inputs first.
    Method A is the studio's own method, B the baseline or variant: names starting with "baseline" go to B,
    and a method named after its kind (GenZI's "genzi") to A."""
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run in list_runs(store, kind=kind, limit=MAX_RUNS):
        if run.group_key is not None:
            groups[(run.kind, run.method)].add(run.group_key)
    pairings = []
    for (kind_a, first), (kind_b, second) in combinations(sorted(groups), 2):
        shared = len(groups[(kind_a, first)] & groups[(kind_b, second)]) if kind_a == kind_b else 0
        if shared:
            a, b = sorted((first, second), key=lambda method: (method.lower().startswith("baseline"),
                                                                method != kind_a, method))
            pairings.append(RunPairing(kind_a, a, b, shared))
    return sorted(pairings, key=lambda pairing: (-pairing.inputs, pairing.kind, pairing.method_a, pairing.method_b))


def items_from_runs(store: Store, kind: str, method_a: str, method_b: str, file_name: str | None = None,
                    reference_name: str | None = None) -> list[ItemSpec]:
    """One item per input (``group_key``) that has a run of both methods: their newest runs, side by side.

    ``file_name`` picks the file shown (default: the first image, else video, else GLB of each run, by name,
    never the input photo); ``reference_name`` names a file of method A's run shown as the reference image
    (default: the input photo that method A's run, or else B's, kept; none when neither kept one).
    """
    runs = list_runs(store, kind=kind, limit=MAX_RUNS)
    newest: dict[tuple[str, str], object] = {}
    for run in runs:  # newest first
        if run.group_key is not None and run.method in (method_a, method_b):
            newest.setdefault((run.group_key, run.method), run)
    groups = sorted({group for group, _ in newest})
    pairs = [(group, newest[(group, method_a)], newest[(group, method_b)]) for group in groups
             if (group, method_a) in newest and (group, method_b) in newest]
    if not pairs:
        methods = sorted({run.method for run in runs})
        raise StudyRejected([f"no input has {kind} runs of both {method_a!r} and {method_b!r} (methods with {kind} "
                             f"runs: {methods})"])
    problems, items = [], []
    for group, run_a, run_b in pairs:
        try:
            stimuli = [_run_stimulus(run, file_name) for run in (run_a, run_b)]
            reference = _run_file(run_a, reference_name) if reference_name else _input_photo(run_a, run_b)
        except InputError as error:
            problems.append(f"input {group[:16]}: {error}")
            continue
        items.append(ItemSpec(name=f"{kind}-{group[:16]}", a=stimuli[0], b=stimuli[1], reference=reference,
                              source={"runs": {"a": run_a.id, "b": run_b.id}, "group_key": group}))
    if problems:
        raise StudyRejected(problems)
    return items


def _input_photo(*runs):
    """The input photo of the first of ``runs`` that kept one (the runs of an item share their input)."""
    for run in runs:
        name = input_photo(run)
        if name is not None:
            return _run_file(run, name)
    return None


def _run_stimulus(run, file_name: str | None):
    if file_name:
        return _run_file(run, file_name)
    shown = sorted(name for name in run.files if name != input_photo(run))
    for suffixes in (IMAGE_SUFFIXES, VIDEO_SUFFIXES, GLB_SUFFIXES):
        for name in shown:
            if PurePosixPath(name).suffix.lower() in suffixes:
                return _run_file(run, name)
    raise InputError(f"run {run.id} ({run.method}) has no image, video or GLB file besides its input photo")


def _run_file(run, name: str):
    if name not in run.files:
        raise InputError(f"run {run.id} ({run.method}) has no file {name!r} (it has {sorted(run.files)})")
    path = run.files[name]
    if not path.is_file():
        raise InputError(f"run {run.id}: file {name!r} is missing from the data folder")
    return check_stimulus(name, path.read_bytes())


def with_catch_items(items: list[ItemSpec], count: int, seed: int) -> list[ItemSpec]:
    """``items`` plus ``count`` attention checks: image or GLB items against a broken copy of themselves."""
    breakable = [item for item in items if not item.is_catch and item.a.media in ("image", "glb")]
    if count > len(breakable):
        raise InputError(f"{count} attention checks need as many image or GLB items to break; the study has "
                         f"{len(breakable)} (make catch items for videos by hand: the pairs CSV's catch column)")
    catches = [ItemSpec(name=f"check-{index + 1}", a=item.a, b=broken_stimulus(item.a, seed + index), is_catch=True,
                        reference=item.reference, source={"attention_check_from": item.name})
               for index, item in enumerate(breakable[:count])]
    taken = {item.name for item in items}
    clash = [item.name for item in catches if item.name in taken]
    if clash:
        raise InputError(f"item names {clash} are reserved for generated attention checks; rename those items")
    return list(items) + catches
