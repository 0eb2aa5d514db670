"""Records: atomic, never clobbered, loadable; corrupt or foreign files skipped with a warning."""

import json
import signal
import subprocess
import sys
import time

import pytest

from harness.errors import LoopbenchError
from harness.records import store
from harness.records.schema import RECORD_VERSION, RunRecord
from tests.helpers import PROJECT, make_record


def test_a_record_round_trips(tmp_path):
    path = store.write_record(make_record(), tmp_path)
    assert path.parent == tmp_path / "runs"
    [(loaded_path, loaded)] = store.load_records(tmp_path)
    assert loaded_path == path and loaded.speedup == 1.0 and loaded.version == RECORD_VERSION
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_two_writes_of_the_same_record_never_clobber(tmp_path):
    rec = make_record()
    a, b = store.write_record(rec, tmp_path), store.write_record(rec, tmp_path)
    assert a != b and a.exists() and b.exists()


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(tmp_path):
    store.write_record(make_record(), tmp_path)
    runs = tmp_path / "runs"
    (runs / "broken.json").write_text('{"version": 1, "created": ')
    (runs / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (runs / ".half-written.partial").write_text("{")
    with pytest.warns(UserWarning) as caught:
        found = store.load_records(tmp_path)
    assert len(found) == 1
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.json" in messages and "foreign.json" in messages


def test_the_schema_has_a_version_and_documented_fields():
    found = RunRecord.model_json_schema()
    assert "version" in found["properties"]
    assert found["properties"]["speedup"]["description"]


WRITER = """
import sys
from tests.helpers import make_record
from harness.records.store import write_record
while True:
    write_record(make_record(n_losses=200_000), sys.argv[1])
"""


def test_kill_9_while_writing_never_leaves_a_partial_record(tmp_path):
    root = str(PROJECT)
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
        RunRecord.model_validate_json(path.read_bytes())  # each whole, none partial


def test_a_record_from_before_nodes_were_named_still_loads(tmp_path):
    old = make_record().model_dump(mode="json")
    del old["nodes"]
    for trial in old["trials"]:
        del trial["node"], trial["retries"]
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "old.json").write_text(json.dumps(old))
    [(_, loaded)] = store.load_records(tmp_path)
    assert loaded.trials[0].node is None and loaded.trials[0].retries == [] and loaded.nodes == {}


def test_every_golden_record_loads_and_keeps_its_figures():
    """Records of every version ever written (tests/golden/) load forever, with what they said."""
    golden = sorted((PROJECT / "tests" / "golden").glob("*.json"))
    assert golden, "tests/golden/ holds no record"
    for path in golden:
        raw = json.loads(path.read_text())
        record = store.parse_record(path.read_bytes())
        assert record.verdict == raw["verdict"] and record.speedup == raw["speedup"], path.name
        assert len(record.trials) == len(raw["trials"]) and record.workload.name == raw["workload"]["name"], path.name


def test_the_committed_records_load():
    runs = sorted((PROJECT / "results" / "runs").glob("*.json"))
    for path in runs:
        store.parse_record(path.read_bytes())


def test_a_record_newer_than_the_code_is_refused_in_one_line(tmp_path):
    newer = make_record().model_dump(mode="json") | {"version": RECORD_VERSION + 1}
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(newer))
    with pytest.raises(LoopbenchError, match=f"version {RECORD_VERSION + 1} record, newer than this loopbench reads"):
        store.read_record(path)


def test_an_old_version_is_upgraded_step_by_step(monkeypatch):
    """The machinery a breaking change will use: a version-n file passes through UPGRADES[n] to the current version.

    Pretend the current version is one more than today's, whose step renamed a field `why` to `reason`.
    """
    from harness.records import upgrade

    today = make_record().model_dump(mode="json")
    older = {k: v for k, v in today.items() if k != "reason"} | {"why": today["reason"]}
    monkeypatch.setattr(upgrade, "RECORD_VERSION", RECORD_VERSION + 1)
    monkeypatch.setitem(
        upgrade.UPGRADES,
        RECORD_VERSION,
        lambda raw: {**{k: v for k, v in raw.items() if k != "why"}, "reason": raw["why"]},
    )
    raw = upgrade.upgraded(older)
    assert raw["version"] == RECORD_VERSION + 1 and raw["reason"] == today["reason"] and "why" not in raw


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"version": 1, "created": ', "not JSON"),
        (b"\xff\xfe\x00binary", "not text"),
        (b"[1, 2, 3]", "no record version"),
        (b'{"version": 1}', "missing created, submission, baseline, workload"),
    ],
)
def test_a_bad_file_says_what_is_wrong(body, fragment):
    with pytest.raises(store.RecordError, match=fragment):
        store.parse_record(body)
