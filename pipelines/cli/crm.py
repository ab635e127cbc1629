"""`push --to hubspot|salesforce` and `ingest ... --from hubspot|salesforce`: rendering of the CRM parts."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from propensity.pipelines.cli.common import console, err, project


def push_to_crm(ctx: typer.Context, to: str, contacts, label: str, engine, *, dry_run: bool, preview_out,
                holdout, create_properties: bool, config) -> None:
    from propensity.pipelines.activation.push import PushError, summarise_preview
    from propensity.pipelines.activation.retrying import DeliveryFailure

    try:
        report = project(ctx).push_crm(to, contacts, config=config, engine=engine, dry_run=dry_run,
                                       preview_out=preview_out, holdout=holdout,
                                       create_properties=create_properties, source=label)
    except (PushError, DeliveryFailure) as exc:  # DeliveryFailure: --create-properties, before any record
        err.print(f"[red]push failed:[/] {exc}")
        raise typer.Exit(1) from None
    if report.properties:
        table = Table(title=f"{to} custom properties" + (" (dry run: nothing created)" if dry_run else ""))
        for column in ("object", "name", "label", "type", "state"):
            table.add_column(column)
        for p in report.properties:
            state = "exists" if p.exists else ("would create" if dry_run else "created")
            sep = "/" if to == "hubspot" else ""  # HubSpot: type/fieldType; Salesforce: Text(80), Number(3, 2)
            table.add_row(p.object_type, p.name, p.label, f"{p.type}{sep}{p.field_type}" + (" unique" if p.unique else ""),
                          state)
        console.print(table)
    for r in report.reports:
        verb, count = ("would send", r.contacts - r.unchanged - r.held_out) if r.dry_run else ("sent", r.sent)
        console.print(f"push to [bold]{r.destination}[/] from {label}: {r.contacts:,} records, {r.unchanged:,} "
                      f"unchanged since the last push; {verb} {count:,} in {r.batches:,} batch(es)"
                      + ("" if r.dry_run else f", {r.requests:,} request(s)")
                      + (f"; {r.held_out:,} changed contact(s) held out" if r.held_out else ""))
        for key, why in list(r.refused.items())[:10]:
            err.print(f"[yellow]refused by {to}:[/] {key}: {why} (not recorded: the next push tries it again)")
        if len(r.refused) > 10:
            err.print(f"[yellow]... and {len(r.refused) - 10:,} more refused[/]")
        if r.dry_run and r.preview is not None:
            shown, _ = summarise_preview(r.preview)
            console.print(f"first {r.destination} batch (no credentials shown):")
            console.print_json(json.dumps(shown, default=str))
    if report.skipped:
        first = next(iter(report.skipped.items()))
        err.print(f"[yellow]{len(report.skipped):,} scored contact(s) not sent to {to}[/], e.g. {first[0]}: {first[1]}")
    if not dry_run:
        console.print(f"{to}: {report.requests:,} request(s), {report.retries:,} retried")


def pull_from_crm(ctx: typer.Context, kind: str, crm: str, config, full: bool) -> None:
    from propensity.pipelines.activation.retrying import DeliveryFailure
    from propensity.pipelines.cli.data import print_ingest

    if crm not in ("hubspot", "salesforce"):
        raise typer.BadParameter(f"--from {crm!r}: expected hubspot or salesforce")
    try:
        report = project(ctx).pull_crm(crm, kind, config=config, full=full)
    except DeliveryFailure as exc:
        err.print(f"[red]pull from {crm} failed:[/] {exc} (nothing was loaded; the next pull starts from the same point)")
        raise typer.Exit(1) from None
    what = {"outcomes": "won deals" if crm == "hubspot" else "won opportunities", "contacts": "people"}[kind]
    console.print(f"{crm}: {report.fetched:,} {what} modified " + (f"since {report.since}" if report.since else
                  "(everything: first pull)") + f"; next pull from {report.newest or 'the start'}")
    print_ingest(kind, report.ingest)
