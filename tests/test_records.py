"""Records: atomic, never clobbered, loadable; corrupt or foreign files skipped with a warning."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import records


def make_record(name="demo", n_losses=10) -> records.RunRecord:
    info = records.SubmissionInfo(name=name, kind="agent", system="s", authors=["a"], date="2026-11-23",
                                  description="d", entrypoint="train.py:train", path="/x", file_hashes={})
    run = records.RunSummary(accepted=True, reason="ok", seconds=1.0, losses=[1.0] * n_losses)
    return records.RunRecord(
        created=records.utc_now(), submission=info, baseline=info, workload={"name": "tiny"}, budget={}, machine={},
        versions={}, corpus={}, tolerances={}, flops=1, floor_seconds=0.0,
        trials=[records.TrialRecord(index=0, seed=1, baseline=run, submission=run)],
        verdict="accepted", reason="every trial accepted", speedup=1.0,
    )


def test_a_record_round_trips(tmp_path):
    path = records.write_record(make_record(), tmp_path)
    assert path.parent == tmp_path / "runs"
    [(loaded_path, loaded)] = records.load_records(tmp_path)
    assert loaded_path == path and loaded.speedup == 1.0 and loaded.version == records.RECORD_VERSION
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_two_writes_of_the_same_record_never_clobber(tmp_path):
    rec = make_record()
    a, b = records.write_record(rec, tmp_path), records.write_record(rec, tmp_path)
    assert a != b and a.exists() and b.exists()


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(tmp_path):
    records.write_record(make_record(), tmp_path)
    runs = tmp_path / "runs"
    (runs / "broken.json").write_text('{"version": 1, "created": ')
    (runs / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (runs / ".half-written.partial").write_text("{")
    with pytest.warns(UserWarning) as caught:
        found = records.load_records(tmp_path)
    assert len(found) == 1
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.json" in messages and "foreign.json" in messages


def test_the_schema_has_a_version_and_documented_fields():
    schema = records.schema()
    assert "version" in schema["properties"]
    assert schema["properties"]["speedup"]["description"]


WRITER = """
import sys
from tests.test_records import make_record
from harness import records
while True:
    records.write_record(make_record(n_losses=200_000), sys.argv[1])
"""


def test_kill_9_while_writing_never_leaves_a_partial_record(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = tmp_path / "runs"
    for delay in (0.0, 0.013, 0.031, 0.057, 0.11):
        before = len(list(runs.glob("*.json"))) if runs.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=root)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (len(list(runs.glob("*.json"))) if runs.exists() else 0) <= before:
            time.sleep(0.005)  # the writer is up and busy: from here on it is always in the middle of a write
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    files = list(runs.glob("*.json"))
    assert len(files) >= 5, "the writer never finished a record; the test proves nothing"
    for path in files:
        records.RunRecord.model_validate_json(path.read_bytes())  # each whole, none partial


def test_a_record_from_before_nodes_were_named_still_loads(tmp_path):
    old = make_record().model_dump(mode="json")
    del old["nodes"]
    for trial in old["trials"]:
        del trial["node"], trial["retries"]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "old.json").write_text(json.dumps(old))
    [(_, loaded)] = records.load_records(tmp_path)
    assert loaded.trials[0].node is None and loaded.trials[0].retries == [] and loaded.nodes == {}
