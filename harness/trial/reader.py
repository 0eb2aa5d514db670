"""The parent's reader of the worker's headers, turning bytes into typed events; nothing it reads is trusted."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from harness.contract import protocol, wire
from harness.contract.spec import Task, param_shapes


@dataclass(frozen=True)
class Arrived:
    """A valid message (a checkpoint's arrays are in the log area, read after the clock)."""

    message: protocol.Message
    at: float


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
    """Reads headers until the stream ends, each validated against the task before it becomes an event."""

    def __init__(self, fd: int, task: Task):
        super().__init__(daemon=True)
        self.fd = fd
        self.shapes = param_shapes(task)
        self.events: queue.Queue[Event] = queue.Queue()

    def run(self) -> None:
        previous: protocol.CheckpointMessage | None = None
        try:
            while True:
                message = protocol.parse_message(wire.read_header(self.fd), self.shapes, previous)
                if isinstance(message, protocol.CheckpointMessage):
                    previous = message
                self.events.put(Arrived(message, time.perf_counter()))
        except (EOFError, OSError):
            self.events.put(Ended(time.perf_counter()))
        except (wire.WireError, protocol.ProtocolError) as err:
            self.events.put(Violated(str(err), time.perf_counter()))
        except Exception as err:  # noqa: BLE001 - whatever the bytes were, they are the worker's fault
            self.events.put(Violated(f"an unreadable message ({type(err).__name__})", time.perf_counter()))
