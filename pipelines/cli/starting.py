"""`propensity demo`, `init`, `info`, `configs ...`: the first minutes with the tool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from propensity.pipelines.cli.common import (
    app,
    config_path,
    configs_app,
    console,
    err,
    steps,
    workspace,
)


@app.command("info")
def info_cmd(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the workspace facts as JSON.")] = False,
) -> None:
    """Show the workspace: where it is, how many rows each table holds, its own configs."""
    import json

    from propensity.pipelines.cli.common import project

    facts = project(ctx, read_only=True).info()
    if as_json:
        typer.echo(json.dumps(facts))
        return
    console.print(f"workspace: {facts['workspace']}")
    if not facts["tables"]:
        console.print("(empty: nothing ingested yet)")
    for name, count in facts["tables"].items():
        console.print(f"  {name}: {count:,}")
    if "events" in facts:
        span = facts["events"]
        first, last = (span[end][:16].replace("T", " ") for end in ("first", "last"))
        console.print(f"events: {span['event_types']} types, {first} .. {last}")
    if facts["configs"]:
        console.print(f"configs (used when a command is given none): {', '.join(facts['configs'])}")
    for name, model in facts.get("models", {}).items():
        aliases = ", ".join(f"{alias} = v{v}" for alias, v in model["aliases"].items()) or "no alias (none promoted)"
        console.print(f"model {name}: versions {', '.join(map(str, model['versions']))}; {aliases}")


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

    from propensity.pipelines.cli.data import print_ingest
    from propensity.pipelines.cli.scoring import print_band_table
    from propensity.pipelines.cli.training import print_comparison, print_training

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from propensity.pipelines.demo import run_demo
    from propensity.pipelines.rules import load_rules

    ws = workspace(ctx)
    rule_set = load_rules(config_path(rules, "rules/saas.yaml"))
    with steps() as step:
        result = run_demo(ws, rule_set, contacts=contacts, days=days, seed=seed, step=step,
                          train_config=None if no_train else config_path(train_config, "train_demo.yaml"),
                          compare_config=None if no_train else config_path(None, "compare.yaml"))
    for kind, report in result.ingest.items():
        print_ingest(kind, report)
    console.print(f"features as of {result.as_of:%Y-%m-%d}: {result.feature_rows:,} contacts x "
                  f"{result.feature_columns} features")
    print_band_table(None, title=f"{rule_set.name} rule score bands as of {result.as_of:%Y-%m-%d}: "
                      f"conversion in the next {result.horizon_days} days (contacts not yet converted)",
                      bands=result.bands)
    if result.training is not None:
        print_training(result.training)
    if getattr(result, "comparison", None) is not None:
        print_comparison(result.comparison)
    console.print("outputs:")
    for name, path in result.paths.items():
        console.print(f"  {name}: {path}")
    console.print(f"  DuckDB: {ws.db_path}  (tables events, contacts, outcomes, rejects, features)")


@app.command("init")
def init_cmd(
    ctx: typer.Context,
    events: Annotated[Path, typer.Option("--events", exists=True, help="Events file (CSV, Parquet, JSONL, Segment).")],
    contacts: Annotated[Path | None, typer.Option("--contacts", exists=True, help="Contacts file.")] = None,
    outcomes: Annotated[Path | None, typer.Option("--outcomes", exists=True, help="Outcomes file (conversions, purchases).")] = None,
    horizon: Annotated[int | None, typer.Option("--horizon", min=1, help="Label window in days (default 30 when the data allows).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where the starter configs go (default <ws>/configs).")] = None,
    map: Annotated[list[str] | None, typer.Option("--map", "--events-map", help="Column mapping of the events file, "
                                                  "CANONICAL=SOURCE, repeatable.")] = None,
    contacts_map: Annotated[list[str] | None, typer.Option("--contacts-map", help="Column mapping of the contacts "
                                                           "file, CANONICAL=SOURCE, repeatable.")] = None,
    outcomes_map: Annotated[list[str] | None, typer.Option("--outcomes-map", help="Column mapping of the outcomes "
                                                           "file, CANONICAL=SOURCE, repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite starter files that already exist.")] = False,
) -> None:
    """Load your files and write a starter project fitted to them: rules, features and train configs."""
    from propensity.pipelines.cli.data import ingest_kind
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.starter import (
        check_writable,
        plan_project,
        profile_data,
        render_files,
        split_preview,
        write_files,
    )
    from propensity.pipelines.training.config import load_train_config

    ws = workspace(ctx)
    target = out or ws.layout.configs
    check_writable(target, overwrite=force)
    for kind, path, maps in (("contacts", contacts, contacts_map), ("events", events, map),
                             ("outcomes", outcomes, outcomes_map)):
        if path is not None:
            ingest_kind(ctx, kind, path, None, maps, "utf-8")
        elif maps:
            raise typer.BadParameter(f"--{kind}-map given without --{kind} FILE")
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
                  f"{profile.first_event:%Y-%m-%d} .. {profile.last_event:%Y-%m-%d %H:%M}; "
                  f"{profile.data_end_record.describe()}")
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


