"""The record store: atomic, never-clobbering writes; loading that upgrades old files and skips bad ones by name."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import tempfile
import warnings
from pathlib import Path

from pydantic import ValidationError

from harness.contract.spec import validation_line
from harness.errors import LoopbenchError
from harness.records.schema import RunRecord
from harness.records.upgrade import RecordVersionError, upgraded


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def record_filename(record: RunRecord) -> str:
    stamp = record.created.replace(":", "").replace("-", "").split(".")[0]
    return f"{record.submission.name}--{record.workload.name}--{stamp}--{secrets.token_hex(3)}.json"


def record_bytes(record: RunRecord) -> bytes:
    return json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True).encode("utf-8") + b"\n"


def runs_folder(results_dir: str | Path) -> Path:
    """results_dir/runs, made if missing; a LoopbenchError in one line where it cannot hold records."""
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise LoopbenchError(f"results folder {root} is a file, not a folder")
    runs = root / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LoopbenchError(f"cannot make the records folder {runs}: {err.strerror or err}") from None
    if not os.access(runs, os.W_OK | os.X_OK):
        raise LoopbenchError(f"cannot write records into {runs}: permission denied")
    return runs


def write_page(path: Path, body: bytes) -> None:
    """A generated page (a leaderboard, a run's page) written whole or not at all: a hidden temporary file beside
    it, then renamed over it; a one-line LoopbenchError where it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as err:
        raise LoopbenchError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        raise LoopbenchError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_record(record: RunRecord, results_dir: str | Path) -> Path:
    """Write atomically and never over another file: a hidden temporary file, then a hard link to the final name.

    A crash or kill at any moment leaves either no record or the whole record (plus, at worst, a hidden
    `.partial` file that loading ignores); two writers at once get different names.
    """
    runs = runs_folder(results_dir)
    fd, tmp = tempfile.mkstemp(dir=runs, prefix=".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(record_bytes(record))
            f.flush()
            os.fsync(f.fileno())
        while True:
            final = runs / record_filename(record)
            try:
                os.link(tmp, final)
                break
            except FileExistsError:
                continue
        dir_fd = os.open(runs, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final
    finally:
        os.unlink(tmp)


class RecordError(ValueError):
    """A file that is not a record this loopbench can read; the message says why in one line."""


def parse_record(body: bytes) -> RunRecord:
    """A record from its bytes, upgraded from an older version where needed; RecordError says what is wrong."""
    try:
        raw = json.loads(body)
    except UnicodeDecodeError:
        raise RecordError("it is not text (not UTF-8)") from None
    except ValueError as err:
        raise RecordError(f"it is not JSON ({err.args[0] if err.args else err})") from None
    try:
        return RunRecord.model_validate(upgraded(raw))
    except RecordVersionError as err:
        raise RecordError(str(err)) from None
    except ValidationError as err:
        raise RecordError(validation_line(err)) from None


def read_record(path: str | Path) -> RunRecord:
    """One record file, or a one-line LoopbenchError saying why it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise LoopbenchError(f"{path} is a folder, not a record file")
    if not path.is_file():
        raise LoopbenchError(f"record file not found: {path}")
    try:
        return parse_record(path.read_bytes())
    except (RecordError, OSError) as err:
        raise LoopbenchError(f"{path} is not a loopbench record: {err}") from None


def load_records(results_dir: str | Path) -> list[tuple[Path, RunRecord]]:
    """Every valid record under results_dir/runs; a corrupt or foreign file is skipped with a warning naming it."""
    runs = Path(results_dir) / "runs"
    found = []
    for path in sorted(runs.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            found.append((path, parse_record(path.read_bytes())))
        except (RecordError, OSError) as err:
            warnings.warn(f"skipping {path}: not a loopbench record ({err})", stacklevel=2)
    return found
