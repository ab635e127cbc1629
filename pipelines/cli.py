"""The one command-line interface: ``propensity``.

Only this module prints. Every command resolves the workspace (``--workspace``, else
``$PROPENSITY_WORKSPACE``, else ``./propensity-workspace``), calls a job, and renders its result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["app", "main"]

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_RULES = REPO_CONFIGS / "rules" / "saas.yaml"

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

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", envvar="PROPENSITY_WORKSPACE",
                 help="Workspace folder (DuckDB file, outputs). Default ./propensity-workspace."),
]


def _workspace(ctx: typer.Context):
    from features.store import Workspace

    return Workspace.from_env(ctx.obj)


@app.callback()
def _root(ctx: typer.Context, workspace: WorkspaceOpt = None) -> None:
    ctx.obj = str(workspace) if workspace is not None else None


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err, transient=False)


def _print_ingest(kind: str, report) -> None:
    console.print(
        f"[bold]{kind}[/]: read {report.read:,}, loaded {report.loaded:,}, "
        f"duplicates {report.duplicates:,}, rejected {report.rejected:,}"
        + (f"  (rejects: {report.rejects_path})" if getattr(report, "rejects_path", None) and report.rejected else "")
    )


def _ingest_kind(ctx: typer.Context, kind: str, path: Path, fmt: str | None,
                 maps: list[str] | None, encoding: str) -> None:
    from features.store import ingest_file

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
    from features.dataset import ingest_dataset, load_dataset_config

    ws = _workspace(ctx)
    dataset = load_dataset_config(config)
    with _progress() as progress:
        task = progress.add_task(f"ingest dataset {dataset.name}", total=None)
        reports = ingest_dataset(ws, dataset, root=root)
        progress.update(task, completed=1, total=1)
    for kind, report in reports.items():
        _print_ingest(kind, report)
    from features.dataset import dataset_spine
    from pipelines.jobs import store_spine

    for name in sorted(dataset.spines or {}):
        rows = store_spine(ws, name, dataset_spine(ws, dataset, name, root=root))
        console.print(f"spine [bold]{name}[/]: {rows:,} rows (use `propensity features --spine {name}`)")


AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Cut-off (ISO date/datetime, UTC). Features use ts < as_of.")]
SpineOpt = Annotated[str | None, typer.Option("--spine", help="A spine file (contact_id, as_of) or a stored spine name.")]


def _choice(as_of: str | None, spine: str | None):
    from pipelines.jobs import SpineChoice
    from pipelines.outputs import parse_as_of

    if (as_of is None) == (spine is None):
        raise typer.BadParameter("give exactly one of --as-of DATE or --spine NAME|FILE")
    return SpineChoice(as_of=parse_as_of(as_of) if as_of else None, spine=spine)


@app.command("features")
def features_cmd(
    ctx: typer.Context,
    as_of: AsOfOpt = None,
    spine: SpineOpt = None,
    config: Annotated[Path | None, typer.Option("--config", help="Feature config YAML (configs/features.yaml).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output .parquet or .csv (default: in the workspace).")] = None,
) -> None:
    """Build point-in-time features: one row per contact known at the cut-off."""
    from features.config import load_feature_config
    from pipelines.jobs import run_features

    ws = _workspace(ctx)
    with _progress() as progress:
        task = progress.add_task("build features", total=None)
        run = run_features(ws, _choice(as_of, spine), load_feature_config(config), out=out)
        progress.update(task, completed=1, total=1)
    console.print(f"{run.rows:,} rows x {len(run.columns)} features -> {run.path}  (DuckDB table `{run.table}`)")


@app.command("score")
def score_cmd(
    ctx: typer.Context,
    rules: Annotated[Path, typer.Option("--rules", help="Rules YAML.")] = DEFAULT_RULES,
    as_of: AsOfOpt = None,
    spine: SpineOpt = None,
    level: Annotated[str, typer.Option("--level", help="contact or account.")] = "contact",
    out: Annotated[Path | None, typer.Option("--out", help="Output .parquet, .csv or .jsonl.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Score with a learned model instead: an alias "
                                              "(champion), a version number or a models:/ URI.")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = "propensity",
) -> None:
    """Score contacts (or accounts) 0-5 with hand-weighted rules point by point, or with a learned model."""
    from pipelines.jobs import run_model_scores, run_rule_scores
    from pipelines.outputs import write_frame
    from pipelines.rules import load_rules

    ws = _workspace(ctx)
    choice = _choice(as_of, spine)
    if model is not None:
        with _progress() as progress:
            task = progress.add_task(f"score with model {model_name}@{model}", total=None)
            scored = run_model_scores(ws, choice, model, model_name)
            progress.update(task, completed=1, total=1)
        path = out or ws.path / "scores" / f"learned_scores_{choice.label()}.parquet"
        write_frame(scored, path)
        if "band" in scored:
            _print_band_table(scored, title=f"learned scores ({model_name}@{model})")
        console.print(f"{len(scored):,} rows -> {path}")
        return
    rule_set = load_rules(rules)
    with _progress() as progress:
        task = progress.add_task(f"score with {rule_set.name} rules", total=None)
        scored = run_rule_scores(ws, choice, rule_set, level=level)
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
    from pipelines.outputs import parse_as_of
    from pipelines.synthetic import WorldConfig, generate_world, write_world

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
    config: Annotated[Path, typer.Option("--config", help="Training config YAML.")] = REPO_CONFIGS / "train.yaml",
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow or register.")] = False,
) -> None:
    """Learn from outcomes: LightGBM + Optuna and learned rule points, calibrated onto 0-5, tracked in MLflow."""
    import optuna

    from pipelines.training.config import load_train_config
    from pipelines.training.train import train

    ws = _workspace(ctx)
    train_config = load_train_config(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _progress() as progress:
        current = {"task": None}

        def step(label: str) -> None:
            if current["task"] is not None:
                progress.update(current["task"], completed=1, total=1)
            current["task"] = progress.add_task(label, total=None)

        result = train(ws, train_config, step=step, track=not no_track)
        progress.update(current["task"], completed=1, total=1)
    _print_training(result)


def _print_training(result) -> None:
    splits = Table(title="training set (time split)")
    for column in ("split", "rows", "positives", "cut-offs"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for name, row in result.summary["splits"].items():
        splits.add_row(str(name), f"{row['rows']:,}", f"{row['positives']:,}", str(row["cutoffs"]))
    console.print(splits)
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


@app.command("info")
def info_cmd(ctx: typer.Context) -> None:
    """Show the workspace: where it is and how many rows each table holds."""
    ws = _workspace(ctx)
    console.print(f"workspace: {ws.path.resolve()}")
    if not ws.db_path.exists():
        console.print("(empty: nothing ingested yet)")
        return
    for name, count in ws.counts().items():
        console.print(f"  {name}: {count:,}")


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    contacts: Annotated[int, typer.Option("--contacts", min=100)] = 20_000,
    days: Annotated[int, typer.Option("--days", min=60)] = 180,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    rules: Annotated[Path, typer.Option("--rules")] = DEFAULT_RULES,
    train_config: Annotated[Path, typer.Option("--train-config", help="Training config for the demo's model.")] = REPO_CONFIGS / "train_demo.yaml",
    no_train: Annotated[bool, typer.Option("--no-train", help="Stop after rule scoring.")] = False,
) -> None:
    """Generate a synthetic world, ingest, build features, rule-score, train, and compare rule vs learned."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from pipelines.demo import run_demo
    from pipelines.rules import load_rules

    ws = _workspace(ctx)
    rule_set = load_rules(rules)
    with _progress() as progress:
        current = {"task": None}

        def step(label: str) -> None:
            if current["task"] is not None:
                progress.update(current["task"], completed=1, total=1)
            current["task"] = progress.add_task(label, total=None)

        result = run_demo(ws, rule_set, contacts=contacts, days=days, seed=seed, step=step,
                          train_config=None if no_train else train_config)
        progress.update(current["task"], completed=1, total=1)
    for kind, report in result.ingest.items():
        _print_ingest(kind, report)
    console.print(f"features as of {result.as_of:%Y-%m-%d}: {result.feature_rows:,} contacts x "
                  f"{result.feature_columns} features")
    _print_band_table(None, title=f"{rule_set.name} rule score bands as of {result.as_of:%Y-%m-%d}: "
                      f"conversion in the next {result.horizon_days} days (contacts not yet converted)",
                      bands=result.bands)
    if result.training is not None:
        _print_training(result.training)
    console.print("outputs:")
    for name, path in result.paths.items():
        console.print(f"  {name}: {path}")
    console.print(f"  DuckDB: {ws.db_path}  (tables events, contacts, outcomes, rejects, features)")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 bad input or usage)."""
    import os

    # LightGBM's OpenMP threads spin while waiting by default; on a busy 2-core machine that made a
    # 50k-row fit take 19.6 s instead of 2.5 s (benchmarks/training_bench.py). It must be set
    # before the OpenMP runtime loads, i.e. before lightgbm is imported; a user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from features.validate import DataValidationError
    from pipelines.jobs import WorkspaceError
    from pipelines.rules import RulesConfigError

    # NotEnoughPositives, LeakageError and config errors are ValueErrors with a message that says what to do.
    known = (DataValidationError, RulesConfigError, WorkspaceError, FileNotFoundError, ValueError)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv if argv is not None else sys.argv[1:], prog_name="propensity",
                     standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 1
    except known as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
