"""What every command shares: the Typer apps, the consoles (only the CLI prints), the options,
the workspace and config resolution, progress bars."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def config_path(path: Path | None, relative: str) -> Path:
    """``path`` when the user gave one, else the shipped ``relative`` (package data).

    For the train config and the rules, which a workspace and a model have their own of, ask
    :class:`propensity.pipelines.project.Project` instead.
    """
    if path is not None:
        return path
    from propensity.pipelines.shipped import shipped_config

    return shipped_config(relative)


def project(ctx: typer.Context, read_only: bool = False):
    """The :class:`~propensity.pipelines.project.Project` of the command's workspace (``read_only``
    for commands that only read it, so they can run beside another command)."""
    from propensity.pipelines.project import Project

    # one Project per command, so a model it loads is loaded once however often the command asks
    key = f"propensity.project.{'read' if read_only else 'write'}"
    if key not in ctx.meta:
        ctx.meta[key] = Project(workspace(ctx, read_only=read_only), report=report)
    return ctx.meta[key]


def report(kind: str, message: str) -> None:
    """Print what the application layer reports: which file a command uses (dim, a shipped
    default in yellow) and warnings."""
    if kind == "warning":
        err.print(f"[yellow]warning:[/] {message}")
    else:
        colour = "yellow" if "shipped with the package" in message else "dim"
        err.print(f"[{colour}]{message}[/]")


def note_resolved(where, what: str) -> None:
    """Say on stderr which file a command uses and why (a shipped default in yellow)."""
    report("uses", where.describe(what))


def warn(lines) -> None:
    for line in lines:
        report("warning", line)


app = typer.Typer(
    name="propensity",
    help="Propensity scoring: raw events -> point-in-time features -> rule and learned 0-5 scores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ingest_app = typer.Typer(help="Load events, contacts, outcomes or a whole dataset into the workspace.",
                         no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")

# Piped output (a file, a CI log, `| less`) would get rich's 80 columns and cut table cells ("learned_po…");
# it gets wide lines instead. A terminal keeps its own width.
PIPED_WIDTH = 240
console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", envvar="PROPENSITY_WORKSPACE",
                 help="Workspace folder (DuckDB file, outputs). Default ./propensity-workspace."),
]


def workspace(ctx: typer.Context, read_only: bool = False):
    """The workspace; ``read_only`` for commands that only read it (they can run side by side)."""
    from propensity.features.store import Workspace

    return Workspace.from_env(ctx.obj, read_only=read_only)


def _print_version(value: bool) -> None:
    if value:
        from propensity import __version__

        typer.echo(f"propensity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    workspace: WorkspaceOpt = None,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Also show the notes of the libraries underneath "
                                          "(MLflow's registration messages and warnings).")] = False,
) -> None:
    ctx.obj = str(workspace) if workspace is not None else None
    if verbose:
        import os

        os.environ["PROPENSITY_VERBOSE"] = "1"  # read by training.tracking.quiet_mlflow


def progress_bar():
    """A live progress display on a terminal; on piped stderr (CI logs, ``2> file``) one plain line
    per finished step, since rich writes a live display's last frame padded to the full width."""
    if not err.is_terminal:
        return _PipedProgress()
    # imported here, not at the top: --help and --version need no progress bars
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err, transient=False)


class _PipedProgress:
    """The part of rich's ``Progress`` the commands use (``add_task``, ``update``), as plain lines."""

    def __init__(self) -> None:
        self._tasks: dict[int, tuple[str, float]] = {}

    def __enter__(self) -> _PipedProgress:
        return self

    def __exit__(self, *_) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        import time

        self._tasks[len(self._tasks)] = (description, time.perf_counter())
        return len(self._tasks) - 1

    def update(self, task: int, *, completed: float | None = None, total: float | None = None, **_) -> None:
        import time

        if completed is not None and completed == total and task in self._tasks:
            description, started = self._tasks.pop(task)
            err.print(f"{description} ({time.perf_counter() - started:.1f} s)", markup=False, highlight=False)


@contextlib.contextmanager
def steps() -> Iterator[Callable[[str], None]]:
    """A ``step(label)`` callback for long jobs: each call finishes the previous bar and starts one."""
    with progress_bar() as progress:
        current: list = []

        def step(label: str) -> None:
            if current:
                progress.update(current.pop(), completed=1, total=1)
            current.append(progress.add_task(label, total=None))

        yield step
        if current:
            progress.update(current.pop(), completed=1, total=1)


AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Cut-off (ISO date/datetime, UTC). Features use ts < as_of.")]
SpineOpt = Annotated[str | None, typer.Option("--spine", help="A spine file (contact_id, as_of) or a stored spine name.")]


def spine_choice(as_of: str | None, spine: str | None, default_from=None):
    """The cut-off a command works at. ``default_from``: the workspace whose latest event gives the
    default when neither option is given (the midnight after it, as `explain` uses, so every event
    counts), said on stderr; None where no default is honest (another engine holds the events)."""
    from propensity.pipelines.jobs import SpineChoice
    from propensity.pipelines.outputs import parse_as_of

    if as_of is not None and spine is not None:
        raise typer.BadParameter("give one of --as-of DATE or --spine NAME|FILE, not both")
    if as_of is None and spine is None:
        if default_from is None:
            raise typer.BadParameter("give --as-of DATE or --spine NAME|FILE")
        from propensity.pipelines.explain.jobs import default_as_of

        when = default_as_of(default_from)
        why = ("the midnight after the latest event" if when.hour == when.minute == 0 else
               "the minute after the latest event: the data looks cut short that day")
        report("uses", f"cut-off {when:%Y-%m-%d %H:%M} (no --as-of: {why}, so every event counts)")
        return SpineChoice(as_of=when, spine=None)
    return SpineChoice(as_of=parse_as_of(as_of) if as_of else None, spine=spine)


EngineOpt = Annotated[str | None, typer.Option("--engine", help="duckdb, spark, or an Ibis backend such as postgres "
                                                 "(URL from $PROPENSITY_ENGINE_URL; docs/WAREHOUSES.md). "
                                                 "Default: the engine config's, else duckdb.")]
EngineConfigOpt = Annotated[Path | None, typer.Option("--engine-config", help="Engine YAML (configs/engines/*.yaml): "
                                                      "engine, url_env, sources (Parquet or tables, column "
                                                      "mapping), Spark settings.")]
# no envvar here: $SPARK_MASTER comes after the engine config's spark.master (engines.spark_master)
SparkMasterOpt = Annotated[str | None, typer.Option("--spark-master", help="Spark master URL (default: the engine "
                                                    "config's, else $SPARK_MASTER, else local[2]).")]


def engine_tables(ws, engine: str | None, engine_config: Path | None, spark_master: str | None):
    """None for the default (DuckDB on the workspace), else the configured engine's tables."""
    from propensity.pipelines.engines import (
        EngineConfig,
        check_engine_name,
        load_engine_config,
        open_tables,
    )

    if engine is not None:
        try:
            check_engine_name(engine)
        except ValueError as exc:
            raise ValueError(f"--engine: {exc}") from None
    config = load_engine_config(engine_config)
    updates = {"engine": engine} if engine else {}
    if spark_master:
        updates["spark"] = config.spark.model_copy(update={"master": spark_master})
    # validated again: --engine may make the config's sources wrong for it (Parquet on a warehouse)
    config = EngineConfig.model_validate({**dict(config), **updates})
    if config.engine == "duckdb" and config.sources is None:
        return None
    return open_tables(config, ws)


def isna(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


configs_app = typer.Typer(help="The configs shipped with the package: list them, copy them out to edit.",
                          no_args_is_help=True)
app.add_typer(configs_app, name="configs")


outbox_app = typer.Typer(help="The trigger outbox: deliver signed webhooks, list messages, replay.",
                         no_args_is_help=True)
triggers_app = typer.Typer(help="Score triggers (configs/triggers.yaml).", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
app.add_typer(triggers_app, name="triggers")
TriggersOpt = Annotated[Path | None, typer.Option("--triggers", help="Triggers YAML (its delivery section; default: the shipped triggers.yaml).")]
