"""The `loopbench` command line: parse, call one function, print. No logic of its own."""

from __future__ import annotations

import functools
import json
import signal
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from harness.errors import LoopbenchError
from harness.task.cli import task_app

if TYPE_CHECKING:
    from harness.contract.spec import Workload
    from harness.scoring.setting import Setting

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="loopbench: how much faster can a CPU training loop be made without changing the training it computes?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(task_app, name="task")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
WorkloadOpt = Annotated[
    str,
    typer.Option(
        "--workload", "-w", help="A workload name (see `loopbench workloads`) or a path to a workload TOML file."
    ),
]
CorpusOpt = Annotated[
    Path | None,
    typer.Option("--corpus", help="A UTF-8 text file to train on instead of the default corpus (pydoc_data.topics)."),
]


def _user_errors(command: F) -> F:
    """Turn a LoopbenchError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LoopbenchError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _emit(as_json: bool, payload: Any, text: str) -> None:
    typer.echo(json.dumps(payload, indent=2) if as_json else text)


@app.command()
@_user_errors
def workloads(as_json: JsonFlag = False) -> None:
    """List the workloads: sizes, parameter count, tokens and floating-point operations of a whole run."""
    from harness.report.workloads import workload_rows, workloads_text

    rows = workload_rows()
    _emit(as_json, rows, workloads_text(rows))


@app.command()
@_user_errors
def machine(
    cores: Annotated[int, typer.Option(help="Cores in the budget to measure under.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Describe this machine and measure its float32 matrix-multiply rate (the ceiling) under a budget.

    The ceiling is the median of several repeats; when they spread as only a busy machine spreads them, the
    output says so (and `score` would refuse to measure with it).
    """
    from harness.scoring.disturbance import ceiling_busy
    from harness.scoring.machine import describe

    info = describe(cores)
    info["busy"] = ceiling_busy(info)
    text = "\n".join(f"{k:>15}: {v}" for k, v in info.items() if k != "busy")
    if info["busy"]:
        text += f"\nwarning: the machine looks busy: {info['busy']}"
    _emit(as_json, info, text)


@app.command()
@_user_errors
def reference(
    workload: WorkloadOpt = "standard",
    seed: Annotated[int, typer.Option(help="Seed of the batches and the initial parameters.")] = 0,
    corpus: CorpusOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the naive reference loop once, in this process, and report its losses and time."""
    from harness.contract.spec import load_workload
    from harness.dev.reference import run_reference
    from harness.scoring.data import load_corpus

    wl = load_workload(workload)
    text_corpus = load_corpus(corpus)
    run = run_reference(wl, seed, text_corpus, progress=True)
    payload = {
        "workload": wl.name,
        "seed": seed,
        "corpus_sha256": text_corpus.sha256,
        "steps": len(run.losses),
        "first_loss": run.losses[0],
        "last_loss": run.losses[-1],
        "final_eval_loss": run.eval_loss,
        "seconds": run.seconds,
    }
    text = (
        f"reference on {wl.name} (seed {seed}, corpus {text_corpus.name}): "
        f"{len(run.losses)} steps in {run.seconds:.1f} s\n"
        f"  loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f}, held-out loss {run.eval_loss:.4f}"
    )
    _emit(as_json, payload, text)


CoresOpt = Annotated[int | None, typer.Option("--cores", help="CPU cores of the budget (default: the workload's).")]
MemoryOpt = Annotated[
    str | None, typer.Option("--memory", help="Memory budget of the whole process tree, e.g. 4G, 512M or 4096 (MiB).")
]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Wall-clock limit of one run's timed phase, in seconds.")
]


class BusyPolicy(StrEnum):
    refuse = "refuse"
    record = "record"


BusyOpt = Annotated[
    BusyPolicy,
    typer.Option(
        "--busy",
        help="A run the machine disturbed (other processes or the hypervisor took CPU from its cores): refuse "
        "(run it again, then end with 'machine busy', exit 3) or record (keep it, marked; the record is no score).",
    ),
]


class ExecutorName(StrEnum):
    local = "local"
    ray = "ray"


ExecutorOpt = Annotated[
    ExecutorName,
    typer.Option(
        "--executor",
        help="Where the trials run: local (this machine, one after another) or ray (a Ray cluster: each timed "
        "trial on a node of its own, trials in parallel; needs the ray extra).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="With --executor ray: the Ray cluster to join (HOST:PORT of its head, or auto). Without it, a local "
        "Ray instance is started and stopped by the command.",
    ),
]


def _setting(
    workload: Workload,
    corpus: Path | None,
    cores: int | None,
    memory: str | None,
    timeout: float | None,
    executor: ExecutorName,
    address: str | None,
    busy: str = "refuse",
) -> Setting:
    """The command's setting, its options checked before any work; on a cluster each node measures its own machine."""
    from harness.contract.spec import budget_with
    from harness.scoring.data import load_corpus
    from harness.scoring.setting import make_setting

    if address is not None and executor is not ExecutorName.ray:
        raise LoopbenchError("--address names a Ray cluster to join: it needs --executor ray")
    budget = budget_with(workload.budget, cores=cores, memory=memory, timeout=timeout)
    measure = executor is ExecutorName.local
    return make_setting(
        workload, budget, load_corpus(corpus), measure=measure, busy="record" if busy == "record" else "refuse"
    )


@app.command()
@_user_errors
def check(
    submission: Annotated[Path, typer.Argument(help="The submission folder (holding submission.toml).")],
    workload: WorkloadOpt = "tiny",
    seed: Annotated[int | None, typer.Option(help="Seed of the trial's data (default: an unpredictable one).")] = None,
    corpus: CorpusOpt = None,
    cores: CoresOpt = None,
    memory: MemoryOpt = None,
    timeout: TimeoutOpt = None,
    executor: ExecutorOpt = ExecutorName.local,
    address: AddressOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one trial of a submission and audit it, without timing the baseline. Exit 0 if accepted, 1 if rejected."""
    from harness.contract.spec import load_workload
    from harness.contract.submission import load_submission
    from harness.scoring.executors import open_executor
    from harness.scoring.results import check as run_check
    from harness.task.snapshot import snapshot_attempt

    sub = load_submission(submission)
    setting = _setting(load_workload(workload), corpus, cores, memory, timeout, executor, address, busy="record")
    with open_executor(executor.value, address) as ex:
        result = run_check(sub, setting, seed=seed, executor=ex)
    text = result.text()
    _emit(as_json, result.model_dump(mode="json"), text)
    snapshot_attempt(submission, "check", result.verdict, text.splitlines()[0])  # inside a task workspace only
    raise typer.Exit(0 if result.verdict == "accepted" else 1)


@app.command()
@_user_errors
def score(
    submissions: Annotated[list[Path], typer.Argument(help="One or more submission folders.")],
    workload: WorkloadOpt = "standard",
    trials: Annotated[
        int, typer.Option(min=1, help="Paired trials: each runs the baseline and every submission on one fresh seed.")
    ] = 5,
    corpus: CorpusOpt = None,
    cores: CoresOpt = None,
    memory: MemoryOpt = None,
    timeout: TimeoutOpt = None,
    results: Annotated[
        Path, typer.Option("--results", help="Folder whose runs/ receives one record per submission.")
    ] = Path("results"),
    executor: ExecutorOpt = ExecutorName.local,
    address: AddressOpt = None,
    busy: BusyOpt = BusyPolicy.refuse,
    as_json: JsonFlag = False,
) -> None:
    """Time submissions against the naive baseline in paired trials, audit every run, write the records.

    Exit 0 when every submission is accepted, 1 otherwise.
    """
    from harness.contract.spec import load_workload
    from harness.contract.submission import load_submission
    from harness.records.outputs import ScoreOutput
    from harness.scoring.executors import open_executor
    from harness.scoring.results import score as run_score
    from harness.task.snapshot import snapshot_attempt

    subs = [load_submission(s) for s in submissions]
    setting = _setting(load_workload(workload), corpus, cores, memory, timeout, executor, address, busy.value)
    with open_executor(executor.value, address) as ex:
        outcome = [
            ScoreOutput.of(rec, str(path) if path else None)
            for rec, path in run_score(subs, setting, trials, results, executor=ex)
        ]
    lines = [r.text() for r in outcome]
    _emit(as_json, [r.model_dump(mode="json") for r in outcome], "\n".join(lines))
    for folder, r, line in zip(submissions, outcome, lines, strict=True):
        snapshot_attempt(folder, "score", r.verdict, line.splitlines()[0])  # inside a task workspace only
    raise typer.Exit(0 if all(r.verdict == "accepted" for r in outcome) else 1)


class Kind(StrEnum):
    agent = "agent"
    human = "human"


ResultsOpt = Annotated[Path, typer.Option("--results", help="The results folder: records are read from its runs/.")]


@app.command()
@_user_errors
def init(
    name: Annotated[
        str, typer.Argument(help="The new submission's name, also its folder: letters, digits, '.', '_' and '-'.")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start from this submission folder (a path, or a name under --into) instead of the naive reference.",
        ),
    ] = None,
    kind: Annotated[Kind, typer.Option(help="Who writes it: an AI system (agent) or a person (human).")] = Kind.agent,
    system: Annotated[str, typer.Option(help="Who or what writes it: a model name or a person's handle.")] = "unknown",
    author: Annotated[list[str] | None, typer.Option("--author", help="An author; repeat for several.")] = None,
    description: Annotated[
        str | None, typer.Option(help="What it changes and why that is faster (editable later in submission.toml).")
    ] = None,
    into: Annotated[Path, typer.Option("--into", help="The folder that holds the submissions.")] = Path("submissions"),
    as_json: JsonFlag = False,
) -> None:
    """Start a submission: a copy of the reference (or --from another) in submissions/NAME, with a filled manifest.

    Run it from the repository root, then edit submissions/NAME/train.py and follow the two commands it prints.
    """
    import shlex

    from harness.dev.scaffold import init_submission

    new = init_submission(name, source, into, kind.value, system, author or [], description)
    folder = shlex.quote(str(new.path))
    steps = [f"loopbench check {folder}", f"loopbench score {folder}"]
    payload = {
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
    _emit(as_json, payload, text)


@app.command()
@_user_errors
def leaderboard(results: ResultsOpt = Path("results"), as_json: JsonFlag = False) -> None:
    """Regenerate LEADERBOARD.md and leaderboard.html in the results folder from its records alone."""
    from harness.report.leaderboard import write_leaderboard

    outcome = write_leaderboard(results)
    for message in outcome["skipped"]:
        typer.echo(f"warning: {message}", err=True)
    text = (
        f"wrote {outcome['markdown']} and {outcome['html']}: {outcome['records']} record(s) "
        f"in {len(outcome['sections'])} group(s)"
        + (f", {len(outcome['skipped'])} file(s) skipped" if outcome["skipped"] else "")
    )
    _emit(as_json, outcome, text)


@app.command()
@_user_errors
def report(
    record: Annotated[Path, typer.Argument(help="A run record (a JSON file under results/runs/).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The HTML file to write (default: results/reports/NAME.html for results/runs/NAME.json, "
            "else beside the record).",
        ),
    ] = None,
) -> None:
    """Write one run's page: its trials, the audit of every segment, its loss curves, memory and CPU use."""
    from harness.report.run_page import write_run_page

    typer.echo(f"wrote {write_run_page(record, out)}")


class SchemaName(StrEnum):
    all = "all"
    record = "record"
    check = "check"
    score = "score"


@app.command()
def schema(
    which: Annotated[
        SchemaName,
        typer.Argument(
            help="record (a run record under results/runs/), check or score "
            "(what `check --json` and `score --json` print), or all three."
        ),
    ] = SchemaName.all,
) -> None:
    """Print the JSON Schema of a run record, and of what `check --json` and `score --json` print."""
    from harness.records.outputs import schemas

    found = schemas()
    typer.echo(json.dumps(found if which is SchemaName.all else found[which.value], indent=2))


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP end a command as Ctrl-C does: the trial is ended and its folder removed."""
    raise KeyboardInterrupt


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    app()


if __name__ == "__main__":
    main()
