"""`propensity explain --since`: why a score changed, rendered (parse -> Project -> render)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from propensity.pipelines.cli.common import console, err, progress_bar

__all__ = ["explain_change_cmd"]

_TITLES = {"decay_expiry": "decay and expiry of older events", "new_events": "new events",
           "fit": "changed attributes", "rules": "rules file changed", "model": "model version changed"}


def explain_change_cmd(proj, contact_id: str | None, since: str | None, *, as_of: str | None, changed_band: bool,
                       out: Path | None, detail: Path | None, as_json: bool, model: str, model_name: str | None,
                       model_before: str | None, rules: Path | None, rules_before: Path | None,
                       contacts_before: Path | None, reasons: int) -> None:
    from propensity.pipelines.outputs import check_output_path, write_frame

    if since is None:
        raise typer.BadParameter("--changed-band explains a change: give --since DATE", param_hint="--since")
    if changed_band == (contact_id is not None):
        raise typer.BadParameter("give a CONTACT_ID or --changed-band with --since, not both (nor neither)")
    check_output_path(out)
    check_output_path(detail)
    options = {"as_of": as_of, "model": model, "name": model_name, "model_before": model_before, "rules": rules,
               "rules_before": rules_before, "contacts_before": contacts_before}
    if changed_band:
        with progress_bar() as progress:
            task = progress.add_task("explain every change of band", total=None)
            report = proj.explain_change(None, since, **options)
            progress.update(task, completed=1, total=1)
        label = f"{report.since:%Y-%m-%d}_{report.until:%Y-%m-%d}"
        path = write_frame(report.summary(reasons), out or proj.path / "explain" / f"changes_{label}.csv")
        if detail is not None:
            write_frame(report.parts(), detail)
        target = err if str(path) == "-" else console
        for note in report.notes:
            target.print(f"[yellow]note:[/] {note}")
        target.print(f"{len(report.rule):,} contacts changed band between {report.since:%Y-%m-%d} and "
                     f"{report.until:%Y-%m-%d} -> {path}" + (f" (parts -> {detail})" if detail else ""))
        return
    report = proj.explain_change(contact_id, since, **options)
    if as_json:
        typer.echo(json.dumps(report.to_dict(contact_id), indent=2, default=str))
        return
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    for split in report.splits():
        _print_split(split, contact_id)


def _print_split(split, contact_id: str) -> None:
    row = list(split.contact_ids.astype(str)).index(str(contact_id))
    bands = ""
    if split.band_before is not None:
        bands = f" ({split.band_before[row]} -> {split.band_after[row]})"
    console.print(f"[bold]{contact_id}[/] {split.score} score {split.before[row]:.2f} on {split.since:%Y-%m-%d} -> "
                  f"[bold]{split.after[row]:.2f}[/] on {split.until:%Y-%m-%d}{bands}: "
                  f"[bold]{split.change[row]:+.2f}[/]")
    table = Table(title=f"{split.score} score: what changed it (0-5 points, sums to the change)")
    for column in ("part", "reason", "points"):
        table.add_column(column, justify="right" if column == "points" else "left")
    components = split.components().iloc[row]
    parts = split.parts(row)
    for component, total in components.items():
        table.add_row(f"[bold]{_TITLES.get(component, component)}[/]", "", f"[bold]{total:+.3f}[/]")
        for item in parts[parts["component"] == component].itertuples(index=False):
            if abs(item.points) >= 0.0005 and component not in ("rules", "model"):
                table.add_row("", item.reason, f"{item.points:+.3f}")
    console.print(table)
