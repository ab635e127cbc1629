"""`propensity serve`, `ui`, `push`, `outbox ...`, `triggers ...`: scores out to the tools people use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from propensity.pipelines.cli.common import (
    TriggersOpt,
    app,
    config_path,
    console,
    err,
    note_resolved,
    outbox_app,
    progress_bar,
    project,
    triggers_app,
    warn,
    workspace,
)


@app.command("ui")
def ui_cmd(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port")] = 5000,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the workspace's store (needs the `ui` extra: pip install 'propensity\\[ui]')."""
    import shutil
    import subprocess

    ws = workspace(ctx)
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
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML (default: the workspace's configs/rules.yaml from `init`, else the champion's, else the shipped rules/saas.yaml).")] = None,
    triggers: Annotated[Path | None, typer.Option("--triggers", help="Triggers YAML (e.g. configs/triggers.yaml); "
                                                  "none: no triggers.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Serve YAML (configs/serve.yaml).")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    model: Annotated[str, typer.Option("--model", help="Learned model served beside the rules: an alias or a "
                                       "version; none registered: rule scores only. 'none': never.")] = "champion",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the "
                                                   "train config's mlflow.model_name).")] = None,
) -> None:
    """Run the real-time scoring service (Segment-shaped ingest on /v1/track|identify|batch; needs the
    `serve` extra). Write keys come from $PROPENSITY_WRITE_KEYS; the store is <workspace>/serve.db,
    or PostgreSQL when $DATABASE_URL is set."""
    import sqlalchemy as sa
    import uvicorn

    from propensity.pipelines.serve.app import ServiceSettings, create_app
    from propensity.pipelines.serve.config import (
        load_serve_config,
        read_keys,
        write_keys,
    )
    from propensity.pipelines.serve.db import database_url

    # read-only: the service's own store is serve.db (or $DATABASE_URL); the workspace's DuckDB
    # file stays free for ingest, score and backfill while it runs
    ws = workspace(ctx, read_only=True)
    serve_config = load_serve_config(config)
    trigger_config = None
    if triggers is not None:
        from propensity.pipelines.activation.triggers import load_triggers

        trigger_config = load_triggers(triggers)
    url = database_url(ws.path)
    proj = project(ctx, read_only=True)
    rule_set, where, warnings = proj.rules(rules)
    note_resolved(where, "rules")
    warn(warnings)
    keys = write_keys(serve_config)  # before the model: a missing key fails at once
    registered = _served_model(proj, model, model_name, serve_config.allow_external_model, rule_set, where.path)
    settings = ServiceSettings(database_url=url, rules=rule_set, write_keys=keys,
                               config=serve_config, triggers=trigger_config, read_keys=read_keys(serve_config),
                               model=registered[0] if registered else None,
                               model_label=registered[1] if registered else "",
                               model_name=registered[2].name if registered else "",
                               model_version=str(registered[2].version) if registered else "",
                               monitor_history=ws.layout.monitor_history, tune_gc=True)
    # what the service scores with from now on: `explain --since` reads it back
    proj.record_use("serve", rules=rule_set, rules_source=where.path, model=registered[2] if registered else None)
    shown = sa.make_url(url).render_as_string(hide_password=True)
    console.print(f"propensity serve on http://{host}:{port}  rules {settings.rules.name}  store {shown}"
                  + (f"  triggers {triggers}" if triggers else "")
                  + (f"  model {settings.model_label}" if registered else "  model: none (rule scores only)")
                  + ("  (its rule__* inputs from the served rules)" if registered and registered[0].rule_inputs
                     else ""))
    note = _history_note(url, ws)
    if note:
        err.print(f"[yellow]note:[/] {note}")
    # one process: the writer and the score cache live in it (more workers would need a shared cache)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)


def _served_model(proj, model: str, model_name: str | None, allow_external: bool, rules=None,
                  rules_file: Path | None = None):
    """``(scorer, label, ModelContext)`` of the learned model the service scores live, or None (rule scores only).

    Through the one resolver (the train config's registry and model name), refusing a model whose
    pickled code lies outside this workspace unless the serve config trusts it. A model asked for
    by name that is missing or cannot be scored live is an error; the default (``champion``) falls
    back to rule scores and says why. A model that reads the rules' columns (``rule_inputs: true``)
    is scored live from the service's rule state, so only with the rules (``rules``, read from
    ``rules_file``) it was trained with: otherwise the message names both files.
    """
    from propensity.pipelines.errors import WorkspaceError
    from propensity.pipelines.serve.feature_plan import FeaturePlan
    from propensity.pipelines.serve.rule_inputs import rules_difference

    if model == "none":
        return None
    try:
        learned = proj.model(model, model_name, trusted_only=not allow_external)
    except WorkspaceError as exc:
        if model != "champion":
            raise
        err.print(f"[dim]no learned model served: {exc}[/]")
        return None
    label = f"{learned.name}@{model} v{learned.version}"
    try:
        FeaturePlan.from_scorer(learned.scorer)  # the features the service must compute live
        trained = learned.scorer.input_rules
        if trained is not None and rules is not None:
            difference = rules_difference(trained, rules, blends=bool(learned.scorer.blends_rules))
            if difference is not None:
                carried = learned.file("rules")
                trained_from = str(carried) if carried else f"the rules {trained.name!r} it carries"
                raise ValueError(f"it reads the rules' columns (rule__*) and was trained with {trained_from}, which "
                                 f"differ from the served {rules_file or repr(rules.name)}: {difference}"
                                 + (f"; serve it with --rules {carried}" if carried else ""))
    except ValueError as exc:
        if model != "champion":
            raise ValueError(f"{label} cannot be scored live: {exc}") from None
        err.print(f"[yellow]warning:[/] {label} is not scored live: {exc}; serving rule scores only "
                  "(`propensity score --model` scores it in batch)")
        return None
    return learned.scorer, label, learned


def _history_note(url: str, ws) -> str | None:
    """Say when the workspace holds events the service store does not: the service scores only the
    events it has received, so a user starting it on a batch workspace would otherwise read scores
    of 0 as if they came from the history."""
    import sqlalchemy as sa

    batch = ws.counts().get("events", 0) if ws.db_path.exists() else 0
    if not batch:
        return None
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            served = connection.execute(sa.text("SELECT COUNT(*) FROM events")).scalar_one()
    except sa.exc.SQLAlchemyError:  # a new store: its tables are created at start
        served = 0
    finally:
        engine.dispose()
    if served >= batch:
        return None
    return (f"the service store holds {served:,} events, the workspace {batch:,}: scores count only the events "
            "the service has received (`propensity backfill --url URL` sends it the history)")


@app.command("backfill")
def backfill_cmd(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="The running service, e.g. http://127.0.0.1:8080.")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=5000, help="Calls per /v1/batch request "
                                            "(also kept under 400 KB).")] = 500,
) -> None:
    """Send the workspace's contacts and events to a running service (oldest first, through /v1/batch), so its
    scores start from the history; a rerun stores nothing twice. The write key is the first of
    $PROPENSITY_WRITE_KEYS."""
    import os

    keys = [k.strip() for k in os.environ.get("PROPENSITY_WRITE_KEYS", "").split(",") if k.strip()]
    if not keys:
        raise typer.BadParameter("set PROPENSITY_WRITE_KEYS (the service's write key) first", param_hint="--url")
    with progress_bar() as progress:
        task = progress.add_task("send the history", total=None)

        def shown(report) -> None:
            progress.update(task, description=f"sent {report.contacts:,} contacts, {report.events:,} events")

        try:
            report = project(ctx, read_only=True).backfill(url, keys[0], batch_size=batch_size, progress=shown)
        except RuntimeError as exc:
            err.print(f"[red]backfill failed:[/] {exc}")
            raise typer.Exit(1) from None
        progress.update(task, completed=1, total=1)
    console.print(report.summary())


def service_engine(ctx: typer.Context):
    return project(ctx).service_engine()


@app.command("push")
def push_cmd(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="customerio, segment, webhook, hubspot or salesforce "
                                    "(the CRMs need the `crm` extra; docs/CRM.md).")],
    source: Annotated[str | None, typer.Option("--from", help="Scores file from `propensity score --out` "
                                               "(.parquet/.csv/.jsonl) or a table of the service database "
                                               "(score_state). Default: the newest file in <workspace>/scores.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send and record nothing.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Contacts per batch.")] = 100,
    rate: Annotated[float, typer.Option("--rate", min=0.01, help="Requests per second at most.")] = 20.0,
    preview_out: Annotated[Path | None, typer.Option("--preview-out", help="With --dry-run: write every request "
                                                     "it would send to this file (JSON lines).")] = None,
    triggers: Annotated[Path | None, typer.Option("--triggers", help="Triggers YAML whose `holdout` section "
                                                  "leaves held-out contacts out (default: the workspace's "
                                                  "configs/triggers.yaml if it has one; none: no holdout).")] = None,
    create_properties: Annotated[bool, typer.Option("--create-properties", help="hubspot/salesforce: create "
                                                    "the missing custom properties / fields first (with --dry-run: "
                                                    "list them).")] = False,
    crm_config: Annotated[Path | None, typer.Option("--crm-config", help="hubspot/salesforce: CRM YAML (default: "
                                                    "the workspace's configs/crm.yaml, else the shipped one).")] = None,
    changes: Annotated[Path | None, typer.Option("--changes", help="`propensity explain --since ... --out` output: "
                                                 "push each contact's reason for its last change too "
                                                 "(trait score_change_reason).")] = None,
) -> None:
    """Send scores as traits (intent_score, intent_band, propensity, top_reasons) to a tool; only contacts
    whose traits changed since the last push there. Credentials come from the environment only."""
    from propensity.pipelines.activation.push import (
        PushError,
        destination_from_env,
        summarise_preview,
    )

    if preview_out is not None and not dry_run:
        raise typer.BadParameter("--preview-out writes what a --dry-run would send: add --dry-run")
    crm = to in ("hubspot", "salesforce")
    if (create_properties or crm_config is not None) and not crm:
        raise typer.BadParameter("--create-properties and --crm-config are for --to hubspot or salesforce")
    if crm and (batch_size != 100 or rate != 20.0):  # not silently ignored: the CRMs' own limits apply
        raise typer.BadParameter(f"--to {to}: batches and request rates are set in crm.yaml ({to}.batch_size, "
                                 "requests_per_10_seconds, ...; docs/CRM.md), not with --batch-size / --rate")
    if not crm:
        destination_from_env(to)  # an unknown tool or missing credentials fail before any work
    proj = project(ctx)
    engine = proj.service_engine()
    try:
        contacts, label = proj.scores_to_push(source, engine, changes=changes)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--from") from None
    holdout = proj.push_holdout(triggers)
    if crm:
        from propensity.pipelines.cli.crm import push_to_crm

        push_to_crm(ctx, to, contacts, label, engine, dry_run=dry_run, preview_out=preview_out, holdout=holdout,
                    create_properties=create_properties, config=crm_config)
        return
    try:
        report = proj.push(to, contacts, engine, batch_size=batch_size, rate=rate, dry_run=dry_run,
                           preview_out=preview_out, holdout=holdout)
    except PushError as exc:
        err.print(f"[red]push failed:[/] {exc}")
        raise typer.Exit(1) from None
    verb, count = ("would send", report.contacts - report.unchanged) if report.dry_run else ("sent", report.sent)
    console.print(f"push to [bold]{report.destination}[/] from {label}: {report.contacts:,} contacts, "
                  f"{report.unchanged:,} unchanged since the last push; {verb} {count:,} in {report.batches:,} "
                  "batch(es)" + ("" if report.dry_run else f", {report.requests:,} request(s)")
                  + (f"; {report.held_out:,} changed contact(s) held out (experiment {holdout.experiment})"
                     if holdout is not None and holdout.push else ""))
    if report.dry_run and report.preview is not None:
        shown, left_out = summarise_preview(report.preview)
        console.print("first batch (no credentials shown" + (f"; {left_out:,} more item(s) not shown, "
                      f"--preview-out FILE writes every request in full" if left_out else "") + "):")
        console.print_json(data=shown, default=str)
        if preview_out is not None:
            console.print(f"every request written to {preview_out}")


@app.command("lift")
def lift_cmd(
    ctx: typer.Context,
    triggers: Annotated[Path | None, typer.Option("--triggers", help="Triggers YAML with the `holdout` section "
                                                  "(default: the workspace's configs/triggers.yaml).")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="Another experiment name than the "
                                                   "file's (an earlier holdout).")] = None,
    data_end: Annotated[str | None, typer.Option("--data-end", help="Windows ending after this are still open "
                                                 "(default: the newest outcome).")] = None,
    window_days: Annotated[float | None, typer.Option("--window-days", min=0.001, help="Conversion window "
                                                      "(default: the holdout's window_days).")] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0001, max=0.5, help="1 - confidence of the intervals.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    uplift: Annotated[str | None, typer.Option("--uplift", help="Also fit an uplift model on this trigger's "
                                               "exposures and compare it with the rule score's ranking on the "
                                               "later half (extra: pip install 'propensity[uplift]').")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="--uplift: the rules whose points are the "
                                               "features and whose score is the ranking (default: resolved as "
                                               "for `score`).")] = None,
) -> None:
    """Does acting on the score help? Conversion of treated vs held-out contacts per trigger (and push)
    and band, with a confidence interval, and the incremental conversions; windows that closed only."""
    import json
    import math

    proj = project(ctx, read_only=True)
    report = proj.lift(triggers, experiment=experiment, data_end=data_end, alpha=alpha, window_days=window_days)
    compared = None if uplift is None else proj.uplift(uplift, triggers, rules=rules, experiment=experiment,
                                                       data_end=data_end, window_days=window_days)
    for note in report.notes + (compared.notes if compared is not None else []):
        err.print(f"[dim]{note}[/]")
    if as_json:
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in report.table.to_dict("records")]
        extra = {} if compared is None else {"uplift": {"source": compared.source, "k": compared.k,
                                                        "fit_rows": compared.fit_rows,
                                                        "evaluated_rows": compared.evaluated_rows,
                                                        "rankings": compared.table.to_dict("records")}}
        console.print_json(json.dumps({"experiment": report.experiment, "window_days": report.window_days,
                                       "data_end": report.data_end.isoformat() if report.data_end else None,
                                       "alpha": report.alpha, "exposures": report.exposures,
                                       "still_open": report.still_open, "rows": rows, **extra}))
        return
    level = f"{1 - report.alpha:.0%}"
    table = Table(title=f"lift of experiment {report.experiment}: conversion within {report.window_days:g} days "
                        f"of the firing, treated vs held out ({level} intervals)")
    for column in ("trigger / push", "band", "treated", "held out", "difference", "incremental conversions",
                   "effect"):
        table.add_column(column)
    for row in report.table.to_dict("records"):
        table.add_row(row["source"], row["band"], _arm(row["treated_converted"], row["treated"]),
                      _arm(row["held_out_converted"], row["held_out"]), _points(row), _incremental(row),
                      row["effect"])
    console.print(table)
    if report.table.empty:
        console.print("(no exposure whose window has closed yet)")
    if compared is not None:
        ranks = Table(title=f"{compared.source}: uplift model vs propensity ranking on the later "
                            f"{compared.evaluated_rows:,} exposures")
        for column in ("ranking", "Qini coefficient", f"uplift in the top {compared.k:.0%}"):
            ranks.add_column(column, justify="left" if column == "ranking" else "right")
        for row in compared.table.itertuples(index=False):
            ranks.add_row(row.ranking, f"{row.qini:.3f}", f"{100 * row.uplift_at_k:+.1f} pts")
        console.print(ranks)


def _arm(converted: int, n: int) -> str:
    return f"{converted:,} of {n:,}" + (f" ({converted / n:.1%})" if n else "")


def _points(row: dict) -> str:
    if row["treated"] == 0 or row["held_out"] == 0:
        return "-"
    return (f"{100 * row['difference']:+.1f} pts [{100 * row['difference_low']:+.1f}, "
            f"{100 * row['difference_high']:+.1f}]")


def _incremental(row: dict) -> str:
    if row["treated"] == 0 or row["held_out"] == 0:
        return "-"
    return f"{row['incremental']:+,.0f} [{row['incremental_low']:+,.0f}, {row['incremental_high']:+,.0f}]"


@outbox_app.command("deliver")
def outbox_deliver_cmd(
    ctx: typer.Context,
    triggers: TriggersOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Messages to attempt at most.")] = 1000,
) -> None:
    """Send the outbox messages that are due, signed (URL and secret from the environment)."""
    from propensity.pipelines.activation.outbox import WebhookSender, deliver_due
    from propensity.pipelines.activation.triggers import load_triggers

    delivery = load_triggers(config_path(triggers, "triggers.yaml")).delivery
    engine = service_engine(ctx)
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
    from propensity.pipelines.activation.outbox import attempts_text, list_messages
    from propensity.pipelines.redaction import redact

    rows = list_messages(service_engine(ctx), dead=dead, pending_only=pending, limit=limit)
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
                      attempts_text(row), status, redact(row["last_error"] or "", limit=80))
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

    count = replay(service_engine(ctx), ids or (), all_dead=dead)
    console.print(f"queued {count:,} message(s) again; `propensity outbox deliver` (or the service) sends them")


@triggers_app.command("check")
def triggers_check_cmd(
    config: Annotated[Path | None, typer.Argument(help="Triggers YAML (default: the shipped triggers.yaml).")] = None,
) -> None:
    """Validate a triggers file and list its triggers."""
    from propensity.pipelines.activation.triggers import load_triggers

    config = config_path(config, "triggers.yaml")
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
    if cfg.holdout is not None:
        h = cfg.holdout
        console.print(f"holdout {h.experiment}: {h.share:.0%} of contacts held out of "
                      + (", ".join(h.triggers) if h.triggers is not None else "every trigger")
                      + (" and pushes" if h.push else "") + f"; `propensity lift` counts {h.outcome or 'any outcome'} "
                      f"within {h.window_days:g} days")


