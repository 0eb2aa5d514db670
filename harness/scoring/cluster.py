"""Trials on a Ray cluster: each timed trial one task on a node that times nothing else; the records stay here.

What a result means does not change: a timed trial runs the baseline and the submissions back to back through
`harness.scoring.trials.timed_trial`, the same path as on one machine, on one node and under the same isolation
and budget.
A node offers the custom resource `loopbench_node` = 1 and a timed trial reserves it whole, so no two timed
trials ever share a node. Verification alone (`check`) takes a sliver of it: many checks may share a node,
never a node that is timing a trial. The driver (this process) alone writes records. A node that dies or
leaves mid-trial costs that trial's attempt only: the trial runs again whole, on the same seed, wherever a
node is free, and the record notes the lost attempt.

Ray is imported here only, and this module only when `--executor ray` is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.contract.files import read_files
from harness.contract.submission import Submission, load_submission
from harness.errors import LoopbenchError
from harness.scoring.machine import describe
from harness.scoring.progress import bar as progress_bar
from harness.scoring.setting import Setting
from harness.scoring.trials import TrialRuns, timed_trial, verify

NODE_RESOURCE = "loopbench_node"
"""The custom resource of a node that may time trials: each such node offers 1, a timed trial reserves it whole."""
VERIFY_SHARE = 0.01
"""What a verification-only task takes of a node's `loopbench_node`: never beside a timed trial, whose budget
cores it would share (every run is pinned to a node's first cores), but many beside each other."""
MAX_ATTEMPTS = 3
"""Attempts of one trial before the command gives up; each lost attempt lost its node or its Ray worker."""
POLL_S = 0.5
NODE_CHECK_S = 10.0
"""How often the driver makes sure that some live node can still take the waiting trials."""
CONNECT_TIMEOUT_S = 10.0
HARNESS_DIR = Path(__file__).resolve().parents[1]


def node_name(host: str, node_id: str) -> str:
    """How records name a Ray node: its host and the start of its Ray node id (several nodes may share a host)."""
    return f"{host}/{node_id[:12]}"


def harness_digest() -> str:
    """SHA-256 of the harness's source: a node must judge with the very harness this machine runs."""
    digest = hashlib.sha256()
    for f in sorted(HARNESS_DIR.rglob("*")):
        if f.is_file() and f.suffix in (".py", ".toml"):
            digest.update(str(f.relative_to(HARNESS_DIR)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def pack(sub: Submission) -> dict[str, Any]:
    """A submission's files as it was loaded here (each checked against its hash), to travel with a task: the
    nodes need not share a file system."""
    return {
        "folder": sub.path.name,
        "dirs": [e.rel for e in sub.files if e.kind == "dir"],
        "links": {e.rel: e.target for e in sub.files if e.kind == "link"},
        "files": read_files(sub.path, sub.files),
    }


@contextlib.contextmanager
def unpacked(packed: dict[str, Any]) -> Iterator[Submission]:
    """The packed submission as a folder on this node, for as long as the trial needs it."""
    root = Path(tempfile.mkdtemp(prefix="loopbench-shipped-"))
    try:
        folder = root / packed["folder"]
        folder.mkdir()
        for rel in packed["dirs"]:
            (folder / rel).mkdir()
        for rel, target in packed["links"].items():
            os.symlink(target, folder / rel)
        for rel, body in packed["files"].items():
            (folder / rel).write_bytes(body)
        yield load_submission(folder, max_bytes=None)  # capped where it was packed
    finally:
        shutil.rmtree(root, ignore_errors=True)


_node_machines: dict[int, dict[str, Any]] = {}
"""This node's machine under a budget of n cores, measured once per Ray worker process."""


def _here() -> str:
    import ray

    return node_name(platform.node(), ray.get_runtime_context().get_node_id())


def _node_setting(setting: Setting, digest: str, node: str) -> Setting:
    """On the node, before any run: check its harness, and give the setting this node's measured ceiling."""
    if harness_digest() != digest:
        raise LoopbenchError(
            f"node {node} runs a different loopbench harness from the command's machine: "
            "install the same loopbench on every node"
        )
    cores = setting.budget.cores
    if cores not in _node_machines:
        _node_machines[cores] = describe(cores)
    return replace(setting, machine=_node_machines[cores])


def _timed_trial_task(
    setting: Setting, packs: list[dict[str, Any]], index: int, trials: int, seed: int, digest: str
) -> Iterator[Any]:
    """One Ray task: trial `index`, the baseline (first pack) and every submission back to back on this node.

    It yields the node's name first, as soon as it starts (the driver shows it and notes it if the node is lost),
    then the trial.
    """
    node = _here()
    yield node
    here = _node_setting(setting, digest, node)
    with contextlib.ExitStack() as stack:
        baseline, *subs = [stack.enter_context(unpacked(p)) for p in packs]
        yield timed_trial(subs, baseline, here, index, trials, seed, progress=False, node=node)


def _verify_task(setting: Setting, packed: dict[str, Any], seed: int, digest: str) -> Iterator[Any]:
    """One Ray task: one audited run of a submission, no baseline (what `check` asks for); the node's name first."""
    node = _here()
    yield node
    here = _node_setting(setting, digest, node)
    with unpacked(packed) as sub:
        yield verify(sub, here, seed, progress=False, node=node)


class RayExecutor:
    """Trials as Ray tasks on the cluster this process is connected to; see the module's docstring."""

    def __init__(self, ray: Any, on_start: Callable[[int, str], None] | None = None):
        self.ray, self.on_start = ray, on_start

    def _task(self, function: Callable[..., Iterator[Any]], cores: int, share: float) -> Any:
        # no retry by Ray itself: a lost attempt is retried here, where the record can note it
        return self.ray.remote(function).options(
            num_cpus=cores, resources={NODE_RESOURCE: share}, max_retries=0, num_returns="streaming"
        )

    def timed_trials(
        self, subs: list[Submission], baseline: Submission, setting: Setting, seeds: list[int], progress: bool
    ) -> list[TrialRuns]:
        ray, cores = self.ray, setting.budget.cores
        task = self._task(_timed_trial_task, cores, 1.0)
        shared = ray.put(setting), ray.put([pack(baseline), *(pack(s) for s in subs)]), harness_digest()

        def launch(k: int) -> Any:
            return task.remote(shared[0], shared[1], k, len(seeds), seeds[k], shared[2])

        return self._gather(len(seeds), launch, cores, 1.0, progress, f"score on {setting.workload.name}")

    def verify(self, sub: Submission, setting: Setting, seed: int, progress: bool) -> TrialRuns:
        ray, cores = self.ray, setting.budget.cores
        task = self._task(_verify_task, cores, VERIFY_SHARE)
        shared = ray.put(setting), pack(sub), harness_digest()

        def launch(k: int) -> Any:
            return task.remote(shared[0], shared[1], seed, shared[2])

        return self._gather(1, launch, cores, VERIFY_SHARE, progress, f"check {sub.name}")[0]

    def _gather(
        self, count: int, launch: Callable[[int], Any], cores: int, share: float, progress: bool, desc: str
    ) -> list[TrialRuns]:
        """Launch `count` trials, follow them, run again any that lost its node; the trials in order."""
        ray = self.ray
        self._need_node(cores, share)
        lost: dict[int, list[str]] = {k: [] for k in range(count)}
        where: dict[int, str] = {}
        running = {launch(k): k for k in range(count)}
        done: dict[int, TrialRuns] = {}
        bar = progress_bar(count, desc, "trial", progress, outer=True)
        checked = time.monotonic()
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for gen in ready:
                    k = running[gen]
                    try:
                        value = ray.get(next(gen))
                    except ray.exceptions.RayTaskError as err:
                        if isinstance(err.cause, LoopbenchError):
                            raise LoopbenchError(str(err.cause)) from None
                        raise
                    except ray.exceptions.RayError as err:
                        del running[gen]
                        lost[k].append(
                            f"attempt {len(lost[k]) + 1} lost on {where.pop(k, 'a node that never reported')}: "
                            f"{_first_line(err)}"
                        )
                        if len(lost[k]) >= MAX_ATTEMPTS:
                            raise LoopbenchError(
                                f"trial {k + 1} was lost {MAX_ATTEMPTS} times; the last: {lost[k][-1]}"
                            ) from None
                        running[launch(k)] = k
                        continue
                    if isinstance(value, str):  # the trial started on this node
                        where[k] = value
                        if self.on_start:
                            self.on_start(k, value)
                        continue
                    del running[gen]
                    done[k] = value
                    done[k].retries = lost[k]
                    where.pop(k, None)
                    bar.update(1)
                if running and time.monotonic() - checked > NODE_CHECK_S:
                    self._need_node(cores, share)
                    checked = time.monotonic()
                if running:
                    busy = sorted(set(where.values()))
                    bar.set_postfix_str(f"nodes: {', '.join(busy) if busy else 'waiting for one'}", refresh=True)
        finally:
            bar.close()
            for gen in running:
                with contextlib.suppress(Exception):
                    ray.cancel(gen, force=True)
        return [done[k] for k in range(count)]

    def _need_node(self, cores: int, share: float) -> None:
        """Fail in one line, rather than wait for ever, when no live node can take a trial."""
        for node in self.ray.nodes():
            offers = node.get("Resources", {})
            if node.get("Alive") and offers.get(NODE_RESOURCE, 0) >= share and offers.get("CPU", 0) >= cores:
                return
        raise LoopbenchError(
            f"no live node of the Ray cluster can take a trial: each node that times trials needs "
            f"the resource {NODE_RESOURCE} = 1 and at least {cores} CPUs "
            f"(ray start ... --num-cpus {cores} --resources '{{\"{NODE_RESOURCE}\": 1}}')"
        )


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _check_reachable(address: str) -> None:
    """A HOST:PORT address must answer before Ray is asked to join it (Ray itself would wait a long while)."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LoopbenchError(
            f"--address {address!r} is not a Ray cluster's address: "
            "HOST:PORT of its head (6379 unless set otherwise) or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise LoopbenchError(
            f"cannot join the Ray cluster at {address}: nothing answers there ({err.strerror or err})"
        ) from None


@contextlib.contextmanager
def ray_executor(
    address: str | None = None, on_start: Callable[[int, str], None] | None = None
) -> Iterator[RayExecutor]:
    """Connected to the Ray cluster at `address`, or to a local Ray instance that lives as long as the block.

    The local instance is this machine as one node (it offers `loopbench_node`). `on_start(trial, node)` is
    called here when a trial starts on a node.
    """
    try:
        import ray
    except ImportError:
        raise LoopbenchError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        ray.init(address="local", resources={NODE_RESOURCE: 1}, **quiet)  # a new instance, whatever RAY_ADDRESS says
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            raise LoopbenchError(f"cannot join the Ray cluster at {address}: {_first_line(err)}") from None
    try:
        yield RayExecutor(ray, on_start)
    finally:
        ray.shutdown()
