"""Reading a record of any version: upgrade steps from each old version to the next, and a refusal of newer files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.records.schema import RECORD_VERSION

Raw = dict[str, Any]

UPGRADES: dict[int, Callable[[Raw], Raw]] = {}
"""UPGRADES[n] turns a version-n record's JSON into a version n+1 one. Version 1 is the first: none yet."""


class RecordVersionError(ValueError):
    """A record this code cannot read: written by a newer loopbench, or with no version at all."""


def upgraded(raw: Raw) -> Raw:
    """The record's JSON brought up to RECORD_VERSION, one step at a time."""
    version = raw.get("version") if isinstance(raw, dict) else None
    if type(version) is not int or version < 1:
        raise RecordVersionError("it has no record version")
    if version > RECORD_VERSION:
        raise RecordVersionError(
            f"it is a version {version} record, newer than this loopbench reads "
            f"(up to version {RECORD_VERSION}): upgrade loopbench to read it"
        )
    while version < RECORD_VERSION:
        raw = UPGRADES[version](raw)
        version += 1
        raw["version"] = version
    return raw
