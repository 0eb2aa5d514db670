"""The standings of a results folder: records grouped by machine, workload, budget and corpus, and their tables."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.errors import LoopbenchError
from harness.records.schema import RunRecord
from harness.records.store import load_records
from harness.report.html import Table, budget_label, machine_label, num, peak_memory, speedup_text, workload_label

Found = tuple[Path, RunRecord]


def load(results_dir: str | Path) -> tuple[list[Found], list[str]]:
    """The valid records of results_dir/runs, and one message per file skipped as corrupt or foreign."""
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise LoopbenchError(f"results folder {root} is a file, not a folder")
    if not root.is_dir():
        raise LoopbenchError(
            f"results folder not found: {root} (`loopbench score --results {root}` writes records there)"
        )
    if not (root / "runs").is_dir():
        raise LoopbenchError(f"{root} has no runs/ folder of records (loopbench score writes them there)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = load_records(root)
    return found, [str(w.message) for w in caught]


def _order(item: Found) -> tuple[str, str]:
    return item[1].created, item[0].name


def _date(record: RunRecord) -> str:
    return record.created[:10]


def _canonical(value: BaseModel) -> str:
    return json.dumps(value.model_dump(mode="json"), sort_keys=True)


def identity(record: RunRecord) -> tuple[str, str]:
    """Who a record is on the board (SPEC §10): its system and its name together, so that no record of one
    system ever stands in for another system's submission of the same name."""
    return record.submission.system, record.submission.name


def is_reference(record: RunRecord) -> bool:
    """The naive reference scored against itself: the very files of its own baseline, so no system's attempt."""
    return record.submission.file_hashes == record.baseline.file_hashes


@dataclass
class Section:
    """One machine, workload, budget and corpus: the records whose times compare with each other."""

    id: str
    machine: str
    workload: str
    budget: str
    corpus: str
    found: list[Found] = field(default_factory=list)
    """Oldest first."""

    @property
    def title(self) -> str:
        return f"{self.workload}; budget {self.budget}; corpus {self.corpus}"

    def latest_accepted(self) -> list[Found]:
        """The latest accepted record of each submission (system and name), best speedup first."""
        latest: dict[tuple[str, str], Found] = {}
        for path, rec in self.found:
            if rec.verdict == "accepted":
                latest[identity(rec)] = (path, rec)
        return sorted(latest.values(), key=lambda f: (-(f[1].speedup or 0.0), identity(f[1]), f[0].name))

    def rejected(self) -> list[Found]:
        return [f for f in self.found if f[1].verdict == "rejected"]

    def later_rejected(self, item: Found) -> bool:
        return any(identity(rec) == identity(item[1]) and _order((p, rec)) > _order(item) for p, rec in self.rejected())

    def label(self, record: RunRecord) -> str:
        """A submission's name, with its system where another system's submission in this group has the name."""
        name, system = record.submission.name, record.submission.system
        shared = any(r.submission.name == name and r.submission.system != system for _, r in self.found)
        return f"{name} ({system})" if shared else name

    def systems(self) -> list[dict[str, Any]]:
        """SPEC §8: the mean speedup over a system's attempts, a rejected one counting as 1.0x, with the pass rate.

        Every scored submission is an attempt of its system, whatever kind its manifest claims (a field the
        submitter writes); only the naive reference scored against itself is none.
        """
        attempts: dict[str, list[RunRecord]] = {}
        for _, rec in self.found:
            if not is_reference(rec):
                attempts.setdefault(rec.submission.system, []).append(rec)
        rows = []
        for system, recs in attempts.items():
            speedups = [rec.speedup if rec.verdict == "accepted" and rec.speedup else 1.0 for rec in recs]
            passed = sum(rec.verdict == "accepted" for rec in recs)
            rows.append(
                {
                    "system": system,
                    "mean_speedup": sum(speedups) / len(speedups),
                    "passed": passed,
                    "attempts": len(recs),
                    "pass_rate": passed / len(recs),
                }
            )
        return sorted(rows, key=lambda r: (-r["mean_speedup"], r["system"]))

    # ------------------------------------------------------------ the tables, as data and as text

    def accepted_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "rank": rank,
                "submission": rec.submission.name,
                "label": self.label(rec),
                "kind": rec.submission.kind,
                "system": rec.submission.system,
                "speedup": rec.speedup,
                "speedup_ci": rec.speedup_ci if len(rec.trials) > 1 else None,
                "trials": len(rec.trials),
                "x_human": rec.x_human,
                "ceiling_fraction": rec.ceiling_fraction,
                "peak_memory_mib": peak_memory(rec),
                "date": _date(rec),
                "record": f"runs/{path.name}",
                "latest_attempt_rejected": self.later_rejected((path, rec)),
            }
            for rank, (path, rec) in enumerate(self.latest_accepted(), start=1)
        ]

    def rejected_rows(self) -> list[dict[str, Any]]:
        rows = []
        for path, rec in self.rejected():
            failed = next((t.submission for t in rec.trials if not t.submission.accepted), None)
            rows.append(
                {
                    "date": _date(rec),
                    "submission": rec.submission.name,
                    "label": self.label(rec),
                    "kind": rec.submission.kind,
                    "system": rec.submission.system,
                    "check": failed.check if failed else None,
                    "reason": rec.reason,
                    "hint": failed.hint if failed else None,
                    "record": f"runs/{path.name}",
                }
            )
        return rows

    def tables(self) -> list[Table]:
        accepted = Table(
            f"{self.id}-accepted",
            "Accepted results (latest per submission)",
            [
                "rank",
                "submission",
                "kind",
                "system",
                "speedup (95% CI)",
                "x human",
                "fraction of ceiling",
                "peak memory",
                "date",
            ],
            numeric=frozenset({0, 4, 5, 6, 7}),
            empty="no accepted result yet",
        )
        for r in self.accepted_rows():
            accepted.rows.append(
                [
                    str(r["rank"]),
                    r["label"] + (" †" if r["latest_attempt_rejected"] else ""),
                    r["kind"],
                    r["system"],
                    speedup_text(r["speedup"], r["speedup_ci"], r["trials"]),
                    num(r["x_human"], ".2f", "x"),
                    num(r["ceiling_fraction"] and 100 * r["ceiling_fraction"], ".2f", "%"),
                    num(r["peak_memory_mib"], ".0f", " MiB"),
                    r["date"],
                ]
            )
        systems = Table(
            f"{self.id}-systems",
            "Systems (mean over attempts, a rejected attempt counting as 1.0x)",
            ["system", "mean speedup", "pass rate", "attempts"],
            numeric=frozenset({1, 2, 3}),
            empty="no attempt by a system yet (the reference scored against itself is none)",
        )
        for r in self.systems():
            systems.rows.append(
                [
                    r["system"],
                    f"{r['mean_speedup']:.2f}x",
                    f"{r['passed']}/{r['attempts']} ({100 * r['pass_rate']:.0f}%)",
                    str(r["attempts"]),
                ]
            )
        rejected = Table(
            f"{self.id}-rejected",
            "Rejected attempts",
            ["date", "submission", "kind", "system", "check", "reason"],
            empty="none",
        )
        for r in self.rejected_rows():
            reason = r["reason"] + (f" (hint: {r['hint']})" if r["hint"] else "")
            rejected.rows.append([r["date"], r["label"], r["kind"], r["system"], r["check"] or "–", reason])
        rejected.failed = frozenset(range(len(rejected.rows)))
        return [accepted, systems, rejected]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "machine": self.machine,
            "workload": self.workload,
            "budget": self.budget,
            "corpus": self.corpus,
            "records": len(self.found),
            "accepted": self.accepted_rows(),
            "systems": self.systems(),
            "rejected": self.rejected_rows(),
        }


@dataclass
class Machine:
    label: str
    sections: list[Section]
    gemm: list[float]

    @property
    def title(self) -> str:
        if not self.gemm:
            return self.label
        low, high = min(self.gemm), max(self.gemm)
        rate = f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"
        return f"{self.label} (measured float32 GEMM rate {rate} GFLOP/s)"


def group(found: list[Found]) -> list[Machine]:
    """Records by machine, then by workload, budget and corpus; every order fixed by the records' contents."""
    by_key: dict[tuple[str, ...], list[Found]] = {}
    for item in sorted(found, key=_order):
        rec = item[1]
        key = (
            machine_label(rec.machine),
            workload_label(rec.workload),
            _canonical(rec.workload),
            _canonical(rec.budget),
            rec.corpus.sha256,
        )
        by_key.setdefault(key, []).append(item)
    machines: dict[str, Machine] = {}
    for n, group_key in enumerate(sorted(by_key), start=1):
        items = by_key[group_key]
        first = items[0][1]
        section = Section(f"s{n}", group_key[0], group_key[1], budget_label(first.budget), first.corpus.name, items)
        machine = machines.setdefault(group_key[0], Machine(group_key[0], [], []))
        machine.sections.append(section)
        machine.gemm += [rec.machine.gemm_gflops for _, rec in items if rec.machine.gemm_gflops is not None]
    return [machines[label] for label in sorted(machines)]
