"""The parent's reader of the worker's frames, turning bytes into typed events; nothing it reads is trusted."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from harness.contract import protocol, wire
from harness.contract.checkpoint import GROUPS, Arrays, Checkpoint
from harness.contract.spec import Task, param_shapes


@dataclass(frozen=True)
class Arrived:
    """A valid message; a checkpoint's arrays as sent (float32 or float64, converted after the clock)."""

    message: protocol.Message
    at: float
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class Ended:
    """The worker's stream ended (it exited, or closed its end)."""

    at: float


@dataclass(frozen=True)
class Violated:
    """Bytes that break the protocol; the reader stops at the first."""

    message: str
    at: float


@dataclass(frozen=True)
class TimedOut:
    at: float


@dataclass(frozen=True)
class OverMemory:
    at: float


Event = Arrived | Ended | Violated | TimedOut | OverMemory


class Reader(threading.Thread):
    """Reads frames until the stream ends; checkpoint headers are validated before their payload is read."""

    def __init__(self, fd: int, task: Task):
        super().__init__(daemon=True)
        self.fd = fd
        self.shapes = param_shapes(task)
        self.events: queue.Queue[Event] = queue.Queue()

    def run(self) -> None:
        try:
            while True:
                message = protocol.parse_message(wire.read_header(self.fd), self.shapes)
                checkpoint = self._read_arrays(message) if isinstance(message, protocol.CheckpointMessage) else None
                self.events.put(Arrived(message, time.perf_counter(), checkpoint))
        except (EOFError, OSError):
            self.events.put(Ended(time.perf_counter()))
        except (wire.WireError, protocol.ProtocolError) as err:
            self.events.put(Violated(str(err), time.perf_counter()))
        except Exception as err:  # noqa: BLE001 - whatever the bytes were, they are the worker's fault
            self.events.put(Violated(f"an unreadable message ({type(err).__name__})", time.perf_counter()))

    def _read_arrays(self, message: protocol.CheckpointMessage) -> Checkpoint:
        groups: dict[str, Arrays] = {g: {} for g in GROUPS}
        for spec in message.tensors:
            raw = wire.read_exact(self.fd, spec.nbytes) if spec.nbytes else bytearray()
            groups[spec.group][spec.name] = np.frombuffer(raw, dtype=spec.dtype).reshape(spec.shape)
        return Checkpoint.of(message.s, groups)
