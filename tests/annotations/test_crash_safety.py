"""A writer killed with SIGKILL mid-stream loses nothing it acknowledged and leaves a sound database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from store_helpers import contact_rows, write_batch

from annotations.batch import import_batch
from annotations.store import Store, StoreConfig

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys, uuid
sys.path.insert(0, {root!r})
from annotations.store import Store, StoreConfig
from annotations import workflow
store = Store({url!r}, data_dir={data!r}, config=StoreConfig(gold_rate=0.0))
people = [store.ensure_annotator(f"w{{i}}").id for i in range(4)]
turn = 0
while True:
    person = people[turn % 4]
    turn += 1
    assignment = workflow.next_task(store, person)
    if assignment is None:
        continue
    key = uuid.uuid4().hex
    workflow.submit(store, person, assignment.task.id, {{"chair": list(range(turn % 500))}}, key)
    print("ACK", key, flush=True)
"""


def test_sigkill_keeps_every_acknowledged_submission(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    store = Store(url, data_dir=tmp_path / "data", config=StoreConfig(gold_rate=0.0))
    import_batch(store, write_batch(tmp_path / "b", contact_rows(400, redundancy=4)))
    store.close()
    script = WRITER.format(root=str(ROOT), url=url, data=str(tmp_path / "data"))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    acknowledged = []
    for line in child.stdout:
        acknowledged.append(line.split()[1])
        if len(acknowledged) == 150:
            break
    child.send_signal(signal.SIGKILL)  # mid-stream: the writer is inside its next transaction
    child.wait(timeout=30)
    acknowledged += [line.split()[1] for line in child.stdout.read().splitlines() if line.startswith("ACK")]
    assert child.returncode == -signal.SIGKILL
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        stored = {row[0] for row in connection.exec_driver_sql("SELECT submission_key FROM submissions")}
        layers = connection.exec_driver_sql("SELECT count(*) FROM submission_layers").scalar()
    assert set(acknowledged) <= stored
    assert layers == 2 * len(stored)  # every stored submission is whole: both of its labels
    reopened = Store(url, data_dir=tmp_path / "data")
    assert len(reopened.task_ids()) == 400
