"""Runs on every backend: files stored atomically under an unguessable id, listed by kind and group,
bad input refused with nothing left behind."""
from __future__ import annotations

import math

import pytest

from annotations.runs import list_runs, load_run, prune_runs, runs_dir, save_run
from engine.errors import InputError


def test_a_run_keeps_its_inputs_files_and_summary(store, tmp_path):
    source = tmp_path / "fit.npz"
    source.write_bytes(b"npz-bytes")
    run = save_run(store, kind="hoi", method="interactvlm-hoi", inputs={"contacts": "painted", "body": "example"},
                   files={"fit.glb": b"glTF", "fit.npz": source}, summary={"iou": 0.93}, group_key="img-1",
                   owner="session-a")
    again = load_run(store, run.id)
    assert again == run and len(run.id) == 32
    assert dict(again.inputs) == {"contacts": "painted", "body": "example"}
    assert again.files["fit.glb"].read_bytes() == b"glTF" and again.files["fit.npz"].read_bytes() == b"npz-bytes"
    assert again.files["fit.glb"].parent == runs_dir(store) / run.id
    assert again.summary["iou"] == 0.93 and not again.is_baseline


def test_runs_are_listed_by_kind_and_group_newest_first(store):
    made = [save_run(store, kind=kind, method=method, inputs={}, files={}, group_key=group)
            for kind, method, group in [("hoi", "interactvlm-hoi", "a"),
                                        ("hoi", "baseline: silhouette only (no contacts)", "a"),
                                        ("hoi", "interactvlm-hoi", "b"), ("genzi", "genzi", None)]]
    assert [run.id for run in list_runs(store, kind="hoi", group_key="a")] == [made[1].id, made[0].id]
    assert [run.is_baseline for run in list_runs(store, kind="hoi", group_key="a")] == [True, False]
    assert {run.id for run in list_runs(store, kind="hoi")} == {run.id for run in made[:3]}
    assert [run.id for run in list_runs(store, kind="genzi")] == [made[3].id]
    assert len(list_runs(store)) == 4


@pytest.mark.parametrize("fields, message", [
    ({"kind": "video"}, "run kind must be one of"),
    ({"method": " "}, "method must be 1-200"),
    ({"files": {"../x": b""}}, "may only hold letters"),
    ({"files": {".hidden": b""}}, "may only hold letters"),
    ({"files": {"a.txt": 3}}, "must be bytes or a path"),
    ({"inputs": {"x": math.nan}}, "plain JSON"),
    ({"summary": {"x": object()}}, "plain JSON"),
    ({"group_key": "g" * 129}, "group key"),
])
def test_bad_runs_are_refused_and_leave_nothing(store, fields, message):
    arguments = dict(kind="hoi", method="m", inputs={}, files={"ok.txt": b"1"}) | fields
    with pytest.raises(InputError, match=message):
        save_run(store, **arguments)
    assert list_runs(store) == []
    assert not runs_dir(store).exists() or list(runs_dir(store).iterdir()) == []


@pytest.mark.parametrize("run_id", ["../../etc", "A" * 32, "0" * 31, 5])
def test_malformed_or_unknown_run_ids_are_refused(store, run_id):
    with pytest.raises(InputError, match="run id is 32 lowercase hex"):
        load_run(store, run_id)
    with pytest.raises(InputError, match="no run with id"):
        load_run(store, "0" * 32)


def test_pruning_deletes_the_oldest_runs_until_the_budget_holds(store):
    made = [save_run(store, kind="hoi", method="interactvlm-hoi", inputs={}, files={"fit.glb": b"x" * 100},
                     group_key=str(index)) for index in range(5)]
    assert prune_runs(store, 500) == (0, 500)
    assert prune_runs(store, 250) == (3, 200)
    kept = {run.id for run in list_runs(store)}
    assert kept == {made[3].id, made[4].id}
    assert sorted(path.name for path in runs_dir(store).iterdir()) == sorted(kept)
    with pytest.raises(InputError, match="unknown|no run"):
        load_run(store, made[0].id)
    with pytest.raises(InputError, match="runs budget"):
        prune_runs(store, -1)
