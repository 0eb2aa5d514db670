"""`loopbench task`: the sealed task's commands (export a workspace, grade an attempt, draw its timeline)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from harness.command import BusyOpt, BusyPolicy
from harness.errors import LoopbenchError

if TYPE_CHECKING:
    from harness.task.grade import Graded

task_app = typer.Typer(
    help="The sealed task: export a workspace for one attempt, then grade the attempt from outside it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
Headlines = Annotated[
    list[str] | None,
    typer.Option(
        "--workload",
        "-w",
        metavar="NAME",
        help="A headline workload (a name from `loopbench workloads`); repeat for several. Default: standard.",
    ),
]
ResultsOpt = Annotated[
    Path,
    typer.Option(
        "--results",
        metavar="FOLDER",
        help="Folder whose runs/ receives the records and reports/ the timeline (default: results/local, yours; git"
        " ignores it; --results results is the project's own leaderboard).",
    ),
]

LadderOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FOLDER",
        help="Folder whose records give the ladder's reference lines (default: results, the project's own).",
    ),
]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A LoopbenchError is one line on stderr and exit code 2, as everywhere in loopbench."""
    try:
        yield
    except LoopbenchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _headlines(names: list[str] | None) -> list[Any]:
    from harness.contract.spec import load_workload, workload_names

    chosen = names or ["standard"]
    for name in chosen:
        if name.endswith(".toml") or "/" in name:
            raise LoopbenchError(f"a headline is a shipped workload's name ({', '.join(workload_names())}), not {name}")
    return [load_workload(name) for name in dict.fromkeys(chosen)]


def _emit(as_json: bool, payload: Any, text: str) -> None:
    typer.echo(json.dumps(payload, indent=2) if as_json else text)


@task_app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="The new workspace: a folder that does not exist yet, or is empty.")],
    workload: Headlines = None,
    variants: Annotated[
        int,
        typer.Option(
            metavar="N", min=0, help="Public variant workloads (other sizes) to put in the workspace's workloads/."
        ),
    ] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Make a fresh git repository for one attempt: the brief, the reference, submissions/mine, the workloads.

    Nothing else of the project goes in: no shipped submission, test, record or note. Give the folder to the
    attempt; when its time is up, grade it from outside with `loopbench task grade`.
    """
    from harness.task.export import export_workspace

    with _one_line_errors():
        done = export_workspace(folder, _headlines(workload), variants)
    for warning in done.warnings:
        typer.echo(f"warning: {warning}", err=True)
    payload = {
        "path": str(done.path),
        "commit": done.commit,
        "files": done.files,
        "marker": done.marker.model_dump(mode="json"),
    }
    where = shlex.quote(str(done.path))
    text = (
        f"exported {done.path}: {len(done.files)} files, headline {', '.join(done.marker.headline)}, "
        f"{len(done.marker.public_variants)} public variant(s), commit {done.commit[:12]}\n"
        f"  the attempt starts now ({done.marker.exported}); it reads {where}/BRIEF.md and runs, in {where}:\n"
        f"  loopbench check submissions/mine\n"
        f"  when its time is up, grade it from outside: loopbench task grade {where}"
    )
    _emit(as_json, payload, text)


def _state_line(graded: Graded, index: int) -> str:
    state = graded.states[index]
    records = graded.records[state.index]
    label = "working tree" if state.state == "working-tree" else state.state[:12]
    final = ", final" if state.final else ""
    elapsed = graded.info(state).elapsed_seconds
    head = f"#{state.index} {label} at {int(elapsed) // 60}m{int(elapsed) % 60:02d}s{final}:"
    score = graded.score(state)
    if score is not None:
        parts = ", ".join(f"{r.workload.name} {r.speedup:.2f}x" for r in records if r.speedup)
        return f"{head} score {score:.2f}x ({parts})"
    rejected = next(r for r in records if r.verdict != "accepted")
    return f"{head} REJECTED on {rejected.workload.name}: {rejected.reason}"


def _grade_payload(graded: Graded) -> dict[str, Any]:
    return {
        "attempt": graded.attempt,
        "graded": graded.graded,
        "score": graded.score(graded.final),
        "workloads": [
            {"name": p.workload.name, "headline": p.headline.name, "variant_seed": p.variant_seed} for p in graded.plan
        ],
        "states": [
            {
                **graded.info(s).model_dump(mode="json"),
                "verdicts": {r.workload.name: r.verdict for r in graded.records[s.index]},
                "speedups": {r.workload.name: r.speedup for r in graded.records[s.index]},
            }
            for s in graded.states
        ],
        "records": [str(p) for p in graded.paths],
        "timeline": str(graded.timeline),
    }


@task_app.command()
def grade(
    folder: Annotated[Path, typer.Argument(help="The attempt's workspace, as `loopbench task export` made it.")],
    trials: Annotated[
        int, typer.Option(metavar="N", min=1, help="Paired trials per workload, each on a fresh seed.")
    ] = 3,
    every: Annotated[
        int,
        typer.Option(
            metavar="K", min=0, help="Grade every K-th snapshot besides the final state (0: the final state only)."
        ),
    ] = 1,
    variants: Annotated[
        int,
        typer.Option(metavar="N", min=1, help="Held-out variant workloads per headline, drawn now from a fresh seed."),
    ] = 2,
    workload: Headlines = None,
    results: ResultsOpt = Path("results/local"),
    ladder: LadderOpt = None,
    system: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Who made the attempt, for the records (default: its submission.toml's)."),
    ] = None,
    busy: BusyOpt = BusyPolicy.refuse,
    as_json: JsonFlag = False,
) -> None:
    """Re-score an attempt from outside its workspace; write its records (kind agent) and its timeline page.

    The final state and every K-th snapshot are copied out of the workspace and scored on fresh seeds, on the
    headline and on held-out variants drawn now. Exit 0 when the final state is accepted, 1 when it is rejected.
    """
    from harness.task.grade import grade_attempt

    with _one_line_errors():
        graded = grade_attempt(
            folder,
            _headlines(workload),
            results,
            trials,
            every,
            variants,
            system,
            ladder,
            sys.stderr.isatty(),
            busy="record" if busy is BusyPolicy.record else "refuse",
        )
    for warning in graded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    final_score = graded.score(graded.final)
    lines = [_state_line(graded, i) for i in range(len(graded.states))]
    lines.append(
        f"attempt {graded.attempt}: "
        + (f"score {final_score:.2f}x" if final_score is not None else "REJECTED")
        + f" (final state); {len(graded.paths)} records under {results / 'runs'}, timeline {graded.timeline}"
    )
    _emit(as_json, _grade_payload(graded), "\n".join(lines))
    raise typer.Exit(0 if final_score is not None else 1)


@task_app.command()
def timeline(
    attempt: Annotated[str, typer.Argument(help="The attempt's id (12 hex digits, as `task grade` printed it).")],
    results: ResultsOpt = Path("results/local"),
    ladder: LadderOpt = None,
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The page (default: RESULTS/reports/attempt-ID.html).")
    ] = None,
) -> None:
    """Write an attempt's timeline page again from the records of its latest grade (byte for byte the same)."""
    from harness.report.attempts import write_timeline
    from harness.report.standings import load
    from harness.task.grade import PROJECT_RESULTS

    with _one_line_errors():
        load(results)  # one line if the folder or its runs/ is missing
        if ladder is not None:
            load(ladder)
        typer.echo(f"wrote {write_timeline(results, attempt, ladder or PROJECT_RESULTS, out)}")
