"""A cgroup per run, where the machine offers them: the kernel holds the tree, enforces the budget, counts its CPU.

The worker joins the cgroup before it starts anything, and nothing it starts can leave (its view of /sys is
read-only and it holds no capability). The kernel then does the watch: the memory limit (page cache, tmpfs and
/dev/shm included), a process limit against fork bombs, the CPUs (cpuset: an affinity wider than the budget
cannot even be set), the CPU time of every process the run ever had, freezing, and killing them all.

cgroup v1 (one hierarchy per controller, as on this project's machines) and v2 (the unified hierarchy) are both
read; each trial cgroup is made under the caller's own cgroup, so a harness in a container stays in its limits.
A cgroup is named after the process that made it, so that one left by a scorer that was killed outright can be
recognised, emptied and removed by the next run.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from harness.trial.processes import owner_alive, owner_token

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpuacct", "memory", "pids", "cpuset", "freezer")
PIDS_MAX = 2048
"""Processes and threads a run may have at once: far above any honest loop's, far below a fork bomb's."""
PREFIX = "loopbench-"


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def _write(path: Path, value: str) -> None:
    path.write_text(value, encoding="ascii")


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    found = {}
    for line in Path("/proc/self/cgroup").read_text(encoding="ascii").splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def _v2() -> bool:
    return (ROOT / "cgroup.controllers").is_file()


@dataclass
class TrialCgroup:
    """The cgroup folders of one run, one per v1 controller, or the single v2 folder."""

    dirs: dict[str, Path]
    """controller -> folder; on v2 every controller maps to the same folder."""
    v2: bool

    # ------------------------------------------------------------ making and removing

    @classmethod
    def create(cls, name: str, cpus: list[int], memory_bytes: int) -> TrialCgroup | None:
        """A new cgroup for a run, limited to `cpus` and `memory_bytes`; None where cgroups cannot be made."""
        try:
            group = cls._make(f"{PREFIX}{owner_token()}-{name}")
            group._limit(cpus, memory_bytes)
            return group
        except (OSError, KeyError, ValueError):
            return None

    @classmethod
    def _make(cls, name: str) -> TrialCgroup:
        own = _own_cgroups()
        if _v2():
            folder = ROOT / own[""].lstrip("/") / name
            folder.mkdir()
            return cls(dict.fromkeys(("cpu", "memory", "pids", "cpuset", "freeze"), folder), True)
        dirs: dict[str, Path] = {}
        try:
            for controller in V1_CONTROLLERS:
                folder = ROOT / controller / own[controller].lstrip("/") / name
                folder.mkdir()
                dirs[controller] = folder
        except (OSError, KeyError):
            cls(dirs, False).remove()
            raise
        return cls(dirs, False)

    def _limit(self, cpus: list[int], memory_bytes: int) -> None:
        cpu_list = ",".join(map(str, cpus))
        if self.v2:
            folder = self.dirs["memory"]
            for file, value in (
                ("memory.max", str(memory_bytes)),
                ("memory.swap.max", "0"),
                ("pids.max", str(PIDS_MAX)),
                ("cpuset.cpus", cpu_list),
            ):
                if (folder / file).exists():
                    _write(folder / file, value)
            return
        cpuset = self.dirs["cpuset"]
        _write(cpuset / "cpuset.mems", _read(cpuset.parent / "cpuset.mems") or "0")
        _write(cpuset / "cpuset.cpus", cpu_list)
        _write(self.dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
        _write(self.dirs["pids"] / "pids.max", str(PIDS_MAX))

    @property
    def join_paths(self) -> list[str]:
        """The folders whose cgroup.procs the worker writes itself into."""
        return sorted({str(d) for d in self.dirs.values()})

    def remove(self) -> None:
        """Kill whatever is left in it, then remove its folders."""
        self.kill_all()
        for folder in set(self.dirs.values()):
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a task still exiting
                    time.sleep(0.02)

    # ------------------------------------------------------------ what the kernel counts

    def procs(self) -> list[int]:
        folder = next(iter(self.dirs.values()), None)
        if folder is None:
            return []
        try:
            return [int(p) for p in _read(folder / "cgroup.procs").split()]
        except (OSError, ValueError):
            return []

    def cpu_seconds(self) -> float:
        """CPU time of every process the run ever had (the exited ones included)."""
        if self.v2:
            stat = _read(self.dirs["cpu"] / "cpu.stat")
            usec = next(int(v) for k, v in (line.split() for line in stat.splitlines()) if k == "usage_usec")
            return usec / 1e6
        return int(_read(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9

    def peak_mib(self) -> float:
        folder = self.dirs["memory"]
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int(_read(folder / name)) / 2**20
        except (OSError, ValueError):
            return 0.0

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for going over the memory limit."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            lines = _read(self.dirs["memory"] / name).splitlines()
        except OSError:
            return False
        return any(k == "oom_kill" and int(v) > 0 for k, v in (line.split() for line in lines))

    def pids_limit_hit(self) -> bool:
        try:
            events = _read(self.dirs["pids"] / "pids.events")
        except OSError:
            return False
        return any(k == "max" and int(v) > 0 for k, v in (line.split() for line in events.splitlines()))

    # ------------------------------------------------------------ freezing and killing

    def freeze(self, frozen: bool) -> None:
        """Stop (or resume) every task of the run at once, and wait until the kernel says it is done."""
        if self.v2:
            file, value, done = self.dirs["freeze"] / "cgroup.freeze", "1" if frozen else "0", None
        else:
            file, value, done = self.dirs["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED", "FROZEN"
        _write(file, value)
        for _ in range(500):
            state = _read(file.parent / "cgroup.events") if self.v2 else _read(file)
            if (self.v2 and f"frozen {value}" in state) or (not self.v2 and (state == done or not frozen)):
                return
            time.sleep(0.002)

    def kill_all(self) -> None:
        """SIGKILL every task until none is left (thawed first: a frozen task cannot die)."""
        for _ in range(100):
            procs = self.procs()
            if not procs:
                return
            try:
                self.freeze(False)
            except (OSError, KeyError):
                pass
            for pid in procs:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)


def _stale() -> list[TrialCgroup]:
    """The loopbench cgroups under this process's cgroups whose owner (the scorer that made them) is gone."""
    own = _own_cgroups()
    if _v2():
        parents = {"": ROOT / own[""].lstrip("/")}
    else:
        parents = {c: ROOT / c / own[c].lstrip("/") for c in V1_CONTROLLERS if c in own}
    by_name: dict[str, dict[str, Path]] = {}
    for controller, parent in parents.items():
        for folder in parent.glob(f"{PREFIX}*"):
            by_name.setdefault(folder.name, {})[controller] = folder
    stale = []
    for name, dirs in sorted(by_name.items()):
        if owner_alive(name[len(PREFIX) :].split("-", 1)[0]):
            continue
        if _v2():
            folder = dirs[""]
            stale.append(TrialCgroup(dict.fromkeys(("cpu", "memory", "pids", "cpuset", "freeze"), folder), True))
        else:
            stale.append(TrialCgroup(dirs, False))
    return stale


def sweep_stale() -> int:
    """Empty and remove the cgroups of scorers that are gone (killed outright); how many were removed."""
    try:
        stale = _stale()
    except (OSError, KeyError):
        return 0
    for group in stale:
        group.remove()
    return len(stale)
