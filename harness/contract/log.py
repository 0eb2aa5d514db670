"""The `log` object a submission's train() receives (SPEC §5): one implementation, for the worker and in-process tools.

It checks what the submission hands over and passes it on to a sink: the worker's sink sends it to the
parent (and ends the process on a bad value, so that no submission can catch its own mistake and carry
on); the in-process tools' sink (MemoryLog) keeps it in memory.
"""

from __future__ import annotations

from typing import Any, NoReturn, Protocol

from harness.contract.checkpoint import Arrays, Checkpoint, CheckpointValueError, float_array


class LogSink(Protocol):
    def step(self, s: int, loss: float) -> None: ...

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """The arrays may be views of the submission's own buffers: copy before train() goes on."""

    def reject(self, message: str) -> NoReturn:
        """A value that breaks the protocol: never returns."""


class Log:
    """`log.step(s, loss)` and `log.checkpoint(s, params, m, v)`, validated and handed to a sink."""

    def __init__(self, sink: LogSink):
        self._sink = sink

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
