"""Child-process entry of one trial: confine itself, pre-import, load the submission, run it, report.

Everything from the submission's import on is untrusted: this process may be patched by the code it
runs, so the parent believes nothing it says without checking. The parent holds the clock, validates
every header that arrives, reads the log area itself after the clock and replays the training itself;
what this module checks (the types of the checkpoint objects, the clock functions) only makes a
failure's reason clearer.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.sandbox.confine import confine, join_cgroups

if TYPE_CHECKING:
    from harness.contract import protocol
    from harness.contract.spec import Task
    from harness.sandbox.channel import Channel

# Everything that loads NumPy is imported in main(), after confine(): a thread pool started before the
# process pinned itself to the budget's CPUs would keep the whole machine's affinity.

CLOCKS = (
    "time",
    "time_ns",
    "perf_counter",
    "perf_counter_ns",
    "monotonic",
    "monotonic_ns",
    "process_time",
    "process_time_ns",
    "thread_time",
    "thread_time_ns",
    "clock_gettime",
    "clock_gettime_ns",
)
_ORIGINAL_CLOCKS = {name: getattr(time, name) for name in CLOCKS if hasattr(time, name)}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctl", type=int, required=True, help="the socket the parent's orders arrive on")
    parser.add_argument("--out", type=int, required=True, help="the pipe the worker's messages leave by")
    parser.add_argument("--log-area", type=int, required=True, help="the memory file of the log area")
    parser.add_argument("--cpus", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--shm-mib", type=int, required=True)
    parser.add_argument("--cgroup", action="append", default=[], help="a cgroup folder to join first")
    return parser.parse_args()


def _pre_import(cores: int) -> None:
    """The common libraries, imported before the clock: their cost is setup (SPEC §7).

    The system's OpenMP runtime is loaded before torch, so that torch and a submission's own OpenMP code
    share one runtime, and a newer one than torch bundles (torch needs only its oldest symbols).
    """
    system_gomp = ctypes.util.find_library("gomp")
    if system_gomp:
        try:
            ctypes.CDLL(system_gomp, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass
    import numpy  # noqa: F401
    import torch

    try:
        import numba  # noqa: F401
    except Exception:  # noqa: BLE001 - numba is optional for a submission; its absence is not ours to fail
        pass
    torch.set_num_threads(cores)


def _load(channel: Channel, order: protocol.Order, task: Task) -> Callable[..., Any]:
    """Import the entry module and run prepare(task); the entry function, or a reported failure."""
    from harness.sandbox.loader import import_entry

    phase = "import"
    try:
        module = import_entry(order.folder, order.entry_file)
        train = getattr(module, order.entry_function, None)
        if not callable(train):
            channel.fail("import", f"{order.entry_file} has no function {order.entry_function}")
        prepare = getattr(module, "prepare", None)
        if callable(prepare):
            phase = "prepare"
            prepare(task)
    except SystemExit as err:
        channel.fail(phase, f"exited during {phase} (SystemExit {err.code})")
    except BaseException as err:  # noqa: BLE001 - report whatever the submission raised
        channel.fail(phase, f"{type(err).__name__}: {err}", traceback.format_exc())
    return train  # type: ignore[no-any-return]  # checked callable above


def _train(channel: Channel, train: Callable[..., Any], task: Task, ctl: socket.socket, layout: dict[str, Any]) -> None:
    from harness.contract.areas import DataLayout, map_data
    from harness.contract.log import Log

    _, fds, _, _ = socket.recv_fds(ctl, 1, 1)
    if not fds:
        channel.fail("train", "the run's data did not arrive")
    params, batches = map_data(fds[0], DataLayout.from_json(layout))
    try:
        train(task, params, batches, Log(channel))
    except SystemExit as err:
        channel.fail("train", f"exited during train (SystemExit {err.code})")
    except BaseException as err:  # noqa: BLE001
        channel.fail("train", f"{type(err).__name__}: {err}", traceback.format_exc())


def main() -> None:
    args = _arguments()
    join_cgroups(args.cgroup)
    cpus = {int(c) for c in args.cpus.split(",")}
    confine(cpus, args.root, args.shm_mib, (args.ctl, args.out, args.log_area))
    _pre_import(len(cpus))
    from harness.contract import protocol, wire
    from harness.contract.areas import LogArea, LogLayout
    from harness.contract.spec import Task
    from harness.sandbox.channel import Channel

    ctl = socket.socket(fileno=args.ctl)
    order = protocol.parse_order(wire.read_header(args.ctl))
    assert isinstance(order, protocol.Order)
    channel = Channel(args.out, LogArea.map(args.log_area, LogLayout.from_json(order.log_layout)))
    task = Task.model_validate(order.task)
    channel.final_step = task.checkpoint_steps()[-1]
    train = _load(channel, order, task)
    channel.send(protocol.Ready())
    go = protocol.parse_order(wire.read_header(args.ctl))
    assert isinstance(go, protocol.Go)
    _train(channel, train, task, ctl, go.data_layout)
    patched = tuple(f"time.{n}" for n, f in _ORIGINAL_CLOCKS.items() if getattr(time, n, None) is not f)
    channel.send(protocol.Done(patched))
    sys.stdout.flush()
    os.read(args.ctl, 1)  # stay until the parent has looked at what is left running, then it ends the trial
    os._exit(0)


if __name__ == "__main__":
    main()
