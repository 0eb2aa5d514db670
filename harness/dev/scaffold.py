"""Where submissions live: a new one started from the reference or another submission, and all there are."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from harness.contract.files import copy_files
from harness.contract.spec import validation_line
from harness.contract.submission import (
    MANIFEST,
    REFERENCE_DIR,
    Manifest,
    Submission,
    load_submission,
    reference_submission,
)
from harness.errors import LoopbenchError

SUBMISSIONS_DIR = Path("submissions")
"""Relative to where `loopbench init` runs: the repository root, where the regression tests look."""
KINDS = ("agent", "human")
"""What `init` may write as the kind; "baseline" is kept for the project's own loops."""
_REFERENCE_ONLY = ("__init__.py",)
"""The reference is a package only so that the harness can import it in-process; a submission is a folder."""


@dataclass(frozen=True)
class NewSubmission:
    path: Path
    source: Submission
    manifest: Manifest
    files: list[str]


def find_submissions(root: str | Path = SUBMISSIONS_DIR) -> list[Path]:
    """Every folder directly under `root` that holds a submission.toml, sorted by name (none if `root` is absent)."""
    return sorted(p.parent for p in Path(root).glob(f"*/{MANIFEST}") if p.is_file())


def resolve_source(source: str | Path | None, root: str | Path = SUBMISSIONS_DIR) -> Submission:
    """The submission to start from: the reference by default, else a folder path or a folder's name under `root`."""
    if source is None:
        return reference_submission()
    path = Path(source)
    if not path.exists() and (Path(root) / path).is_dir():
        path = Path(root) / path
    return load_submission(path)


def manifest_text(manifest: Manifest) -> str:
    """submission.toml for `manifest`, one commented line per key, so that it is ready to edit."""

    def value(v: object) -> str:  # a JSON string is a TOML basic string
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")

    return "\n".join(
        [
            "# The manifest of a loopbench submission (AGENT_TASK.md). "
            "Edit system, authors and description before you score.",
            f"name = {value(manifest.name)}",
            f'kind = {value(manifest.kind)}  # "agent" (written by an AI system) or "human"',
            f"system = {value(manifest.system)}  # who or what wrote it: a model name or a person's handle",
            f"authors = {value(manifest.authors)}",
            f"date = {value(str(manifest.date))}",
            f"description = {value(manifest.description)}",
            f"entrypoint = {value(manifest.entrypoint)}  # file.py:function in this folder",
            "",
        ]
    )


def new_manifest(
    name: str,
    kind: str,
    system: str,
    authors: list[str],
    description: str | None,
    source: Submission,
    today: dt.date | None = None,
) -> Manifest:
    """The manifest of a new submission, validated; a bad name or value is one clear LoopbenchError."""
    if kind not in KINDS:
        raise LoopbenchError(f"kind '{kind}' is not one of {', '.join(KINDS)}")
    fields = {
        "name": name,
        "kind": kind,
        "system": system,
        "authors": list(authors),
        "date": (today or dt.date.today()).isoformat(),
        "description": description
        or f"Started from {source.name}: say what this submission changes and why it is faster.",
        "entrypoint": source.manifest.entrypoint,
    }
    try:
        return Manifest.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        if first["loc"] == ("name",):
            raise LoopbenchError(
                f"'{name}' is not a valid submission name: use up to 80 letters, digits, '.', '_' "
                "and '-', starting with a letter or a digit"
            ) from None
        raise LoopbenchError(validation_line(err)) from None


def init_submission(
    name: str,
    source: str | Path | None = None,
    root: str | Path = SUBMISSIONS_DIR,
    kind: str = "agent",
    system: str = "unknown",
    authors: list[str] | None = None,
    description: str | None = None,
) -> NewSubmission:
    """root/NAME as a copy of `source` (default: the reference) with a new manifest, checked as `check` loads it."""
    src = resolve_source(source, root)
    manifest = new_manifest(name, kind, system, authors or [], description, src)
    target = Path(root) / name
    if target.exists():
        raise LoopbenchError(f"{target} already exists: choose another name or remove it")
    if target.resolve().is_relative_to(src.path):
        raise LoopbenchError(f"{target} would be inside {src.path}, the folder it copies")
    skip = _REFERENCE_ONLY if src.path == REFERENCE_DIR else ()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_files(src.path, src.files, target, skip=skip)  # what `src` was loaded with: no link out, no cache
        (target / MANIFEST).write_text(manifest_text(manifest), encoding="utf-8")
        new = load_submission(target)  # exactly as `check` will load it
    except OSError as err:
        shutil.rmtree(target, ignore_errors=True)
        raise LoopbenchError(f"cannot create {target}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    files = sorted(e.rel for e in new.files if e.kind != "dir")
    return NewSubmission(path=target, source=src, manifest=manifest, files=files)


def created_view(new: NewSubmission) -> tuple[dict[str, object], str]:
    """What `init` prints: the new folder, what it came from, and the two commands to run next."""
    import shlex

    folder = shlex.quote(str(new.path))
    steps = [f"loopbench check {folder}", f"loopbench score {folder}"]
    payload: dict[str, object] = {
        "name": new.manifest.name,
        "path": str(new.path),
        "from": str(new.source.path),
        "kind": new.manifest.kind,
        "files": new.files,
        "next": steps,
    }
    text = (
        f"created {new.path} from {new.source.name} ({', '.join(new.files)}); "
        f"kind {new.manifest.kind}, system {new.manifest.system}\n"
        f"edit {new.path / new.source.entry_file} (the rules: AGENT_TASK.md), then:\n"
        f"  {steps[0]:<40} # one audited run on tiny: does it still compute the same training?\n"
        f"  {steps[1]:<40} # paired timed trials against the reference on standard (several minutes)"
    )
    return payload, text
