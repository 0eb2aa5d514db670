"""The sandbox owns its trial: what a run can reach, what it leaves, and what happens when its scorer goes.

- no socket of the machine's is reachable from a run (a listener outside the sandbox receives nothing);
- the caller's own child processes survive a trial (the caller is no subreaper and kills only the trial's);
- an interrupted score (SIGINT, SIGTERM) leaves no process and no folder; a score killed outright leaves
  no process, and its folder is removed when the next run starts;
- native code builds in prepare by a relative path and runs on the budget's cores through OpenMP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.contract.submission import load_submission
from harness.scoring.results import check
from harness.trial.folder import FOLDER_PREFIX, OWNER_FILE
from tests.helpers import HONEST, PROJECT, assert_trains_the_task

NATIVE = PROJECT / "tests" / "honest" / "c_openmp"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's namespaces and cgroups need root")


def honest_copy(tmp_path: Path, name: str, prepare_body: str) -> Path:
    """The honest torch port with a prepare(task) of our own (the place for an attempt to reach outside)."""
    folder = tmp_path / name
    shutil.copytree(HONEST, folder)
    source = (folder / "train.py").read_text()
    (folder / "train.py").write_text(
        source + "\n\ndef prepare(task):\n" + textwrap.indent(textwrap.dedent(prepare_body), "    ")
    )
    return folder


# ---------------------------------------------------------------- what a run can reach


@needs_root
def test_a_listener_outside_the_sandbox_receives_nothing(tmp_path, tiny_setting):
    path = tmp_path / "listener.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    listener.settimeout(0.5)
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.settimeout(0.5)
    port = tcp.getsockname()[1]
    folder = honest_copy(
        tmp_path,
        "reach",
        f"""
        import socket
        for family, address in ((socket.AF_UNIX, {str(path)!r}), (socket.AF_INET, ("127.0.0.1", {port}))):
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(1)
                    s.connect(address)
                    s.sendall(b"hello from the sandbox")
            except OSError:
                pass
        """,
    )
    try:
        result = check(load_submission(folder), tiny_setting, seed=3, progress=False)
        received = []
        for server in (listener, tcp):
            try:
                connection, _ = server.accept()
                received.append(connection.recv(100))
            except TimeoutError:
                pass
    finally:
        listener.close()
        tcp.close()
    assert result.verdict == "accepted", result.reason
    assert received == [], f"a host socket was reached from the sandbox: {received}"


@needs_root
def test_the_run_sees_its_own_tmp_and_writes_its_folder_by_relative_path(tmp_path, tiny_setting):
    marker = Path(tempfile.gettempdir()) / f"loopbench-host-marker-{os.getpid()}"
    marker.write_text("the machine's /tmp")
    folder = honest_copy(
        tmp_path,
        "view",
        f"""
        import os
        if os.path.exists({str(marker)!r}):
            raise RuntimeError("the machine's /tmp is visible")
        with open("written-by-relative-path.txt", "w") as f:
            f.write("ok")
        with open("/tmp/private.txt", "w") as f:
            f.write("ok")
        """,
    )
    try:
        result = check(load_submission(folder), tiny_setting, seed=4, progress=False)
    finally:
        marker.unlink()
    assert result.verdict == "accepted", result.reason
    assert result.isolation.read_only_filesystem and not result.isolation.writable_mounts


def test_native_code_with_openmp_builds_in_prepare_and_is_accepted(tiny_setting):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert_trains_the_task(NATIVE, tiny_setting)


# ---------------------------------------------------------------- the caller's processes


def test_a_child_process_of_the_caller_survives_a_trial(tiny_setting):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        result = check(load_submission(HONEST), tiny_setting, seed=5, progress=False)
        assert result.verdict == "accepted", result.reason
        assert bystander.poll() is None, "the trial killed a process of its caller"
    finally:
        bystander.kill()
        bystander.wait()


# ---------------------------------------------------------------- a scorer that goes


SLOW = """
import time


def prepare(task):
    pass


def train(task, params, batches, log):
    time.sleep(600)
"""


def trial_folders_of(pid: int) -> list[Path]:
    """The trial folders whose owner file names the process `pid`."""
    found = []
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())["owner"]
        except (OSError, ValueError, KeyError):
            continue
        if owner.split(".")[0] == str(pid):
            found.append(folder)
    return found


def workers_in(folders: list[Path]) -> list[psutil.Process]:
    """Live worker processes of the given trial folders."""
    roots = {str(f) for f in folders}
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "harness.sandbox.worker" in cmd and any(r in cmd for r in roots):
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                pass
    return found


def start_slow_score(tmp_path: Path) -> tuple[subprocess.Popen, list[Path]]:
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "submission.toml").write_text(
        'name = "slow"\nkind = "human"\nsystem = "tests"\nauthors = []\ndate = "2026-12-01"\ndescription = "sleeps"\n'
    )
    (slow / "train.py").write_text(SLOW)
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "score",
        str(slow),
        "--workload",
        "tiny",
        "--trials",
        "1",
        "--results",
        str(tmp_path / "results"),
        "--busy",
        "record",
    ]
    # As from a terminal: a test run started in the background of a script inherits an ignored SIGINT, which
    # the scorer (as any program) keeps; Ctrl-C at a terminal always reaches a scorer that handles it.
    scorer = subprocess.Popen(
        command,
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until its first run's worker is up (the baseline's or the sleeper's)
        folders = trial_folders_of(scorer.pid)
        if folders and workers_in(folders):
            return scorer, folders
        assert scorer.poll() is None, "the scorer ended before its trial started"
        time.sleep(0.2)
    scorer.kill()
    pytest.fail("the trial never started")


def gone_within(seconds: float, check_gone) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check_gone():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_score_leaves_no_process_and_no_folder(tmp_path, sig):
    scorer, folders = start_slow_score(tmp_path)
    scorer.send_signal(sig)
    try:
        scorer.wait(timeout=60)
    finally:
        scorer.kill()
    assert gone_within(10, lambda: not workers_in(folders)), "a worker outlived its interrupted scorer"
    assert not [f for f in folders if f.exists()], "the interrupted scorer left its trial folder"


def test_a_killed_score_leaves_no_process_and_the_next_run_removes_its_folder(tmp_path, tiny_setting):
    scorer, folders = start_slow_score(tmp_path)
    scorer.kill()
    scorer.wait()
    assert gone_within(10, lambda: not workers_in(folders)), "a worker outlived its killed scorer"
    assert all(f.exists() for f in folders), "a killed scorer cannot clean up: its folder should still be there"
    check(load_submission(HONEST), tiny_setting, seed=6, progress=False)  # the next run, of anyone
    assert not [f for f in folders if f.exists()], "the next run did not remove the killed scorer's folder"


# ---------------------------------------------------------------- a busy machine


def test_a_score_beside_busy_processes_ends_with_machine_busy(tmp_path):
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        command = [
            sys.executable,
            "-m",
            "harness.cli",
            "score",
            str(HONEST),
            "--workload",
            "tiny",
            "--trials",
            "1",
            "--results",
            str(tmp_path / "results"),
        ]
        done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=900)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 3, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: machine busy: "), done.stderr[-2000:]
    assert not (tmp_path / "results" / "runs").exists() or not list((tmp_path / "results" / "runs").iterdir())
