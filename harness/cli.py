"""The `loopbench` command line: parse, call one function, print. No logic of its own."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from harness.errors import LoopbenchError

app = typer.Typer(
    help="loopbench: how much faster can a CPU training loop be made without changing the training it computes?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
WorkloadOpt = Annotated[str, typer.Option("--workload", "-w", help="A workload name (see `loopbench workloads`) or a path to a workload TOML file.")]
CorpusOpt = Annotated[Optional[Path], typer.Option("--corpus", help="A UTF-8 text file to train on instead of the default corpus (pydoc_data.topics).")]


def _user_errors(command: Callable) -> Callable:
    """Turn a LoopbenchError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LoopbenchError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _emit(as_json: bool, payload, text: str) -> None:
    typer.echo(json.dumps(payload, indent=2) if as_json else text)


@app.command()
@_user_errors
def workloads(as_json: JsonFlag = False) -> None:
    """List the workloads: sizes, parameter count, tokens and floating-point operations of a whole run."""
    from harness.report import workload_rows, workloads_text

    rows = workload_rows()
    _emit(as_json, rows, workloads_text(rows))


@app.command()
@_user_errors
def machine(
    cores: Annotated[int, typer.Option(help="Cores in the budget to measure under.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Describe this machine and measure its float32 matrix-multiply rate (the ceiling) under a budget."""
    from harness.machine import describe

    info = describe(cores)
    text = "\n".join(f"{k:>15}: {v}" for k, v in info.items())
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
    from harness.data import load_corpus
    from harness.local import run_reference
    from harness.spec import load_workload

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
        f"reference on {wl.name} (seed {seed}, corpus {text_corpus.name}): {len(run.losses)} steps in {run.seconds:.1f} s\n"
        f"  loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f}, held-out loss {run.eval_loss:.4f}"
    )
    _emit(as_json, payload, text)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
