"""The `loopbench` command line: parse, check every argument, call one function, print. No logic of its own.

Each command checks all its arguments before it imports torch, the judge or the trial (seconds of imports) or
measures anything, so that a mistake is one line at once (harness.command holds the frame and shared options).
"""

from __future__ import annotations

import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harness.command import (
    DEFAULT_RESULTS,
    AddressOpt,
    BusyOpt,
    BusyPolicy,
    Command,
    CoresOpt,
    CorpusOpt,
    ExecutorName,
    ExecutorOpt,
    JsonFlag,
    MaxSizeOpt,
    MemoryOpt,
    ResultsOpt,
    SeedOpt,
    TimeoutOpt,
    WorkloadOpt,
    emit,
    new_app,
    user_errors,
)
from harness.contract.files import DEFAULT_MAX_BYTES, size_text
from harness.errors import LoopbenchError
from harness.task.cli import task_app
from harness.text import one_line

if TYPE_CHECKING:
    from harness.contract.spec import Budget, Workload
    from harness.scoring.data import Corpus
    from harness.scoring.setting import Setting

app = new_app()
app.add_typer(task_app, name="task")
DEFAULT_MAX_SIZE = size_text(DEFAULT_MAX_BYTES).replace(" MiB", "M")


@app.command(cls=Command)
@user_errors
def workloads(as_json: JsonFlag = False) -> None:
    """List the workloads: sizes, parameter count, tokens and floating-point operations of a whole run."""
    from harness.report.workloads import workload_rows, workloads_text

    rows = workload_rows()
    emit(as_json, rows, workloads_text(rows))


@app.command(cls=Command)
@user_errors
def machine(
    cores: Annotated[int, typer.Option(metavar="N", min=1, help="Cores in the budget to measure under.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Describe this machine and measure its float32 matrix-multiply rate (the ceiling) under a budget.

    The ceiling is the median of several repeats; when other processes took the budget's cores meanwhile, or
    the repeats spread as only a busy machine spreads them, the output says so (`score` would refuse it).
    """
    from harness.contract.cores import budget_cpus
    from harness.scoring.disturbance import ceiling_busy
    from harness.scoring.machine import describe
    from harness.scoring.progress import phase

    budget_cpus(cores)
    with phase(f"measuring the float32 GEMM rate on {cores} core{'s' if cores > 1 else ''}", enabled=True):
        info = describe(cores)
    info["busy"] = ceiling_busy(info)
    text = "\n".join(f"{k:>17}: {v}" for k, v in info.items() if k != "busy")
    if info["busy"]:
        text += f"\nwarning: the machine looks busy: {info['busy']}"
    emit(as_json, info, text)


@app.command(cls=Command)
@user_errors
def reference(
    workload: WorkloadOpt = "standard",
    seed: Annotated[
        int, typer.Option(metavar="N", min=0, max=2**63 - 1, help="Seed of the batches and the initial parameters.")
    ] = 0,
    corpus: CorpusOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the naive reference loop once, in this process, and report its losses and time."""
    from harness.contract.spec import load_workload
    from harness.scoring.data import check_corpus_fits, load_corpus

    wl = load_workload(workload)
    text_corpus = load_corpus(corpus)
    check_corpus_fits(text_corpus, wl.task())
    from harness.dev.reference import run_reference  # torch, once every argument is known to be good

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
    emit(as_json, payload, text)


def _inputs(
    workload: str,
    corpus: Path | None,
    cores: int | None,
    memory: str | None,
    timeout: float | None,
    executor: ExecutorName,
    address: str | None,
) -> tuple[Workload, Budget, Corpus]:
    """A run's arguments, every one checked, before anything heavy is imported or measured."""
    from harness.contract.cores import budget_cpus
    from harness.contract.spec import budget_with, load_workload
    from harness.scoring.data import check_corpus_fits, load_corpus

    if address is not None and executor is not ExecutorName.ray:
        raise LoopbenchError("--address names a Ray cluster to join: it needs --executor ray")
    wl = load_workload(workload)
    budget = budget_with(wl.budget, cores=cores, memory=memory, timeout=timeout)
    if executor is ExecutorName.local:  # on a cluster each node has its own cores
        budget_cpus(budget.cores)
    text = load_corpus(corpus)
    check_corpus_fits(text, wl.task())
    return wl, budget, text


def _setting(wl: Workload, budget: Budget, corpus: Corpus, executor: ExecutorName, busy: str = "refuse") -> Setting:
    """The command's setting; on this machine its ceiling is measured now, on a cluster each node measures its own."""
    from harness.scoring.progress import phase
    from harness.scoring.setting import make_setting

    local = executor is ExecutorName.local
    with phase(f"measuring this machine's float32 GEMM rate on {budget.cores} cores (the ceiling)", enabled=local):
        return make_setting(wl, budget, corpus, measure=local, busy="record" if busy == "record" else "refuse")


def _max_bytes(max_size: str) -> int:
    from harness.contract.spec import parse_memory_mib

    return parse_memory_mib(max_size, what="--max-size") * 2**20


@app.command(cls=Command)
@user_errors
def check(
    submission: Annotated[
        Path, typer.Argument(metavar="SUBMISSION", help="The submission folder (holding submission.toml).")
    ],
    workload: WorkloadOpt = "tiny",
    seed: SeedOpt = None,
    corpus: CorpusOpt = None,
    cores: CoresOpt = None,
    memory: MemoryOpt = None,
    timeout: TimeoutOpt = None,
    max_size: MaxSizeOpt = DEFAULT_MAX_SIZE,
    executor: ExecutorOpt = ExecutorName.local,
    address: AddressOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one trial of a submission and audit it, without timing the baseline. Exit 0 if accepted, 1 if rejected."""
    from harness.contract.submission import load_submission

    sub = load_submission(submission, _max_bytes(max_size))
    # a check times nothing it compares: a busy machine marks its run and refuses nothing
    setting = _setting(*_inputs(workload, corpus, cores, memory, timeout, executor, address), executor, "record")
    from harness.scoring.executors import open_executor  # torch and the judge, once every argument is good
    from harness.scoring.results import check as run_check
    from harness.task.snapshot import snapshot_attempt

    with open_executor(executor.value, address) as ex:
        result = run_check(sub, setting, seed=seed, executor=ex)
    text = result.text()
    emit(as_json, result.model_dump(mode="json"), text)
    snapshot_attempt(submission, "check", result.verdict, text.splitlines()[0])  # inside a task workspace only
    raise typer.Exit(0 if result.verdict == "accepted" else 1)


@app.command(cls=Command)
@user_errors
def score(
    submissions: Annotated[list[Path], typer.Argument(metavar="SUBMISSION", help="One or more submission folders.")],
    workload: WorkloadOpt = "standard",
    trials: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, help="Paired trials: each runs the baseline and every submission on one fresh seed."
        ),
    ] = 5,
    corpus: CorpusOpt = None,
    cores: CoresOpt = None,
    memory: MemoryOpt = None,
    timeout: TimeoutOpt = None,
    max_size: MaxSizeOpt = DEFAULT_MAX_SIZE,
    results: ResultsOpt = DEFAULT_RESULTS,
    executor: ExecutorOpt = ExecutorName.local,
    address: AddressOpt = None,
    busy: BusyOpt = BusyPolicy.refuse,
    as_json: JsonFlag = False,
) -> None:
    """Time submissions against the naive baseline in paired trials, audit every run, write one record each.

    The records go to results/local/runs/ unless --results says otherwise. Exit 0 when every submission is
    accepted, 1 otherwise.
    """
    from harness.contract.submission import load_submission
    from harness.records.store import runs_folder

    subs = [load_submission(s, _max_bytes(max_size)) for s in submissions]
    runs_folder(results)  # made now, so that a folder that cannot take records fails before the trials
    setting = _setting(*_inputs(workload, corpus, cores, memory, timeout, executor, address), executor, busy.value)
    from harness.records.outputs import ScoreOutput  # torch and the judge, once every argument is good
    from harness.scoring.executors import open_executor
    from harness.scoring.results import score as run_score
    from harness.task.snapshot import snapshot_attempt

    with open_executor(executor.value, address) as ex:
        outcome = [
            ScoreOutput.of(rec, str(path) if path else None)
            for rec, path in run_score(subs, setting, trials, results, executor=ex)
        ]
    lines = [r.text() for r in outcome]
    emit(as_json, [r.model_dump(mode="json") for r in outcome], "\n".join(lines))
    for folder, r, line in zip(submissions, outcome, lines, strict=True):
        snapshot_attempt(folder, "score", r.verdict, line.splitlines()[0])  # inside a task workspace only
    raise typer.Exit(0 if all(r.verdict == "accepted" for r in outcome) else 1)


class Kind(StrEnum):
    agent = "agent"
    human = "human"


@app.command(cls=Command)
@user_errors
def init(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="The new submission's name, also its folder: letters, digits, '.', '_' and '-'."
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="FOLDER",
            help="Start from this submission folder (a path, or a name under --into) instead of the naive reference.",
        ),
    ] = None,
    kind: Annotated[
        Kind, typer.Option(metavar="agent|human", help="Who writes it: an AI system (agent) or a person (human).")
    ] = Kind.agent,
    system: Annotated[
        str, typer.Option(metavar="NAME", help="Who or what writes it: a model name or a person's handle.")
    ] = "unknown",
    author: Annotated[
        list[str] | None, typer.Option("--author", metavar="NAME", help="An author; repeat for several.")
    ] = None,
    description: Annotated[
        str | None,
        typer.Option(
            metavar="TEXT", help="What it changes and why that is faster (editable later in submission.toml)."
        ),
    ] = None,
    into: Annotated[
        Path, typer.Option("--into", metavar="FOLDER", help="The folder that holds the submissions.")
    ] = Path("submissions"),
    as_json: JsonFlag = False,
) -> None:
    """Start a submission: a copy of the reference (or --from another) in submissions/NAME, with a filled manifest.

    Run it from the repository root, then edit submissions/NAME/train.py and follow the two commands it prints.
    """
    from harness.dev.scaffold import created_view, init_submission

    new = init_submission(name, source, into, kind.value, system, author or [], description)
    emit(as_json, *created_view(new))


@app.command(cls=Command)
@user_errors
def leaderboard(results: ResultsOpt = DEFAULT_RESULTS, as_json: JsonFlag = False) -> None:
    """Regenerate LEADERBOARD.md and leaderboard.html in a results folder from its records alone.

    Without --results, your own folder (results/local); `--results results` regenerates the project's shipped
    leaderboard from its committed records.
    """
    from harness.report.leaderboard import write_leaderboard

    outcome = write_leaderboard(results)
    for message in outcome["skipped"]:
        typer.echo(f"warning: {one_line(message)}", err=True)
    text = (
        f"wrote {outcome['markdown']} and {outcome['html']}: {outcome['records']} record(s) "
        f"in {len(outcome['sections'])} group(s)"
        + (f", {len(outcome['skipped'])} file(s) skipped" if outcome["skipped"] else "")
    )
    emit(as_json, outcome, text)


@app.command(cls=Command)
@user_errors
def report(
    record: Annotated[
        Path, typer.Argument(metavar="RECORD", help="A run record (a JSON file under a results folder's runs/).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="The HTML file to write (default: FOLDER/reports/NAME.html for FOLDER/runs/NAME.json, "
            "else beside the record).",
        ),
    ] = None,
) -> None:
    """Write one run's page: its trials, the audit of every segment, its losses, memory and CPU use."""
    from harness.report.run_page import write_run_page

    typer.echo(f"wrote {write_run_page(record, out)}")


class SchemaName(StrEnum):
    all = "all"
    record = "record"
    check = "check"
    score = "score"


@app.command(cls=Command)
def schema(
    which: Annotated[
        SchemaName,
        typer.Argument(
            metavar="WHICH",
            help="record (a run record under a results folder's runs/), check or score "
            "(what `check --json` and `score --json` print), or all three.",
        ),
    ] = SchemaName.all,
) -> None:
    """Print the JSON Schema of a run record, and of what `check --json` and `score --json` print."""
    import json

    from harness.records.outputs import schemas

    found = schemas()
    typer.echo(json.dumps(found if which is SchemaName.all else found[which.value], indent=2))


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP end a command as Ctrl-C does: the trial is ended and its folder removed."""
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end a command as Ctrl-C does, unless the command was started ignoring them.

    A signal ignored on entry stays ignored: `nohup` ignores SIGHUP so that a score outlives its terminal, and
    a shell without job control starts `cmd &` ignoring SIGINT. Python itself keeps an inherited ignored SIGINT.
    """
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _terminate)


def main() -> None:
    install_signal_handlers()
    app()


if __name__ == "__main__":
    main()
