"""`propensity monitor`: rules, champion and learned points measured again on every closed cut-off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from propensity.pipelines.cli.common import app, console, project, steps

EXIT_ALERTS = 1  # the latest closed cut-off raised at least one alert (cron and CI can act on it)


@app.command("monitor")
def monitor_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config (default: the one the model was trained with).")] = None,
    monitor_config: Annotated[Path | None, typer.Option("--monitor-config", help="Monitor settings YAML (default: the workspace's configs/monitor.yaml, else the shipped one).")] = None,
    model: Annotated[str, typer.Option("--model", help="The model watched: an alias (champion), a version or a models:/ URI.")] = "champion",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the config's).")] = None,
    learned_rules: Annotated[Path | None, typer.Option("--learned-rules", help="Learned points file (default: the one trained with the model).")] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Measure every cut-off again instead of reading the closed ones from the history.")] = False,
    notify: Annotated[bool, typer.Option("--notify", help="Queue the latest cut-off's alerts as signed webhooks in the outbox (also: alerts.webhook in the config).")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Where monitor.json and monitor.html go (default <ws>/monitor).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print monitor.json to stdout instead of the tables.")] = False,
) -> None:
    """Measure rules, champion and learned points on every closed cut-off; drift; alerts (exit 1 on an alert)."""
    from propensity.pipelines.monitor.config import load_monitor_config
    from propensity.pipelines.monitor.report import write_report

    proj = project(ctx)
    settings = load_monitor_config(proj.monitor_config_path(monitor_config).path)
    with steps() as step:
        result = proj.monitor(model, model_name, config=config, monitor_config=settings,
                              learned_rules=learned_rules, recompute=recompute, step=step)
        step("write the page")
        paths = write_report(result, out_dir or proj.ws.layout.monitor)
    queued = None
    if (notify or settings.alerts.webhook) and result.latest_alerts:
        queued = proj.notify_alerts(result.latest_alerts, result.series["meta"])
    if as_json:
        typer.echo(paths["json"].read_text(encoding="utf-8"))
    else:
        print_monitor(json.loads(paths["json"].read_text(encoding="utf-8")))
        if queued is not None:
            console.print(f"webhooks: {queued:,} new alert(s) queued in the outbox "
                          "(`propensity outbox deliver` or the service sends them)")
        console.print(f"page: {paths['html']}\nnumbers: {paths['json']}\nhistory: {result.history_path}")
    if result.latest_alerts:
        raise typer.Exit(EXIT_ALERTS)


def _auc(row: dict | None) -> str:
    if not row or row.get("roc_auc") is None:
        return "-"
    low, high = row.get("roc_auc_low"), row.get("roc_auc_high")
    band = f" ({low:.2f}-{high:.2f})" if low is not None and high is not None else ""
    return f"{row['roc_auc']:.3f}{band}"


def print_monitor(data: dict) -> None:
    for sentence in data["verdict"]:
        console.print(f"[bold]{sentence}[/]")
    for note in data["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    models = data["meta"]["models"]
    table = Table(title="ROC-AUC (95% interval) by cut-off; the first row is the champion's test cut-off")
    for column in ("cut-off", "contacts", "conversions", *models, "max PSI", "alerts"):
        table.add_column(column, justify="left" if column == "cut-off" else "right")
    counts: dict[str, int] = {}
    for alert in data["alerts"]:
        counts[alert["as_of"]] = counts.get(alert["as_of"], 0) + 1
    rows = ([("reference", data["reference"])] if data["reference"] else []) + [(c["as_of"][:10], c) for c in data["cutoffs"]]
    for label, row in rows:
        drift = (row.get("drift") or {}).get("psi_max")
        table.add_row(label, f"{row['n']:,}", f"{row['positives']:,}",
                      *[_auc(row["models"].get(m)) for m in models],
                      "-" if drift is None else f"{drift:.2f}", str(counts.get(row["as_of"], 0)) if label != "reference" else "")
    if (opened := data.get("open_cutoff")) is not None:
        drift = (opened.get("drift") or {}).get("psi_max")
        table.add_row(f"{opened['as_of'][:10]} (open)", f"{opened['n']:,}", "-", *["volumes only" for _ in models],
                      "-" if drift is None else f"{drift:.2f}", str(counts.get(opened["as_of"], 0)))
    console.print(table)
    if data["latest_alerts"]:
        alerts = Table(title="alerts on the latest cut-off")
        for column in ("kind", "subject", "reason", "action"):
            alerts.add_column(column)
        for alert in data["latest_alerts"]:
            alerts.add_row(alert["kind"], alert["subject"], alert["reason"], alert["action"])
        console.print(alerts)
