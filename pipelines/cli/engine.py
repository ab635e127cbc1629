"""`propensity engine load`: the workspace's tables copied into a warehouse engine (docs/WAREHOUSES.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from propensity.pipelines.cli.common import (
    EngineConfigOpt,
    EngineOpt,
    app,
    console,
    progress_bar,
    project,
)

engine_app = typer.Typer(help="Warehouse engines (any Ibis backend, e.g. postgres): copy the workspace's "
                              "tables there.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")


@engine_app.command("load")
def load_cmd(
    ctx: typer.Context,
    engine: EngineOpt = None,
    engine_config: EngineConfigOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite tables that exist already.")] = False,
) -> None:
    """Copy events, contacts and outcomes into the engine's tables (default names events, contacts,
    outcomes; or those the engine config's sources name). The URL comes from $PROPENSITY_ENGINE_URL
    (or the config's url_env) and is shown redacted."""
    from propensity.pipelines.engines import EngineConfig, load_engine_config

    config = load_engine_config(engine_config)
    if engine is not None:
        config = EngineConfig.model_validate({**dict(config), "engine": engine})
    with progress_bar() as progress:
        task = progress.add_task(f"copy into {config.engine}", total=None)
        loaded = project(ctx).load_engine(config, replace=replace)
        progress.update(task, completed=1, total=1)
    for table in loaded.tables:
        console.print(f"[bold]{table.kind}[/] -> {table.target}: {table.rows:,} rows")
    console.print(f"into {loaded.engine} at {loaded.url}; run e.g. `propensity features --engine {loaded.engine} "
                  "--as-of DATE` to compute there")
