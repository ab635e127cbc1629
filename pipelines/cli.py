"""The one command-line interface: ``propensity``.

Only this module prints. Every command resolves the workspace (``--workspace``, else
``$PROPENSITY_WORKSPACE``, else ``./propensity-workspace``), calls a job, and renders its result.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]



# The file `propensity init` writes into <ws>/configs/ for each shipped default it replaces.
WORKSPACE_CONFIG_NAMES = {"rules/saas.yaml": "rules.yaml", "train.yaml": "train.yaml", "features.yaml": "features.yaml"}


def _shipped(path: Path | None, relative: str, ws=None) -> Path:
    """The config to use: ``path`` when the user gave one, else the workspace's own copy (what
    ``propensity init`` wrote to ``<ws>/configs/``) when ``ws`` is given and has one, else the
    shipped ``relative`` (package data); falling back to a shipped file is said on stderr."""
    if path is not None:
        return path
    from propensity.pipelines.shipped import shipped_config

    own = WORKSPACE_CONFIG_NAMES.get(relative)
    if ws is not None and own is not None:
        if (ws.path / "configs" / own).is_file():
            return ws.path / "configs" / own
        err.print(f"[dim]using the shipped {relative} ({ws.path / 'configs' / own} does not exist; "
                  "`propensity init` writes one from your data)[/]")
    return shipped_config(relative)


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


def _workspace(ctx: typer.Context):
    from propensity.features.store import Workspace

    return Workspace.from_env(ctx.obj)


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
) -> None:
    ctx.obj = str(workspace) if workspace is not None else None


def _progress():
    # imported here, not at the top: --help and --version need no progress bars
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err, transient=False)


@contextlib.contextmanager
def _steps() -> Iterator[Callable[[str], None]]:
    """A ``step(label)`` callback for long jobs: each call finishes the previous bar and starts one."""
    with _progress() as progress:
        current: list = []

        def step(label: str) -> None:
            if current:
                progress.update(current.pop(), completed=1, total=1)
            current.append(progress.add_task(label, total=None))

        yield step
        if current:
            progress.update(current.pop(), completed=1, total=1)


def _print_ingest(kind: str, report) -> None:
    console.print(
        f"[bold]{kind}[/]: read {report.read:,}, loaded {report.loaded:,}, "
        f"duplicates {report.duplicates:,}, rejected {report.rejected:,}"
        + (f"  (rejects: {report.rejects_path})" if getattr(report, "rejects_path", None) and report.rejected else "")
    )


def _ingest_kind(ctx: typer.Context, kind: str, path: Path, fmt: str | None,
                 maps: list[str] | None, encoding: str) -> None:
    from propensity.features.store import ingest_file

    column_map = {}
    for item in maps or []:
        canonical, sep, source = item.partition("=")
        if not sep or not canonical or not source:
            raise typer.BadParameter(f"--map {item!r}: expected CANONICAL=SOURCE, e.g. contact_id=user_id")
        column_map[canonical.strip()] = source.strip()
    ws = _workspace(ctx)
    report = ingest_file(ws, kind, path, fmt=fmt, column_map=column_map or None, encoding=encoding)
    _print_ingest(kind, report)


PathArg = Annotated[Path, typer.Argument(exists=True, dir_okay=True, help="CSV, Parquet, JSON Lines or Segment JSONL file.")]
FmtOpt = Annotated[str | None, typer.Option("--format", help="csv, parquet, jsonl or segment (default: from the extension).")]
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="Column mapping CANONICAL=SOURCE, repeatable.")]
EncOpt = Annotated[str, typer.Option("--encoding", help="Text encoding of CSV / JSON files.")]


@ingest_app.command("events")
def ingest_events(ctx: typer.Context, path: PathArg, fmt: FmtOpt = None, map: MapOpt = None,
                  encoding: EncOpt = "utf-8") -> None:
    """Load events (contact_id, event_type, ts [, event_id, value, account_id, properties])."""
    _ingest_kind(ctx, "events", path, fmt, map, encoding)


@ingest_app.command("contacts")
def ingest_contacts(ctx: typer.Context, path: PathArg, fmt: FmtOpt = None, map: MapOpt = None,
                    encoding: EncOpt = "utf-8") -> None:
    """Load contacts (contact_id [, account_id, created_at, attribute columns])."""
    _ingest_kind(ctx, "contacts", path, fmt, map, encoding)


@ingest_app.command("outcomes")
def ingest_outcomes(ctx: typer.Context, path: PathArg, fmt: FmtOpt = None, map: MapOpt = None,
                    encoding: EncOpt = "utf-8") -> None:
    """Load outcomes (contact_id, ts [, outcome_id, outcome, value])."""
    _ingest_kind(ctx, "outcomes", path, fmt, map, encoding)


@ingest_app.command("dataset")
def ingest_dataset_cmd(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(exists=True, help="Dataset mapping YAML (configs/datasets/*.yaml).")],
    root: Annotated[Path | None, typer.Option("--root", help="Folder the SQL's {root} points at.")] = None,
) -> None:
    """Load a dataset described by SQL over files (e.g. configs/datasets/oulad.yaml)."""
    from propensity.features.dataset import ingest_dataset, load_dataset_config

    ws = _workspace(ctx)
    dataset = load_dataset_config(config)
    with _progress() as progress:
        task = progress.add_task(f"ingest dataset {dataset.name}", total=None)
        reports = ingest_dataset(ws, dataset, root=root)
        progress.update(task, completed=1, total=1)
    for kind, report in reports.items():
        _print_ingest(kind, report)
    from propensity.features.dataset import dataset_spine
    from propensity.pipelines.jobs import store_spine

    for name in sorted(dataset.spines or {}):
        rows = store_spine(ws, name, dataset_spine(ws, dataset, name, root=root))
        console.print(f"spine [bold]{name}[/]: {rows:,} rows (use `propensity features --spine {name}`)")


AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Cut-off (ISO date/datetime, UTC). Features use ts < as_of.")]
SpineOpt = Annotated[str | None, typer.Option("--spine", help="A spine file (contact_id, as_of) or a stored spine name.")]


def _choice(as_of: str | None, spine: str | None):
    from propensity.pipelines.jobs import SpineChoice
    from propensity.pipelines.outputs import parse_as_of

    if (as_of is None) == (spine is None):
        raise typer.BadParameter("give exactly one of --as-of DATE or --spine NAME|FILE")
    return SpineChoice(as_of=parse_as_of(as_of) if as_of else None, spine=spine)


EngineOpt = Annotated[str | None, typer.Option("--engine", help="duckdb or spark (default: the engine config's, "
                                                 "else duckdb).")]
EngineConfigOpt = Annotated[Path | None, typer.Option("--engine-config", help="Engine YAML (configs/engines/*.yaml): "
                                                      "engine, sources (Parquet or Spark tables), Spark settings.")]
# no envvar here: $SPARK_MASTER comes after the engine config's spark.master (engines.spark_master)
SparkMasterOpt = Annotated[str | None, typer.Option("--spark-master", help="Spark master URL (default: the engine "
                                                    "config's, else $SPARK_MASTER, else local[2]).")]


def _engine_tables(ws, engine: str | None, engine_config: Path | None, spark_master: str | None):
    """None for the default (DuckDB on the workspace), else the configured engine's tables."""
    from propensity.pipelines.engines import ENGINES, load_engine_config, open_tables

    if engine is not None and engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    config = load_engine_config(engine_config)
    updates = {"engine": engine} if engine else {}
    if spark_master:
        updates["spark"] = config.spark.model_copy(update={"master": spark_master})
    config = config.model_copy(update=updates)
    if config.engine == "duckdb" and config.sources is None:
        return None
    return open_tables(config, ws)


@app.command("features")
def features_cmd(
    ctx: typer.Context,
    as_of: AsOfOpt = None,
    spine: SpineOpt = None,
    config: Annotated[Path | None, typer.Option("--config", help="Feature config YAML (configs/features.yaml).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output .parquet or .csv (default: in the workspace; "
                                             "a folder on Spark).")] = None,
    engine: EngineOpt = None,
    engine_config: EngineConfigOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Build point-in-time features: one row per contact known at the cut-off."""
    from propensity.features.config import load_feature_config
    from propensity.pipelines.jobs import run_features

    ws = _workspace(ctx)
    with _progress() as progress:
        task = progress.add_task("build features", total=None)
        tables = _engine_tables(ws, engine, engine_config, spark_master)
        # the file training reads (the workspace's, else the shipped one), not FeatureConfig()'s defaults
        run = run_features(ws, _choice(as_of, spine), load_feature_config(_shipped(config, "features.yaml", ws)),
                           out=out, tables=tables)
        progress.update(task, completed=1, total=1)
    where = f"DuckDB table `{run.table}`" if run.table else "written by Spark"
    console.print(f"{run.rows:,} rows x {len(run.columns)} features -> {run.path}  ({where})")
    if run.note:
        console.print(f"feature config `auto`: {run.note}")


@app.command("score")
def score_cmd(
    ctx: typer.Context,
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML (default: the shipped rules/saas.yaml).")] = None,
    as_of: AsOfOpt = None,
    spine: SpineOpt = None,
    level: Annotated[str, typer.Option("--level", help="contact or account.")] = "contact",
    out: Annotated[Path | None, typer.Option("--out", help="Output .parquet, .csv or .jsonl.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Score with a learned model instead: an alias "
                                              "(champion), a version number or a models:/ URI.")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = "propensity",
    compiled: Annotated[bool, typer.Option("--compiled", help="--model: score with compiled trees (extra [fast] "
                                           "and gcc; the same predictions, about 2x faster).")] = False,
    engine: EngineOpt = None,
    engine_config: EngineConfigOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Score contacts (or accounts) 0-5 with hand-weighted rules point by point, or with a learned model."""
    from propensity.pipelines.jobs import run_model_scores, run_rule_scores
    from propensity.pipelines.outputs import write_frame
    from propensity.pipelines.rules import load_rules

    if compiled:
        import os

        from propensity.pipelines.training.compiled import ENV_VAR, compiled_trees_unavailable

        if model is None:
            raise typer.BadParameter("--compiled applies to learned models: add --model champion", param_hint="--compiled")
        if (reason := compiled_trees_unavailable()) is not None:
            raise typer.BadParameter(reason, param_hint="--compiled")
        os.environ[ENV_VAR] = "1"  # read when the pyfunc loads
    ws = _workspace(ctx)
    choice = _choice(as_of, spine)
    tables = _engine_tables(ws, engine, engine_config, spark_master)
    if model is not None and tables is not None and tables.is_spark:
        from propensity.pipelines.spark.scoring import run_spark_model_scores

        path = out or ws.path / "scores" / f"learned_scores_{choice.label()}"
        with _progress() as progress:
            task = progress.add_task(f"score on Spark with model {model_name}@{model}", total=None)
            run = run_spark_model_scores(ws, choice, model, model_name, tables, path)
            progress.update(task, completed=1, total=1)
        table = Table(title=f"learned scores ({model_name}@{model}, Spark)")
        table.add_column("band"); table.add_column("rows", justify="right")
        for row in run.bands.itertuples():
            table.add_row(str(row.band), f"{row.rows:,}")
        console.print(table)
        console.print(f"{run.rows:,} rows -> {run.path} (Parquet folder)")
        return
    if model is not None:
        with _progress() as progress:
            task = progress.add_task(f"score with model {model_name}@{model}", total=None)
            scored = run_model_scores(ws, choice, model, model_name, tables=tables)
            progress.update(task, completed=1, total=1)
        path = out or ws.path / "scores" / f"learned_scores_{choice.label()}.parquet"
        write_frame(scored, path)
        if "band" in scored:
            _print_band_table(scored, title=f"learned scores ({model_name}@{model})")
        console.print(f"{len(scored):,} rows -> {path}")
        return
    rule_set = load_rules(_shipped(rules, "rules/saas.yaml", ws))
    with _progress() as progress:
        task = progress.add_task(f"score with {rule_set.name} rules", total=None)
        scored = run_rule_scores(ws, choice, rule_set, level=level, tables=tables)
        progress.update(task, completed=1, total=1)
    path = out or ws.path / "scores" / f"rule_scores_{level}_{choice.label()}.parquet"
    write_frame(scored, path)
    _print_band_table(scored, title=f"{rule_set.name} rule scores ({level})")
    console.print(f"{len(scored):,} rows -> {path}")


def _print_band_table(scored, title: str, bands=None) -> None:
    table = Table(title=title)
    if bands is None:
        counts = scored["band"].value_counts(sort=False)
        table.add_column("band"); table.add_column("rows", justify="right"); table.add_column("share", justify="right")
        for band, n in counts.items():
            table.add_row(str(band), f"{n:,}", f"{n / max(len(scored), 1):.1%}")
    else:
        for column in ("band", "contacts", "share", "mean score", "converted", "conversion rate"):
            table.add_column(column, justify="left" if column == "band" else "right")
        for row in bands.itertuples():
            rate = "-" if row.contacts == 0 else f"{row.conversion_rate:.1%}"
            table.add_row(str(row.band), f"{row.contacts:,}", f"{row.share:.1%}",
                          "-" if row.contacts == 0 else f"{row.mean_score:.2f}", f"{int(row.conversions):,}", rate)
    console.print(table)


@app.command("generate")
def generate_cmd(
    contacts: Annotated[int, typer.Option("--contacts", min=1)] = 20_000,
    days: Annotated[int, typer.Option("--days", min=1)] = 180,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Folder to write events, contacts, outcomes, truth.")] = Path("synthetic-data"),
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    truth_as_of: Annotated[list[str] | None, typer.Option("--truth-as-of", help="Cut-off(s) to write true probabilities for.")] = None,
    horizon: Annotated[int, typer.Option("--horizon", help="Label horizon in days for the truth.")] = 30,
) -> None:
    """Write a synthetic SaaS world with a known conversion truth."""
    from propensity.pipelines.outputs import parse_as_of
    from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world

    if fmt not in {"parquet", "csv"}:
        raise typer.BadParameter("--format must be parquet or csv")
    cuts = [parse_as_of(t).date() for t in truth_as_of or []]
    with _progress() as progress:
        task = progress.add_task(f"generate {contacts:,} contacts x {days} days", total=None)
        world = generate_world(WorldConfig(contacts=contacts, days=days, seed=seed))
        paths = write_world(world, out, fmt=fmt, truth_as_of=cuts, horizon_days=horizon)
        progress.update(task, completed=1, total=1)
    console.print(f"{len(world.events):,} events, {len(world.contacts):,} contacts, "
                  f"{len(world.outcomes):,} conversions")
    for name, path in paths.items():
        console.print(f"  {name}: {path}")


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config YAML (default: the shipped train.yaml).")] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow or register.")] = False,
    engine: EngineOpt = None,
    engine_config: EngineConfigOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Learn from outcomes: LightGBM + Optuna and learned rule points, calibrated onto 0-5, tracked in MLflow."""
    import optuna

    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.training.train import train

    ws = _workspace(ctx)
    train_config = load_train_config(_shipped(config, "train.yaml", ws))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _steps() as step:
        result = train(ws, train_config, step=step, track=not no_track,
                       tables=_engine_tables(ws, engine, engine_config, spark_master))
    _print_training(result)


def _print_cutoffs(report) -> None:
    """The cut-offs each split used, and every grid cut-off left out with the rule that dropped it."""
    def dates(values) -> str:
        values = sorted(values)
        shown = ", ".join(f"{d:%Y-%m-%d}" for d in values) if len(values) <= 4 else \
            f"{values[0]:%Y-%m-%d} .. {values[-1]:%Y-%m-%d}"
        return f"{shown} ({len(values)})" if len(values) > 1 else shown or "none"

    console.print(report.data_end.describe())
    console.print(f"cut-offs used ({report.horizon_days:g}-day label windows): "
                  + "; ".join(f"{name} {dates(report.used(name))}" for name in ("train", "valid", "test")))
    by_rule: dict[str, list] = {}
    for fate in report.dropped:
        by_rule.setdefault(fate.dropped_by, []).append(fate)
    for rule, fates in by_rule.items():
        if rule == "window_past_data_end":  # the surprising one: say what would keep each
            for fate in fates[:3]:
                console.print(f"[yellow]cut-off {fate.as_of:%Y-%m-%d} dropped: {fate.reason} "
                              f"({fate.label_end:%Y-%m-%d %H:%M}); data_end {fate.keep_with_data_end:%Y-%m-%d %H:%M} "
                              "or later would keep it[/]")
            if len(fates) > 3:
                console.print(f"[yellow]cut-offs {dates(f.as_of for f in fates[3:])} dropped too: {fates[0].reason}[/]")
        else:
            console.print(f"cut-off{'s' if len(fates) > 1 else ''} {dates(f.as_of for f in fates)} dropped: {fates[0].reason}")
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")


def _print_training(result) -> None:
    splits = Table(title="training set (time split)")
    for column in ("split", "rows", "positives", "cut-offs"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for name, row in result.summary["splits"].items():
        splits.add_row(str(name), f"{row['rows']:,}", f"{row['positives']:,}", str(row["cutoffs"]))
    console.print(splits)
    if getattr(result, "cutoffs", None) is not None:
        _print_cutoffs(result.cutoffs)
    if result.summary.get("purged_rows"):
        console.print(f"{result.summary['purged_rows']:,} spine rows left out: their label windows would run into a later split")
    metrics = Table(title="test split: rule vs learned")
    for column in ("model", "ROC-AUC", "PR-AUC", "Brier", "ECE", "lift top 10%"):
        metrics.add_column(column, justify="left" if column == "model" else "right")
    test = result.metrics[result.metrics["split"] == "test"]
    for row in test.itertuples(index=False):
        metrics.add_row(row.model, f"{row.roc_auc:.3f}", f"{row.pr_auc:.3f}", f"{row.brier:.4f}", f"{row.ece:.4f}",
                        f"{getattr(row, 'lift_top10'):.2f}")
    console.print(metrics)
    if result.points_only:
        console.print("[yellow]few positives: trained only the points model (hand weights as prior)[/]")
    if result.leakage_allowed:
        console.print(f"[yellow]leakage guard overridden for: {', '.join(result.leakage_allowed)}[/]")
    console.print(f"learned rules: {result.learned_rules_path}  (run them: propensity score --rules {result.learned_rules_path} ...)")
    if result.run_id:
        console.print(f"MLflow run {result.run_id} at {result.tracking_uri}")
    if result.model_version:
        console.print(f"registered version {result.model_version}: {result.registry.reason}"
                      + (" -> now [bold]champion[/]" if result.registry.promoted else ""))


@app.command("ui")
def ui_cmd(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port")] = 5000,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the workspace's store (needs the `ui` extra: pip install 'propensity\\[ui]')."""
    import shutil
    import subprocess

    ws = _workspace(ctx)
    mlflow_cli = shutil.which("mlflow")
    if mlflow_cli is None:
        raise typer.BadParameter("the MLflow UI needs full mlflow: pip install 'propensity[ui]'")
    uri = f"sqlite:///{(ws.path / 'mlflow.db').resolve()}"
    console.print(f"MLflow UI for {uri} on http://{host}:{port}")
    raise typer.Exit(subprocess.call([mlflow_cli, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]))


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML the service scores with (default: the shipped rules/saas.yaml).")] = None,
    triggers: Annotated[Path | None, typer.Option("--triggers", help="Triggers YAML (e.g. configs/triggers.yaml); "
                                                  "none: no triggers.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Serve YAML (configs/serve.yaml).")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    model: Annotated[str, typer.Option("--model", help="Learned model served beside the rules: an alias or a "
                                       "version; none registered: rule scores only. 'none': never.")] = "champion",
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = "propensity",
) -> None:
    """Run the real-time scoring service (Segment-shaped ingest on /v1/track|identify|batch; needs the
    `serve` extra). Write keys come from $PROPENSITY_WRITE_KEYS; the store is <workspace>/serve.db,
    or PostgreSQL when $DATABASE_URL is set."""
    import sqlalchemy as sa
    import uvicorn

    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.serve.app import ServiceSettings, create_app
    from propensity.pipelines.serve.config import load_serve_config, read_keys, write_keys
    from propensity.pipelines.serve.db import database_url

    ws = _workspace(ctx)
    serve_config = load_serve_config(config)
    trigger_config = None
    if triggers is not None:
        from propensity.pipelines.activation.triggers import load_triggers

        trigger_config = load_triggers(triggers)
    url = database_url(ws.path)
    keys = write_keys(serve_config)  # before the model: a missing key fails at once
    registered = None
    if model != "none":
        from propensity.pipelines.serve.learned import load_registered_scorer

        registered = load_registered_scorer(ws.path, model, model_name)
    settings = ServiceSettings(database_url=url, rules=load_rules(_shipped(rules, "rules/saas.yaml", ws)), write_keys=keys,
                               config=serve_config, triggers=trigger_config, read_keys=read_keys(serve_config),
                               model=registered[0] if registered else None,
                               model_label=registered[1] if registered else "")
    shown = sa.make_url(url).render_as_string(hide_password=True)
    console.print(f"propensity serve on http://{host}:{port}  rules {settings.rules.name}  store {shown}"
                  + (f"  triggers {triggers}" if triggers else "")
                  + (f"  model {settings.model_label}" if registered else "  model: none registered (rule scores only)"))
    # one process: the writer and the score cache live in it (more workers would need a shared cache)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)


@app.command("explain")
def explain_cmd(
    ctx: typer.Context,
    contact_id: Annotated[str | None, typer.Argument(help="The contact to explain (omit with --all).")] = None,
    as_of: AsOfOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Top reasons for every contact (needs --as-of or --spine).")] = False,
    spine: SpineOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="--all: output .csv or .parquet.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
    model: Annotated[str, typer.Option("--model", help="Alias, version or models:/ URI.")] = "champion",
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = "propensity",
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML for the rule breakdown "
                                               "(default: the rules the model was trained against).")] = None,
    reasons: Annotated[int, typer.Option("--reasons", min=1, help="--all: reasons per contact.")] = 3,
    positive_only: Annotated[bool, typer.Option("--positive-only", help="--all: only reasons that raise the score.")] = False,
) -> None:
    """Why a contact has its learned score: SHAP per activity and attribute in 0-5 points, beside the rule breakdown."""
    import json

    from propensity.pipelines.explain.jobs import (
        check_contact, default_as_of, default_rules_path, explain_all, explain_one, load_registered_scorer)
    from propensity.pipelines.outputs import parse_as_of, write_frame
    from propensity.pipelines.rules import load_rules

    ws = _workspace(ctx)
    if contact_id is not None:
        check_contact(ws, contact_id)
    scorer = load_registered_scorer(ws, model, model_name)
    if all_:
        if contact_id is not None:
            raise typer.BadParameter("give a CONTACT_ID or --all, not both")
        choice = _choice(as_of, spine)
        with _progress() as progress:
            task = progress.add_task("explain every contact (pred_contrib)", total=None)
            report = explain_all(ws, choice, scorer, n_reasons=reasons, positive_only=positive_only)
            progress.update(task, completed=1, total=1)
        path = out or ws.path / "explain" / f"reasons_{choice.label()}.parquet"
        write_frame(report.reasons, path)
        console.print(f"{report.rows:,} contacts explained in {report.seconds_shap:.1f} s "
                      f"({report.rows_per_second:,.0f} rows/s) -> {path}")
        return
    if contact_id is None:
        raise typer.BadParameter("give a CONTACT_ID, or --all with --as-of DATE")
    when = parse_as_of(as_of) if as_of else default_as_of(ws)
    rule_set = load_rules(rules or default_rules_path(scorer))
    result = explain_one(ws, contact_id, when, scorer, rule_set)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console.print(f"[bold]{result.contact_id}[/] as of {result.as_of:%Y-%m-%d %H:%M}: learned score "
                  f"[bold]{result.learned_score:.2f}[/] (baseline {result.baseline:.2f}, "
                  f"{result.learned_score - result.baseline:+.2f} explained below); "
                  f"{result.rules_name} rule score {result.rule_score:.2f} ({result.rule_points:.1f} points)")
    learned = Table(title="learned score: what moved it (0-5 points, sums to score - baseline)")
    for column in ("reason", "points", "log-odds"):
        learned.add_column(column, justify="left" if column == "reason" else "right")
    for row in result.learned.itertuples(index=False):
        if abs(row.points) >= 0.005:
            learned.add_row(row.facts, f"{row.points:+.2f}", f"{row.logodds:+.3f}")
    console.print(learned)
    breakdown = Table(title=f"{result.rules_name} rules: points per rule")
    for column in ("rule", "reads", "points", "0-5 points"):
        breakdown.add_column(column, justify="left" if column in ("rule", "reads") else "right")
    for row in result.rules.itertuples(index=False):
        if row.points != 0:
            breakdown.add_row(row.rule, row.reads, f"{row.points:+.1f}", f"{row.score_points:+.2f}")
    console.print(breakdown)
    compare = Table(title="where the models disagree (learned vs rule, 0-5 points)")
    for column in ("group", "learned", "rules", "gap", "rules reading it"):
        compare.add_column(column, justify="left" if column in ("group", "rules reading it") else "right")
    for row in result.comparison.head(8).itertuples(index=False):
        compare.add_row(row.group, f"{row.learned_points:+.2f}", f"{row.rule_score_points:+.2f}",
                        f"{row.gap:+.2f}", row.rules)
    console.print(compare)


@app.command("tune")
def tune_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config YAML (grid, labels, splits; default: the shipped train.yaml).")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="The rules to tune (default: the config's).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the proposal goes (never the live rules).")] = Path("rules.proposed.yaml"),
    model: Annotated[str, typer.Option("--model", help="Alias, version or models:/ URI of the learned model.")] = "champion",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the config's).")] = None,
    fit_rows: Annotated[int, typer.Option("--fit-rows", min=100, help="Train/valid rows sampled for SHAP.")] = 40_000,
    no_new_rules: Annotated[bool, typer.Option("--no-new-rules", help="Only re-weight the existing rules.")] = False,
    no_reshape: Annotated[bool, typer.Option("--no-reshape", help="Keep half-lives and caps as they are.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write the proposal even if it does not beat the current rules.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the figures as JSON.")] = None,
) -> None:
    """Propose rule points (and new rules) from the learned model's SHAP values; backtest on the test split."""
    import json

    from propensity.pipelines.explain.jobs import load_registered_scorer
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.training.config import load_train_config
    from propensity.pipelines.tune.jobs import check_proposal_path, tune_rules, write_proposal
    from propensity.pipelines.tune.propose import TuneConfig

    ws = _workspace(ctx)
    train_config = load_train_config(_shipped(config, "train.yaml", ws))
    rules_path = rules or train_config.rules
    rule_set = load_rules(rules_path)
    check_proposal_path(out, rules_path)
    scorer = load_registered_scorer(ws, model, model_name or train_config.mlflow.model_name)
    with _steps() as step:
        result = tune_rules(ws, train_config, rule_set, scorer,
                            TuneConfig(new_rules=not no_new_rules, reshape=not no_reshape),
                            fit_rows=fit_rows, step=step)
    changes = Table(title=f"proposed changes to {rule_set.name} (from SHAP on {result.fit_rows:,} train/valid rows)")
    for column in ("rule", "status", "reads", "SHAP share", "points", "shape", "note"):
        changes.add_column(column, justify="right" if column == "SHAP share" else "left")
    for row in result.proposal.changes.itertuples(index=False):
        before = "-" if _isna(row.current_points) else f"{row.current_points:g}"
        shape = row.proposed_shape if row.current_shape == row.proposed_shape else f"{row.current_shape or '-'} -> {row.proposed_shape}"
        changes.add_row(row.rule, row.status, row.group, f"{row.share:.1%}", f"{before} -> {row.proposed_points:g}",
                        shape, row.note)
    console.print(changes)
    if len(result.proposal.out_of_reach):
        reach = ", ".join(f"{r.group} {r.share:.1%}" for r in result.proposal.out_of_reach.itertuples() if r.share >= 0.005)
        console.print(f"signal no rule can read (share of mean |SHAP|): {reach or 'none above 0.5%'}")
    backtest = Table(title=f"backtest on the test split ({result.test_rows:,} rows)")
    metric_columns = [c for c in result.backtest.columns if c not in ("model", "n", "positives")]
    for column in ("model", *metric_columns):
        backtest.add_column(column, justify="left" if column == "model" else "right")
    for row in result.backtest.itertuples(index=False):
        backtest.add_row(row.model, *[f"{getattr(row, c):.3f}" for c in metric_columns])
    console.print(backtest)
    volumes = Table(title="test rows at or above each band edge / threshold")
    for column in result.volumes.columns:
        volumes.add_column(column, justify="left" if column == "edge" else "right")
    for row in result.volumes.itertuples(index=False):
        volumes.add_row(*["-" if _isna(v) else (f"{int(v):,}" if not isinstance(v, str) else v) for v in row])
    console.print(volumes)
    closed = "" if _isna(result.gap_closed) else f"; closes {result.gap_closed:.0%} of the ROC-AUC gap to the learned model"
    console.print(("[green]" if result.offered else "[yellow]") + result.reason + closed + "[/]")
    path = write_proposal(result, out, live=rules_path, force=force)
    if path is not None:
        console.print(f"proposal: {path}  (diff: {path.with_suffix('.diff')}; "
                      f"run it: propensity score --rules {path} --as-of DATE)")
    else:
        console.print("no file written (use --force to write it anyway)")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.summary(), indent=2, default=str), encoding="utf-8")
        console.print(f"figures: {report}")


def _isna(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config: decides the test cut-off (default: the shipped train.yaml).")] = None,
    compare_config: Annotated[Path | None, typer.Option("--compare-config", help="Compare settings YAML (default: the shipped compare.yaml).")] = None,
    model: Annotated[str, typer.Option("--model", help="Learned model: an alias (champion), a version or a models:/ URI.")] = "champion",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the config's).")] = None,
    learned_rules: Annotated[Path | None, typer.Option("--learned-rules", help="Learned points file (default <ws>/models/rules.learned.yaml).")] = None,
    k: Annotated[str | None, typer.Option("--k", help="Top-k percentages, e.g. 5,10,20 (default: the compare config's).")] = None,
    backtest: Annotated[bool, typer.Option("--backtest", help="Also refit and score past cut-offs (walk-forward).")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Where compare.json and compare.html go (default <ws>/reports).")] = None,
) -> None:
    """Compare rule vs learned vs learned points on the held-out cut-off: metrics with intervals, report."""
    from propensity.pipelines.compare import compare_models, load_compare_config, parse_k_list, run_backtest, write_report
    from propensity.pipelines.training.config import load_train_config

    ws = _workspace(ctx)
    train_config = load_train_config(_shipped(config, "train.yaml", ws))
    settings = load_compare_config(_shipped(compare_config, "compare.yaml"))
    if k is not None:
        settings = settings.model_copy(update={"top_k_percent": parse_k_list(k)})
    with _steps() as step:
        comparison = compare_models(ws, train_config, settings, model=model, model_name=model_name,
                                    learned_rules=learned_rules, step=step)
        if backtest:
            result = run_backtest(ws, train_config, settings, step=step)
            comparison.backtest, comparison.backtest_notes = result.table, result.notes
        step("write the report")
        paths = write_report(comparison, out_dir or ws.path / "reports")
    _print_comparison(comparison)
    console.print(f"report: {paths['html']}\nnumbers: {paths['json']}")


def _print_comparison(comparison) -> None:
    cutoffs = ", ".join(comparison.meta.get("cutoffs", []))
    first = comparison.summary.iloc[0]
    summary = Table(title=f"rule vs learned on held-out cut-off {cutoffs}: {int(first['n']):,} contacts, "
                          f"{int(first['positives']):,} conversions")
    for column in ("model", "ROC-AUC", "95% CI", "PR-AUC", "95% CI ", "Brier", "ECE"):
        summary.add_column(column, justify="left" if column == "model" else "right")
    for row in comparison.summary.itertuples(index=False):
        summary.add_row(row.model, f"{row.roc_auc:.3f}", f"{row.roc_auc_low:.3f}-{row.roc_auc_high:.3f}",
                        f"{row.pr_auc:.3f}", f"{row.pr_auc_low:.3f}-{row.pr_auc_high:.3f}",
                        f"{row.brier:.4f}", f"{row.ece:.4f}")
    console.print(summary)
    for gap in comparison.gaps.itertuples(index=False):
        verdict = ("better" if gap.roc_auc_gap_low > 0 else "worse" if gap.roc_auc_gap_high < 0 else "no clear difference")
        console.print(f"{gap.model} vs {gap.reference}: ROC-AUC {gap.roc_auc_gap:+.3f} "
                      f"(paired 95% CI {gap.roc_auc_gap_low:+.3f} to {gap.roc_auc_gap_high:+.3f}): {verdict}")
    top = Table(title="top k% of the list: precision / recall / lift (ranked by the 0-5 score)")
    top.add_column("model")
    ks = sorted(comparison.top_k["k_percent"].unique())
    for k in ks:
        top.add_column(f"top {k:g}%", justify="right")
    for model, part in comparison.top_k.groupby("model", sort=False):
        cells = part.set_index("k_percent")
        top.add_row(model, *[f"{cells.loc[k, 'precision']:.1%} / {cells.loc[k, 'recall']:.1%} / {cells.loc[k, 'lift']:.2f}"
                             for k in ks])
    console.print(top)
    bands = Table(title="conversion rate by band (contacts)")
    bands.add_column("model")
    names = list(dict.fromkeys(comparison.bands["band"]))
    for name in names:
        bands.add_column(name, justify="right")
    for model, part in comparison.bands.groupby("model", sort=False):
        cells = part.set_index("band")
        bands.add_row(model, *["-" if cells.loc[b, "contacts"] == 0 else
                               f"{cells.loc[b, 'conversion_rate']:.1%} ({int(cells.loc[b, 'contacts']):,})" for b in names])
    console.print(bands)
    correlation = comparison.rank_correlation
    pairs = [f"{a}~{b} {correlation.loc[a, b]:.2f}" for i, a in enumerate(correlation.index)
             for b in correlation.columns[i + 1:]]
    console.print("Spearman rank correlation: " + ", ".join(pairs))
    if comparison.backtest is not None and not comparison.backtest.empty:
        table = Table(title="backtest: refitted at each past cut-off, ROC-AUC (gap vs rules, paired 95% CI)")
        table.add_column("cut-off")
        for model in comparison.models:
            table.add_column(model, justify="right")
        for as_of, part in comparison.backtest.groupby("as_of"):
            cells = part.set_index("model")
            row = []
            for model in comparison.models:
                if model not in cells.index:
                    row.append("-")
                elif model == comparison.reference:
                    row.append(f"{cells.loc[model, 'roc_auc']:.3f}")
                else:
                    r = cells.loc[model]
                    row.append(f"{r['roc_auc']:.3f} ({r['roc_auc_gap']:+.3f}, {r['roc_auc_gap_low']:+.3f} to {r['roc_auc_gap_high']:+.3f})")
            table.add_row(f"{as_of:%Y-%m-%d}", *row)
        console.print(table)
        from propensity.pipelines.compare.backtest import gap_stability

        for sentence in gap_stability(comparison.backtest, comparison.reference):
            console.print(f"backtest: {sentence}")
    for note in comparison.backtest_notes:
        console.print(f"[yellow]backtest: {note}[/]")
    for warning in comparison.warnings:
        console.print(f"[yellow]{warning}[/]")


@app.command("info")
def info_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the workspace facts as JSON.")] = False,
) -> None:
    """Show the workspace: where it is, how many rows each table holds, its own configs."""
    import json

    ws = _workspace(ctx)
    counts = ws.counts() if ws.db_path.exists() else {}
    configs = sorted(str(p.relative_to(ws.path)) for p in (ws.path / "configs").glob("*.yaml"))
    if as_json:
        typer.echo(json.dumps({"workspace": str(ws.path.resolve()), "tables": counts, "configs": configs}))
        return
    console.print(f"workspace: {ws.path.resolve()}")
    if not counts:
        console.print("(empty: nothing ingested yet)")
    for name, count in counts.items():
        console.print(f"  {name}: {count:,}")
    if configs:
        console.print(f"configs (used when a command is given none): {', '.join(configs)}")


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    contacts: Annotated[int, typer.Option("--contacts", min=100)] = 20_000,
    days: Annotated[int, typer.Option("--days", min=60)] = 180,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML (default: the shipped rules/saas.yaml).")] = None,
    train_config: Annotated[Path | None, typer.Option("--train-config", help="Training config for the demo's model (default: the shipped train_demo.yaml).")] = None,
    no_train: Annotated[bool, typer.Option("--no-train", help="Stop after rule scoring.")] = False,
) -> None:
    """Generate a synthetic world, ingest, build features, rule-score, train, and compare rule vs learned."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from propensity.pipelines.demo import run_demo
    from propensity.pipelines.rules import load_rules

    ws = _workspace(ctx)
    rule_set = load_rules(_shipped(rules, "rules/saas.yaml"))
    with _steps() as step:
        result = run_demo(ws, rule_set, contacts=contacts, days=days, seed=seed, step=step,
                          train_config=None if no_train else _shipped(train_config, "train_demo.yaml"),
                          compare_config=None if no_train else _shipped(None, "compare.yaml"))
    for kind, report in result.ingest.items():
        _print_ingest(kind, report)
    console.print(f"features as of {result.as_of:%Y-%m-%d}: {result.feature_rows:,} contacts x "
                  f"{result.feature_columns} features")
    _print_band_table(None, title=f"{rule_set.name} rule score bands as of {result.as_of:%Y-%m-%d}: "
                      f"conversion in the next {result.horizon_days} days (contacts not yet converted)",
                      bands=result.bands)
    if result.training is not None:
        _print_training(result.training)
    if getattr(result, "comparison", None) is not None:
        _print_comparison(result.comparison)
    console.print("outputs:")
    for name, path in result.paths.items():
        console.print(f"  {name}: {path}")
    console.print(f"  DuckDB: {ws.db_path}  (tables events, contacts, outcomes, rejects, features)")


# -- a starter project from the user's data ----------------------------------------------------------

@app.command("init")
def init_cmd(
    ctx: typer.Context,
    events: Annotated[Path, typer.Option("--events", exists=True, help="Events file (CSV, Parquet, JSONL, Segment).")],
    contacts: Annotated[Path | None, typer.Option("--contacts", exists=True, help="Contacts file.")] = None,
    outcomes: Annotated[Path | None, typer.Option("--outcomes", exists=True, help="Outcomes file (conversions, purchases).")] = None,
    horizon: Annotated[int | None, typer.Option("--horizon", min=1, help="Label window in days (default 30 when the data allows).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where the starter configs go (default <ws>/configs).")] = None,
    map: Annotated[list[str] | None, typer.Option("--map", help="Column mapping of the events file, CANONICAL=SOURCE, "
                                                  "repeatable (contacts and outcomes use the canonical names).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite starter files that already exist.")] = False,
) -> None:
    """Load your files and write a starter project fitted to them: rules, features and train configs."""
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.starter import (
        check_writable, plan_project, profile_data, render_files, split_preview, write_files,
    )
    from propensity.pipelines.training.config import load_train_config

    ws = _workspace(ctx)
    target = out or ws.path / "configs"
    check_writable(target, overwrite=force)
    for kind, path in (("contacts", contacts), ("events", events), ("outcomes", outcomes)):
        if path is not None:
            _ingest_kind(ctx, kind, path, None, map if kind == "events" else None, "utf-8")
    con = ws.connect()
    try:
        profile = profile_data(con)
    finally:
        con.close()
    plan = plan_project(profile, horizon)
    written = write_files(render_files(plan), target, overwrite=force)
    train_config = load_train_config(target / "train.yaml")  # the loaders that every command uses
    load_rules(train_config.rules)
    for note in plan.notes:
        err.print(f"[yellow]note:[/] {note}")
    console.print(f"{profile.events:,} events of {len(profile.event_types)} types from {profile.contacts:,} contacts, "
                  f"{profile.first_event:%Y-%m-%d} .. {profile.last_event:%Y-%m-%d %H:%M}; data_end {profile.data_end:%Y-%m-%d}")
    console.print(f"horizon {plan.horizon_days} days ({plan.horizon_note}); "
                  f"{'recurring' if plan.recurring else 'one-time'} outcomes: {plan.recurring_note}")
    console.print(plan.split_note)
    if profile.contacts_with_outcome:
        table = Table(title="the training set this config gives (rows = contact x cut-off)")
        for column in ("split", "rows", "positives", "cut-offs", "first", "last"):
            table.add_column(column, justify="right" if column not in ("split",) else "left")
        for row in split_preview(ws.ibis_connection(), train_config).itertuples():
            table.add_row(str(row.split), f"{row.rows:,}", f"{int(row.positives):,}", str(row.cutoffs),
                          f"{row.first:%Y-%m-%d}", f"{row.last:%Y-%m-%d}")
        console.print(table)
    else:
        err.print("[yellow]note:[/] no outcomes yet: rule scores work, `train` needs `--outcomes FILE`")
    for path in written:
        console.print(f"  wrote {path}")
    console.print("next: propensity train, propensity compare, propensity explain CONTACT_ID, propensity tune "
                  "(they read these files; review rules.yaml's points first)")


# -- the shipped configs -----------------------------------------------------------------------------

configs_app = typer.Typer(help="The configs shipped with the package: list them, copy them out to edit.",
                          no_args_is_help=True)
app.add_typer(configs_app, name="configs")


@configs_app.command("list")
def configs_list_cmd() -> None:
    """List the shipped configs (where they are installed)."""
    from propensity.pipelines.shipped import shipped_configs_dir

    root = shipped_configs_dir()
    console.print(f"shipped configs in {root}:")
    for path in sorted(root.rglob("*.yaml")):
        console.print(f"  {path.relative_to(root)}")


@configs_app.command("copy")
def configs_copy_cmd(
    dest: Annotated[Path, typer.Argument(help="Folder to copy the shipped configs into.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist there.")] = False,
) -> None:
    """Copy every shipped config into DEST to edit (relative paths inside them keep working)."""
    from propensity.pipelines.shipped import copy_shipped_configs

    written = copy_shipped_configs(dest, overwrite=force)
    console.print(f"{len(written)} config files -> {dest}  (e.g. propensity train --config {dest / 'train.yaml'})")


# -- activation: push, outbox, triggers ------------------------------------------------------------

outbox_app = typer.Typer(help="The trigger outbox: deliver signed webhooks, list messages, replay.",
                         no_args_is_help=True)
triggers_app = typer.Typer(help="Score triggers (configs/triggers.yaml).", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
app.add_typer(triggers_app, name="triggers")
TriggersOpt = Annotated[Path | None, typer.Option("--triggers", help="Triggers YAML (its delivery section; default: the shipped triggers.yaml).")]


def _service_engine(ctx: typer.Context):
    from propensity.pipelines.activation.tables import create_activation_tables
    from propensity.pipelines.serve.db import database_url, make_engine

    engine = make_engine(database_url(_workspace(ctx).path))
    create_activation_tables(engine)
    return engine


@app.command("push")
def push_cmd(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="customerio, segment or webhook.")],
    source: Annotated[str | None, typer.Option("--from", help="Scores file from `propensity score --out` "
                                               "(.parquet/.csv/.jsonl) or a table of the service database "
                                               "(score_state). Default: the newest file in <workspace>/scores.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send and record nothing.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Contacts per batch.")] = 100,
    rate: Annotated[float, typer.Option("--rate", min=0.01, help="Requests per second at most.")] = 20.0,
) -> None:
    """Send scores as traits (intent_score, intent_band, propensity, top_reasons) to a tool; only contacts
    whose traits changed since the last push there. Credentials come from the environment only."""
    import json

    from propensity.pipelines.activation.push import (PushError, PushOptions, destination_from_env, push, read_scores,
                                           read_scores_table, traits_from_scores)

    destination = destination_from_env(to)
    engine = _service_engine(ctx)
    if source is None:
        scores_dir = _workspace(ctx).path / "scores"
        files = sorted((p for p in scores_dir.glob("*") if p.suffix in {".parquet", ".csv", ".jsonl"}),
                       key=lambda p: p.stat().st_mtime) if scores_dir.is_dir() else []
        if not files:
            raise typer.BadParameter(f"no scores in {scores_dir}: run `propensity score` or give --from")
        source = str(files[-1])
    path = Path(source)
    if path.exists() or path.suffix:
        frame, label = read_scores(path), str(path)
    else:
        frame, label = read_scores_table(engine, source), f"table {source}"
    contacts = traits_from_scores(frame, source=label)
    try:
        report = push(engine, destination, contacts, options=PushOptions(batch_size=batch_size, rate=rate),
                      dry_run=dry_run)
    except PushError as exc:
        err.print(f"[red]push failed:[/] {exc}")
        raise typer.Exit(1) from None
    verb, count = ("would send", report.contacts - report.unchanged) if report.dry_run else ("sent", report.sent)
    console.print(f"push to [bold]{report.destination}[/] from {label}: {report.contacts:,} contacts, "
                  f"{report.unchanged:,} unchanged since the last push; {verb} {count:,} in {report.batches:,} "
                  "batch(es)" + ("" if report.dry_run else f", {report.requests:,} request(s)"))
    if report.dry_run and report.preview is not None:
        console.print("first batch (no credentials shown):")
        console.print_json(json.dumps(report.preview, default=str)[:20_000])


@outbox_app.command("deliver")
def outbox_deliver_cmd(
    ctx: typer.Context,
    triggers: TriggersOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Messages to attempt at most.")] = 1000,
) -> None:
    """Send the outbox messages that are due, signed (URL and secret from the environment)."""
    from propensity.pipelines.activation.outbox import WebhookSender, deliver_due
    from propensity.pipelines.activation.triggers import load_triggers

    delivery = load_triggers(_shipped(triggers, "triggers.yaml")).delivery
    engine = _service_engine(ctx)
    with WebhookSender.from_env(delivery.url_env, delivery.secret_env, timeout=delivery.timeout_seconds) as sender:
        report = deliver_due(engine, sender, limit=limit, policy=delivery.policy())
    console.print(f"outbox: attempted {report.attempted:,}, delivered {report.delivered:,}, "
                  f"retrying later {report.retrying:,}, dead-lettered {report.dead:,}"
                  + (f", {report.skipped:,} claimed by another deliverer" if report.skipped else ""))


@outbox_app.command("list")
def outbox_list_cmd(
    ctx: typer.Context,
    dead: Annotated[bool, typer.Option("--dead", help="List the dead letters instead.")] = False,
    pending: Annotated[bool, typer.Option("--pending", help="Only messages not delivered yet.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
) -> None:
    """List the newest outbox messages (or dead letters)."""
    from propensity.pipelines.activation.outbox import list_messages

    rows = list_messages(_service_engine(ctx), dead=dead, pending_only=pending, limit=limit)
    table = Table(title="dead letters" if dead else "outbox")
    columns = ["id", "trigger", "contact", "attempts", "dead at" if dead else "status", "last error"]
    for column in columns:
        table.add_column(column)
    for row in rows:
        if dead:
            status = f"{row['dead_at']:%Y-%m-%d %H:%M:%S}"
        elif row["delivered_at"] is not None:
            status = f"delivered {row['delivered_at']:%Y-%m-%d %H:%M:%S}"
        else:
            status = f"next try {row['next_attempt_at']:%Y-%m-%d %H:%M:%S}"
        table.add_row(str(row["id"]), str(row["trigger"] or row["kind"]), str(row["contact_id"] or ""),
                      str(row["attempts"]), status, (row["last_error"] or "")[:80])
    console.print(table)
    if not rows:
        console.print("(none)")


@outbox_app.command("replay")
def outbox_replay_cmd(
    ctx: typer.Context,
    ids: Annotated[list[int] | None, typer.Argument(help="Outbox ids (or dead-letter ids with --dead).")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Replay dead letters (all of them unless ids are given).")] = False,
) -> None:
    """Queue messages again: dead letters back into the outbox, or delivered messages once more."""
    from propensity.pipelines.activation.outbox import replay

    count = replay(_service_engine(ctx), ids or (), all_dead=dead)
    console.print(f"queued {count:,} message(s) again; `propensity outbox deliver` (or the service) sends them")


@triggers_app.command("check")
def triggers_check_cmd(
    config: Annotated[Path | None, typer.Argument(help="Triggers YAML (default: the shipped triggers.yaml).")] = None,
) -> None:
    """Validate a triggers file and list its triggers."""
    from propensity.pipelines.activation.triggers import load_triggers

    config = _shipped(config, "triggers.yaml")
    cfg = load_triggers(config)
    table = Table(title=f"{config}: bands {' < '.join(cfg.bands) or '(none)'}")
    for column in ("trigger", "kind", "fires when", "cooldown"):
        table.add_column(column)
    for t in cfg.triggers:
        when = {"threshold_crossed": lambda: f"{t.measure} crosses {t.threshold:g} upwards",
                "band_entered": lambda: f"band becomes {t.band} or higher",
                "score_dropped": lambda: f"score {t.by:g} below its {t.within_days:g}-day peak"}[t.kind]()
        table.add_row(t.name, t.kind, when, f"{t.cooldown_hours:g} h")
    console.print(table)
    console.print(f"delivery: POST to ${cfg.delivery.url_env}, signed with ${cfg.delivery.secret_env}, "
                  f"{cfg.delivery.max_attempts} attempts then dead letter")


def _workspace_option_first(args: list[str]) -> list[str]:
    """``-w DIR`` / ``--workspace DIR`` anywhere before ``--`` moved to the front, where the root
    command reads it: ``propensity score -w ws ...`` means ``propensity -w ws score ...`` (no
    subcommand has a ``-w`` of its own)."""
    moved, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in ("-w", "--workspace") and i + 1 < len(args):
            moved += args[i:i + 2]
            i += 2
            continue
        (moved if arg.startswith("--workspace=") else rest).append(arg)
        i += 1
    return moved + rest


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 bad input or usage)."""
    import os

    # LightGBM's OpenMP threads spin while waiting by default; on a busy 2-core machine that made a
    # 50k-row fit take 19.6 s instead of 2.5 s (benchmarks/training_bench.py). It must be set
    # before the OpenMP runtime loads, i.e. before lightgbm is imported; a user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Bad input (DataValidationError, RulesConfigError, WorkspaceError, NotEnoughPositives,
    # LeakageError, config errors) is a ValueError with a message that says what to do; the
    # classes are not imported up front so that --help and --version stay fast.
    known = (FileNotFoundError, ValueError)
    command = typer.main.get_command(app)
    args = _workspace_option_first(list(argv if argv is not None else sys.argv[1:]))
    try:
        # standalone mode: typer (which vendors its own click) prints usage errors itself, with exit
        # code 2, and ends with SystemExit; our own known errors still propagate to the line below
        command.main(args=args, prog_name="propensity", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except known as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
