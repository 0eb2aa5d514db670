"""A submission folder (SPEC §5): its manifest (submission.toml) and entry point, validated. Nothing here runs it."""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.contract.files import DEFAULT_MAX_BYTES, FileEntry, scan
from harness.contract.spec import validation_line
from harness.errors import LoopbenchError

MANIFEST = "submission.toml"
ENTRYPOINT = re.compile(r"^(?P<file>[A-Za-z0-9_][A-Za-z0-9_./-]*\.py):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_loop"


class Manifest(BaseModel):
    """submission.toml (SPEC §5)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Short name; letters, digits, '.', '_' and '-'."""
    kind: Literal["baseline", "human", "agent"]
    """Who wrote it: the project's own baselines, a person, or an AI agent."""
    system: str = Field(min_length=1)
    """Who or what wrote it, e.g. a model name or a person's handle."""
    authors: list[str] | str
    date: dt.date | str
    description: str
    entrypoint: str = "train.py:train"
    """`file.py:function`, relative to the submission folder."""

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, value: str) -> str:
        match = ENTRYPOINT.match(value)
        if not match or ".." in Path(match["file"]).parts:
            raise ValueError(f"'{value}' is not of the form file.py:function inside the folder")
        return value


@dataclass(frozen=True)
class Submission:
    path: Path
    manifest: Manifest
    files: tuple[FileEntry, ...] = field(default=(), repr=False)
    """What the folder held when it was loaded, checked and hashed (harness.contract.files): every copy of the
    submission is made from this list and checked against its hashes."""

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def entry_file(self) -> str:
        return self.manifest.entrypoint.split(":")[0]

    @property
    def entry_function(self) -> str:
        return self.manifest.entrypoint.split(":")[1]

    def file_hashes(self) -> dict[str, str]:
        """SHA-256 of every file in the folder (caches excluded), so a record names the exact source that ran;
        a link inside the folder has the digest of the file it leads to."""
        return {e.rel: e.sha256 for e in sorted(self.files, key=lambda e: e.rel) if e.sha256}


def load_submission(folder: str | Path, max_bytes: int | None = DEFAULT_MAX_BYTES) -> Submission:
    """A submission folder, checked: it exists, its manifest is valid, its entry point file is there, and its
    files are safe to copy (no link out of it, no special file, at most `max_bytes` of files; None: no cap)."""
    path = Path(folder)
    if not path.exists():
        raise LoopbenchError(f"submission folder not found: {path}")
    if not path.is_dir():
        raise LoopbenchError(f"not a submission folder: {path} is a file")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise LoopbenchError(f"{path} has no {MANIFEST}")
    try:
        raw = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise LoopbenchError(f"{manifest_path} is not valid TOML: {err}") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        raise LoopbenchError(f"{manifest_path}: {validation_line(err)}") from None
    sub = Submission(path=path.resolve(), manifest=manifest, files=scan(path.resolve(), max_bytes))
    if posixpath.normpath(sub.entry_file) not in sub.file_hashes():
        raise LoopbenchError(f"{manifest_path}: entrypoint file {sub.entry_file} not found in {path}")
    return sub


def reference_submission() -> Submission:
    """The naive reference, loaded like any other submission."""
    return load_submission(REFERENCE_DIR)
