"""The `log` object a submission's train() receives (SPEC §5): one implementation, for the worker and in-process tools.

It checks what the submission hands over and passes it on to a sink: the worker's sink sends it to the
parent (and ends the process on a bad value, so that no submission can catch its own mistake and carry
on); the in-process tools' sink (MemoryLog) keeps it in memory.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn, Protocol

import numpy as np

from harness.contract.checkpoint import Arrays, Checkpoint, CheckpointValueError, float_array


class LogSink(Protocol):
    def step(self, s: int, loss: float) -> None: ...

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """The arrays may be views of the submission's own buffers: copy before train() goes on."""

    def reject(self, message: str) -> NoReturn:
        """A value that breaks the protocol: never returns."""


Fingerprint = tuple[tuple[tuple[Any, Any, Any], ...], ...]
"""Per group, per tensor: the name, the value object handed over, and what of it could change in place."""


def _in_place_state(value: Any) -> Any:
    """What of an array or tensor may change while the object stays the same (None: no reuse for it)."""
    if type(value) is np.ndarray:
        return value.shape, value.strides, value.dtype
    torch = sys.modules.get("torch")
    if torch is not None and type(value) in (torch.Tensor, torch.nn.Parameter):
        return tuple(value.shape), value.stride(), value.dtype, value.device, value.data_ptr()
    return None


def _fingerprint(groups: tuple[Any, ...]) -> Fingerprint:
    return tuple(tuple((name, value, _in_place_state(value)) for name, value in values.items()) for values in groups)


def _unchanged(before: Fingerprint, groups: tuple[Any, ...]) -> bool:
    """Whether the groups hold the very objects of `before`, in the same order and unchanged in place."""
    for values, then in zip(groups, before, strict=True):
        if type(values) is not dict or len(values) != len(then):
            return False
        for (name, value), (name0, value0, state0) in zip(values.items(), then, strict=True):
            if name != name0 or value is not value0 or state0 is None or _in_place_state(value) != state0:
                return False
    return True


class Log:
    """`log.step(s, loss)` and `log.checkpoint(s, params, m, v)`, validated and handed to a sink.

    A sink with `repeat_checkpoint(s)` is asked to copy a checkpoint made of the very arrays of the previous
    one by what it learnt from that one; only arrays that cannot have changed shape, type or memory since
    are reused (numpy arrays held here cannot be reallocated; a tensor's memory is compared)."""

    def __init__(self, sink: LogSink):
        self._sink = sink
        self._last: Fingerprint | None = None

    def step(self, s: Any, loss: Any) -> None:
        try:
            step, value = int(s), float(loss)
        except Exception as err:  # noqa: BLE001 - any bad value is the submission's error
            self._sink.reject(f"log.step got a step or loss that is not a number: {err}")
        self._sink.step(step, value)

    def checkpoint(self, s: Any, params: Any, m: Any, v: Any) -> None:
        try:
            step = int(s)
        except Exception as err:  # noqa: BLE001
            self._sink.reject(f"log.checkpoint got a step that is not a number: {err}")
        repeat = getattr(self._sink, "repeat_checkpoint", None)
        given = (params, m, v)
        if repeat is not None and self._last is not None and _unchanged(self._last, given) and repeat(step):
            return
        self._last = None
        groups: dict[str, Arrays] = {}
        for group, values in (("params", params), ("m", m), ("v", v)):
            if not isinstance(values, dict):
                self._sink.reject(f"checkpoint after step {step}: {group} is a {type(values).__name__}, not a dict")
            arrays: Arrays = {}
            for name, value in values.items():
                try:
                    arrays[str(name)] = float_array(value)
                except CheckpointValueError as err:
                    self._sink.reject(f"checkpoint after step {step}: {group}['{name}'] {err}")
            groups[group] = arrays
        self._sink.checkpoint(Checkpoint.of(step, groups))
        if repeat is not None:
            self._last = _fingerprint(given)


class LogError(Exception):
    """A value that breaks the protocol, raised by MemoryLog (in-process tools trust the code they run)."""


class _Discarded:
    """The sink of a log that keeps nothing: for timing a loop in process with nothing of the harness's cost."""

    def step(self, s: int, loss: float) -> None:
        pass

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        pass

    def reject(self, message: str) -> NoReturn:
        raise LogError(message)


def discarding_log() -> Log:
    """A Log that checks every call as the harness's does and keeps nothing."""
    return Log(_Discarded())


class _Kept:
    """The sink of a MemoryLog."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []
        self.checkpoints: list[Checkpoint] = []

    def step(self, s: int, loss: float) -> None:
        self.losses.append((s, loss))

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.append(checkpoint.as_float64())  # copied at once, as the harness does (SPEC §5)

    def reject(self, message: str) -> NoReturn:
        raise LogError(message)


class MemoryLog(Log):
    """A Log that keeps every loss and a float64 copy of every checkpoint: for in-process runs and tests."""

    def __init__(self) -> None:
        self._kept = _Kept()
        super().__init__(self._kept)

    @property
    def losses(self) -> list[tuple[int, float]]:
        return self._kept.losses

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return self._kept.checkpoints

    def final_params(self) -> Arrays:
        return self.checkpoints[-1].params
