"""A trial's fresh folder and environment, and what confinement took effect, read from outside the worker."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from harness.contract.cores import thread_env
from harness.contract.mounts import writable_mounts
from harness.contract.submission import Submission

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PASS_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CC", "CXX")
FOLDER_PREFIX = "loopbench-trial-"


def prepare_folder(submission: Submission) -> Path:
    """A new folder holding a copy of the submission and empty home, tmp, cache and data folders."""
    root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    try:
        shutil.copytree(submission.path, root / "submission", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for sub in ("home", "tmp", "cache", "data"):
            (root / sub).mkdir()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def clean_env(root: Path, cores: int) -> dict[str, str]:
    """The worker's whole environment: a few variables passed through, every cache inside the trial folder."""
    env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
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
    """Give the worker's message pipe the largest buffer the system allows (checkpoints cross it inside the
    clock: a 64 KiB pipe makes every checkpoint dozens of hand-offs between the worker and the reader)."""
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


def isolation_of(pid: int, root: Path) -> dict[str, object]:
    """What confinement took effect, seen from outside the worker."""
    own = os.getpid()

    def differs(kind: str) -> bool:
        return _namespace(pid, kind) not in (None, _namespace(own, kind))

    try:
        writable = writable_mounts(str(pid), str(root))
    except (OSError, IndexError):
        writable = ["(unknown)"]
    return {
        "pid_namespace": _namespace(pid, "pid_for_children") not in (None, _namespace(own, "pid")),
        "ipc_namespace": differs("ipc"),
        "network_namespace": differs("net"),
        "read_only_filesystem": differs("mnt") and not writable,
        "writable_mounts": writable,
        "user_namespace": differs("user"),
    }
