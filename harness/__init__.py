"""loopbench: how much faster can a CPU training loop be made without changing the training it computes?

The public surface of the harness, for programs that drive it without the command line. Names are loaded
on first use, so `import harness` costs nothing and pulls in neither torch nor the judge.

    from harness import check, load_submission, load_workload, make_setting, load_corpus
    workload = load_workload("tiny")
    setting = make_setting(workload, workload.budget, load_corpus())
    print(check(load_submission("submissions/mine"), setting).verdict)
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LoopbenchError": "harness.errors",
    "Workload": "harness.contract.spec",
    "Budget": "harness.contract.spec",
    "Task": "harness.contract.spec",
    "Tolerances": "harness.contract.spec",
    "load_workload": "harness.contract.spec",
    "workload_names": "harness.contract.spec",
    "Submission": "harness.contract.submission",
    "load_submission": "harness.contract.submission",
    "Check": "harness.contract.checks",
    "Checkpoint": "harness.contract.checkpoint",
    "MemoryLog": "harness.contract.log",
    "load_corpus": "harness.scoring.data",
    "make_setting": "harness.scoring.setting",
    "check": "harness.scoring.results",
    "score": "harness.scoring.results",
    "RunRecord": "harness.records.schema",
    "CheckOutput": "harness.records.outputs",
    "ScoreOutput": "harness.records.outputs",
    "load_records": "harness.records.store",
    "read_record": "harness.records.store",
    "write_leaderboard": "harness.report.leaderboard",
}

__all__ = [
    "Budget",
    "Check",
    "CheckOutput",
    "Checkpoint",
    "LoopbenchError",
    "MemoryLog",
    "RunRecord",
    "ScoreOutput",
    "Submission",
    "Task",
    "Tolerances",
    "Workload",
    "check",
    "load_corpus",
    "load_records",
    "load_submission",
    "load_workload",
    "make_setting",
    "read_record",
    "score",
    "workload_names",
    "write_leaderboard",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return __all__
