"""A run's fresh folder and environment, stale folders of killed scorers, and what confinement took effect."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

import psutil

from harness.contract.cores import thread_env
from harness.contract.files import copy_files
from harness.contract.mounts import writable_mounts
from harness.contract.submission import Submission
from harness.trial.cgroups import sweep_stale
from harness.trial.processes import owner_alive, owner_token

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASS_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
BUILD_ENV = (
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "LIBRARY_PATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "PKG_CONFIG_PATH",
)
"""Build variables of the operator's, passed through so that a submission compiling in prepare builds as they do."""
FOLDER_PREFIX = "loopbench-trial-"
OWNER_FILE = "owner.json"


def prepare_folder(submission: Submission) -> Path:
    """A new folder holding a copy of the submission, empty home, tmp, cache and data folders, and its owner.

    The copy is made from what the submission was loaded with (no link out of it, no special file, its size
    capped) and every file is checked against its hash as it is copied; a failure leaves no folder behind.
    """
    sweep_stale_folders()
    root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    try:
        (root / OWNER_FILE).write_text(json.dumps({"owner": owner_token()}), encoding="utf-8")
        copy_files(submission.path, submission.files, root / "submission")
        for sub in ("home", "tmp", "cache", "data"):
            (root / sub).mkdir()
    except BaseException:
        remove_folder(root)
        raise
    return root


def remove_folder(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale_folders() -> int:
    """Remove the trial folders (and cgroups) of scorers that are gone: killed outright, they could not clean up.

    A folder is the harness's if its name has the trial prefix and it holds an owner file; it is stale if the
    process the file names is no longer running. How many folders were removed.
    """
    sweep_stale()
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        try:
            owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))["owner"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not recognisably ours, or still being made
        if isinstance(owner, str) and not owner_alive(owner):
            remove_folder(folder)
            removed += 1
    return removed


def clean_env(root: Path, cores: int) -> dict[str, str]:
    """The worker's whole environment: a few variables passed through, every cache inside the trial folder."""
    env = {k: os.environ[k] for k in (*PASS_THROUGH_ENV, *BUILD_ENV) if k in os.environ}
    cache = root / "cache"
    env |= {
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "XDG_CACHE_HOME": str(cache),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "NUMBA_CACHE_DIR": str(cache / "numba"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "TORCH_HOME": str(cache / "torch"),
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **thread_env(cores),
    }
    return env


def widen_pipe(fd: int) -> None:
    """Give the worker's message pipe the largest buffer the system allows (fewer hand-offs per header burst)."""
    try:
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as f:
            size = int(f.read())
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ValueError):
        pass  # the default pipe still works, only with more hand-offs


def _namespace(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def worker_pid(supervisor: int) -> int:
    """The worker proper: the supervisor's first child (the one it forked; later ones are adopted orphans)."""
    try:
        kids = psutil.Process(supervisor).children()
        return min(kids, key=lambda p: p.create_time()).pid if kids else supervisor
    except psutil.Error:
        return supervisor


def isolation_of(supervisor: int, root: Path) -> dict[str, object]:
    """What confinement took effect in the worker, seen from outside it."""
    pid, own = worker_pid(supervisor), os.getpid()

    def differs(kind: str) -> bool:
        return _namespace(pid, kind) not in (None, _namespace(own, kind))

    try:
        writable = writable_mounts(str(pid), str(root))
    except (OSError, IndexError, ValueError):
        writable = ["(unknown)"]
    return {
        "pid_namespace": differs("pid"),
        "ipc_namespace": differs("ipc"),
        "network_namespace": differs("net"),
        "read_only_filesystem": differs("mnt") and not writable,
        "writable_mounts": writable,
        "user_namespace": differs("user"),
    }
