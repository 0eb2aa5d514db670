"""The frame of the `loopbench` command: one-line errors for every mistake, --version, the options commands share.

Nothing here imports torch, the judge or the trial: every argument is checked before any of them loads (seconds
of imports), so that a mistake is one line at once.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from harness.errors import LoopbenchError
from harness.text import one_line

F = TypeVar("F", bound=Callable[..., Any])

_CLICK = sys.modules[typer.BadParameter.__module__]
"""The exceptions of the click that typer runs on (its own copy in recent typer, click itself in older ones)."""
_NO_ARGS = getattr(_CLICK, "NoArgsIsHelpError", ())

DEFAULT_RESULTS = Path("results") / "local"
"""Where `score` writes and `leaderboard` reads unless told otherwise: a folder git ignores. The project's own
records (results/runs/, on the shipped leaderboard) are written and regenerated only with `--results results`."""


class OneLineErrors(TyperGroup):
    """The command group: a usage mistake (an unknown flag, a bad value, a missing argument) is one line on
    stderr and exit code 2, like every error a user can cause; Ctrl-C is one line and exit code 130."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except _NO_ARGS as err:  # `loopbench` alone: the help, as --help gives it
            typer.echo(err.ctx.get_help() if err.ctx else err.format_message())
            code = 0
        except _CLICK.UsageError as err:
            where = f" (see {err.ctx.command_path} --help)" if err.ctx else ""
            typer.echo(f"error: {one_line(err.format_message()).rstrip('.')}{where}", err=True)
            code = 2
        except _CLICK.ClickException as err:
            typer.echo(f"error: {one_line(err.format_message())}", err=True)
            code = err.exit_code
        except typer.Abort:
            typer.echo("interrupted", err=True)
            code = 130
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


class Command(TyperCommand):
    """A command whose help names a repeatable value `<path>...`, not typer's `<list[Path]>`."""

    def get_help(self, ctx: Any) -> str:
        return re.sub(r"<list\[(\w+)\]>", lambda m: f"<{m[1].lower()}>...", super().get_help(ctx))


def new_app() -> typer.Typer:
    app = typer.Typer(
        cls=OneLineErrors,
        help="loopbench: how much faster can a CPU training loop be made without changing the training it computes?",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: options with their value's name, flags without one
    )
    app.callback()(_options)
    return app


def _version(value: bool) -> None:
    if value:
        import importlib.metadata as md

        typer.echo(f"loopbench {md.version('loopbench')}")
        raise typer.Exit()


def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print loopbench's version and exit.")
    ] = False,
) -> None:
    """loopbench: how much faster can a CPU training loop be made without changing the training it computes?"""


def user_errors(command: F) -> F:
    """Turn a LoopbenchError into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LoopbenchError as err:
            typer.echo(f"error: {one_line(err)}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, payload: Any, text: str) -> None:
    typer.echo(json.dumps(payload, indent=2) if as_json else text)


# ---------------------------------------------------------------- the options several commands share

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
WorkloadOpt = Annotated[
    str,
    typer.Option(
        "--workload",
        "-w",
        metavar="NAME|FILE",
        help="A workload name (see `loopbench workloads`) or a path to a workload TOML file.",
    ),
]
CorpusOpt = Annotated[
    Path | None,
    typer.Option(
        "--corpus",
        metavar="FILE",
        help="A UTF-8 text file to train on instead of the default corpus (pydoc_data.topics).",
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed", metavar="N", min=0, max=2**63 - 1, help="Seed of the trial's data (default: an unpredictable one)."
    ),
]
CoresOpt = Annotated[
    int | None, typer.Option("--cores", metavar="N", min=1, help="CPU cores of the budget (default: the workload's).")
]
MemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--memory", metavar="SIZE", help="Memory budget of the whole process tree, e.g. 4G, 512M or 4096 (MiB)."
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Wall-clock limit of one run's timed phase, in seconds."),
]
MaxSizeOpt = Annotated[
    str,
    typer.Option(
        "--max-size",
        metavar="SIZE",
        help="The most a submission folder's files may hold together, checked before anything is copied "
        "(a sparse file counts at its full length), e.g. 64M or 1G.",
    ),
]
ResultsOpt = Annotated[
    Path,
    typer.Option(
        "--results",
        metavar="FOLDER",
        help="The results folder: records in its runs/. The default, results/local, is yours (git ignores it); "
        "--results results is the project's own, on the shipped leaderboard.",
    ),
]


class BusyPolicy(StrEnum):
    refuse = "refuse"
    record = "record"


BusyOpt = Annotated[
    BusyPolicy,
    typer.Option(
        "--busy",
        metavar="refuse|record",
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
        metavar="local|ray",
        help="Where the trials run: local (this machine, one after another) or ray (a Ray cluster: each timed "
        "trial on a node of its own, trials in parallel; needs the ray extra).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        metavar="HOST:PORT",
        help="With --executor ray: the Ray cluster to join (HOST:PORT of its head, or auto). Without it, a local "
        "Ray instance is started and stopped by the command.",
    ),
]
