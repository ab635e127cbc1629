"""`propensity ingest ...`, `features`, `generate`: data into the workspace and features out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from propensity.pipelines.cli.common import (
    AsOfOpt,
    EngineConfigOpt,
    EngineOpt,
    SparkMasterOpt,
    SpineOpt,
    app,
    console,
    engine_tables,
    ingest_app,
    progress_bar,
    project,
    spine_choice,
    workspace,
)


def print_ingest(kind: str, report) -> None:
    console.print(
        f"[bold]{kind}[/]: {report.counts()}"
        + (f"  (rejects: {report.rejects_path})" if getattr(report, "rejects_path", None) and report.rejected else "")
    )


def ingest_kind(ctx: typer.Context, kind: str, path: Path, fmt: str | None,
                 maps: list[str] | None, encoding: str) -> None:
    from propensity.features.store import ingest_file

    column_map = {}
    for item in maps or []:
        canonical, sep, source = item.partition("=")
        if not sep or not canonical or not source:
            raise typer.BadParameter(f"--map {item!r}: expected CANONICAL=SOURCE, e.g. contact_id=user_id")
        column_map[canonical.strip()] = source.strip()
    ws = workspace(ctx)
    report = ingest_file(ws, kind, path, fmt=fmt, column_map=column_map or None, encoding=encoding)
    print_ingest(kind, report)


PathArg = Annotated[Path, typer.Argument(exists=True, dir_okay=True, help="CSV, Parquet, JSON Lines or Segment JSONL file.")]
FmtOpt = Annotated[str | None, typer.Option("--format", help="csv, parquet, jsonl or segment (default: from the extension).")]
MapOpt = Annotated[list[str] | None, typer.Option("--map", help="Column mapping CANONICAL=SOURCE, repeatable.")]
EncOpt = Annotated[str, typer.Option("--encoding", help="Text encoding of CSV / JSON files.")]


@ingest_app.command("events")
def ingest_events(ctx: typer.Context, path: PathArg, fmt: FmtOpt = None, map: MapOpt = None,
                  encoding: EncOpt = "utf-8") -> None:
    """Load events (contact_id, event_type, ts [, event_id, value, account_id, properties])."""
    ingest_kind(ctx, "events", path, fmt, map, encoding)


OptPathArg = Annotated[Path | None, typer.Argument(exists=True, dir_okay=True, help="CSV, Parquet, JSON Lines or "
                                                   "Segment JSONL file (or --from a CRM).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="hubspot or salesforce instead of a file: what changed "
                                             "since the last pull (configs/crm.yaml; extra `crm`; docs/CRM.md).")]
CrmConfigOpt = Annotated[Path | None, typer.Option("--crm-config", help="With --from: CRM YAML (default: the "
                                                   "workspace's configs/crm.yaml, else the shipped one).")]
FullOpt = Annotated[bool, typer.Option("--full", help="With --from: pull everything, not only what changed since "
                                       "the last pull (re-pulled rows are duplicates, not added twice).")]


def ingest_file_or_crm(ctx, kind, path, crm, fmt, maps, encoding, crm_config, full) -> None:
    if (path is None) == (crm is None):
        raise typer.BadParameter(f"ingest {kind}: give a file or --from hubspot|salesforce (one of them)")
    if path is not None:
        if crm_config is not None or full:
            raise typer.BadParameter("--crm-config and --full are for --from hubspot|salesforce")
        ingest_kind(ctx, kind, path, fmt, maps, encoding)
        return
    if fmt is not None or maps or encoding != "utf-8":  # a CRM pull has its own mapping (configs/crm.yaml)
        raise typer.BadParameter("--format, --map and --encoding are for files, not --from a CRM")
    from propensity.pipelines.cli.crm import pull_from_crm

    pull_from_crm(ctx, kind, crm, crm_config, full)


@ingest_app.command("contacts")
def ingest_contacts(ctx: typer.Context, path: OptPathArg = None, fmt: FmtOpt = None, map: MapOpt = None,
                    encoding: EncOpt = "utf-8", crm: FromOpt = None, crm_config: CrmConfigOpt = None,
                    full: FullOpt = False) -> None:
    """Load contacts (contact_id [, account_id, created_at, attribute columns]) from a file or a CRM."""
    ingest_file_or_crm(ctx, "contacts", path, crm, fmt, map, encoding, crm_config, full)


@ingest_app.command("outcomes")
def ingest_outcomes(ctx: typer.Context, path: OptPathArg = None, fmt: FmtOpt = None, map: MapOpt = None,
                    encoding: EncOpt = "utf-8", crm: FromOpt = None, crm_config: CrmConfigOpt = None,
                    full: FullOpt = False) -> None:
    """Load outcomes (contact_id, ts [, outcome_id, outcome, value]) from a file, or won deals from a CRM."""
    ingest_file_or_crm(ctx, "outcomes", path, crm, fmt, map, encoding, crm_config, full)


@ingest_app.command("dataset")
def ingest_dataset_cmd(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(exists=True, help="Dataset mapping YAML (configs/datasets/*.yaml).")],
    root: Annotated[Path | None, typer.Option("--root", help="Folder the SQL's {root} points at.")] = None,
) -> None:
    """Load a dataset described by SQL over files (e.g. configs/datasets/oulad.yaml)."""
    from propensity.features.dataset import ingest_dataset, load_dataset_config

    ws = workspace(ctx)
    dataset = load_dataset_config(config)
    with progress_bar() as progress:
        task = progress.add_task(f"ingest dataset {dataset.name}", total=None)
        reports = ingest_dataset(ws, dataset, root=root)
        progress.update(task, completed=1, total=1)
    for kind, report in reports.items():
        print_ingest(kind, report)
    from propensity.features.dataset import dataset_spine
    from propensity.pipelines.jobs import store_spine

    for name in sorted(dataset.spines or {}):
        rows = store_spine(ws, name, dataset_spine(ws, dataset, name, root=root))
        console.print(f"spine [bold]{name}[/]: {rows:,} rows (use `propensity features --spine {name}`)")


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

    ws = workspace(ctx)
    with progress_bar() as progress:
        task = progress.add_task("build features", total=None)
        tables = engine_tables(ws, engine, engine_config, spark_master)
        choice = spine_choice(as_of, spine, default_from=ws if tables is None else None)
        run = project(ctx).features(choice, config=config, out=out, tables=tables)
        progress.update(task, completed=1, total=1)
    where = (f"DuckDB table `{run.table}`" if run.table else
             "written by Spark" if tables.is_spark else f"computed on {tables.engine}")
    console.print(f"{run.rows:,} rows x {len(run.columns)} features -> {run.path}  ({where})")
    if run.note:
        console.print(f"feature config `auto`: {run.note}")
    if run.attributes:
        console.print(run.attributes)


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
    with progress_bar() as progress:
        task = progress.add_task(f"generate {contacts:,} contacts x {days} days", total=None)
        world = generate_world(WorldConfig(contacts=contacts, days=days, seed=seed))
        paths = write_world(world, out, fmt=fmt, truth_as_of=cuts, horizon_days=horizon)
        progress.update(task, completed=1, total=1)
    console.print(f"{len(world.events):,} events, {len(world.contacts):,} contacts, "
                  f"{len(world.outcomes):,} conversions")
    for name, path in paths.items():
        console.print(f"  {name}: {path}")


