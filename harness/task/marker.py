"""The task marker at a workspace's root: when it was exported, its headline, its public variants, which harness."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MARKER = ".loopbench-task.json"
SUBMISSION = "submissions/mine"
"""The attempt's submission folder, relative to the workspace: the one folder that is graded."""


class Marker(BaseModel):
    """What `loopbench task export` wrote. The workspace can change it: grading never relies on it for a score."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    format: int = 1
    exported: str
    """UTC time of the export, ISO 8601: the attempt's time zero."""
    headline: list[str]
    """The headline workloads the attempt is scored on."""
    public_variants: list[str] = Field(default_factory=list)
    """Workload files of the workspace (under workloads/) with other sizes, for the attempt to test on."""
    submission: str = SUBMISSION
    loopbench_version: str | None = None
    loopbench_commit: str | None = None
    loopbench_dirty: bool | None = None

    def started(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.exported)

    def text(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1) + "\n"


def parse_marker(text: str) -> Marker | None:
    """The marker from its text, or None where it is not one (a workspace may have damaged it)."""
    try:
        marker = Marker.model_validate_json(text)
        marker.started()
    except (ValidationError, ValueError):
        return None
    return marker


def find_workspace(folder: Path) -> Path | None:
    """The task workspace holding `folder` (the nearest folder upwards with a marker), or None."""
    here = folder.resolve()
    for candidate in (here, *here.parents):
        if (candidate / MARKER).is_file():
            return candidate
    return None


def elapsed_text(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
