"""`propensity score` and `explain`: 0-5 scores and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from propensity.pipelines.cli.common import (
    AsOfOpt,
    EngineConfigOpt,
    EngineOpt,
    SparkMasterOpt,
    SpineOpt,
    app,
    console,
    engine_tables,
    err,
    progress_bar,
    project,
    spine_choice,
    workspace,
)


@app.command("score")
def score_cmd(
    ctx: typer.Context,
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML (default: the workspace's configs/rules.yaml from `init`, else the champion's, else the shipped rules/saas.yaml).")] = None,
    as_of: AsOfOpt = None,
    spine: SpineOpt = None,
    level: Annotated[str, typer.Option("--level", help="contact or account.")] = "contact",
    out: Annotated[Path | None, typer.Option("--out", help="Output .parquet, .csv or .jsonl; - streams CSV to "
                                             "stdout (the summary then goes to stderr).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary (rows, bands, output, rules) "
                                          "instead of the table.")] = False,
    model: Annotated[str | None, typer.Option("--model", help="Score with a learned model instead: an alias "
                                              "(champion), a version number or a models:/ URI.")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the train "
                                                   "config's mlflow.model_name).")] = None,
    compiled: Annotated[bool, typer.Option("--compiled", help="--model: score with compiled trees (extra [fast] "
                                           "and gcc; the same predictions, about 2x faster).")] = False,
    engine: EngineOpt = None,
    engine_config: EngineConfigOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Score contacts (or accounts) 0-5 with hand-weighted rules point by point, or with a learned model."""
    from propensity.pipelines.outputs import STDOUT, check_output_path, write_frame

    # options checked before any work: a bad --level or --out fails at once
    if level not in ("contact", "account"):
        raise typer.BadParameter(f"must be contact or account, not {level!r}", param_hint="--level")
    check_output_path(out)
    streaming = out is not None and str(out) == STDOUT
    if as_json and streaming:
        raise typer.BadParameter("--json and --out - both write to stdout: choose one", param_hint="--json")

    if compiled:
        import os

        from propensity.pipelines.training.compiled import (
            ENV_VAR,
            compiled_trees_unavailable,
        )

        if model is None:
            raise typer.BadParameter("--compiled applies to learned models: add --model champion", param_hint="--compiled")
        if (reason := compiled_trees_unavailable()) is not None:
            raise typer.BadParameter(reason, param_hint="--compiled")
        os.environ[ENV_VAR] = "1"  # read when the pyfunc loads
    ws = workspace(ctx, read_only=True)
    tables = engine_tables(ws, engine, engine_config, spark_master)
    choice = spine_choice(as_of, spine, default_from=ws if tables is None else None)
    if model is not None:
        # the registry and model name the train config names (mlflow.tracking_uri, model_name), loaded once
        learned = project(ctx, read_only=True).model(model, model_name)
        model_name = learned.name
    if model is not None and tables is not None and tables.is_spark:
        from propensity.pipelines.spark.scoring import run_spark_model_scores

        path = out or ws.layout.scores / f"learned_scores_{choice.label()}"
        with progress_bar() as progress:
            task = progress.add_task(f"score on Spark with model {model_name}@{model}", total=None)
            run = run_spark_model_scores(ws, choice, model, model_name, tables, path, pyfunc=learned.pyfunc)
            progress.update(task, completed=1, total=1)
        table = Table(title=f"learned scores ({model_name}@{model}, Spark)")
        table.add_column("band"); table.add_column("rows", justify="right")
        for row in run.bands.itertuples():
            table.add_row(str(row.band), f"{row.rows:,}")
        console.print(table)
        console.print(f"{run.rows:,} rows -> {run.path} (Parquet folder)")
        return
    if model is not None:
        with progress_bar() as progress:
            task = progress.add_task(f"score with model {model_name}@{model}", total=None)
            scored = project(ctx, read_only=True).score_with_model(choice, model, model_name, tables=tables)
            progress.update(task, completed=1, total=1)
        path = write_frame(scored, out or ws.layout.scores / f"learned_scores_{choice.label()}.parquet")
        summarise_scores(scored, path, f"learned scores ({model_name}@{model})", as_json, streaming,
                         {"model": {"name": model_name, "ref": model}})
        return
    with progress_bar() as progress:
        task = progress.add_task("score with the rules", total=None)
        scored, rule_set = project(ctx, read_only=True).score(choice, rules=rules, level=level, tables=tables)
        progress.update(task, completed=1, total=1)
    values = scored.attrs.pop("attribute_values", None)  # fit criteria: as of the cut-off, or the latest
    path = write_frame(scored, out or ws.layout.scores / f"rule_scores_{level}_{choice.label()}.parquet")
    summarise_scores(scored, path, f"{rule_set.name} rule scores ({level})", as_json, streaming,
                     {"rules": {"name": rule_set.name}, "level": level,
                      **({"attribute_values": values} if values else {})})
    if values and not as_json:
        (err if streaming else console).print(values)


def summarise_scores(scored, path, title: str, as_json: bool, streaming: bool, extra: dict) -> None:
    """The band table and where the rows went; JSON with ``--json``; on stderr when rows stream to stdout."""
    import json

    if as_json:
        bands = scored["band"].value_counts(sort=False) if "band" in scored else {}
        cells = {"cells": {str(c): int(n) for c, n in scored["cell"].value_counts(sort=False).items()}} \
            if "cell" in scored else {}
        typer.echo(json.dumps({"rows": len(scored), "output": str(path), **extra,
                               "bands": {str(b): int(n) for b, n in dict(bands).items()}, **cells}))
        return
    target = err if streaming else console
    if "band" in scored:
        print_band_table(scored, title=title, to=target)
    if "cell" in scored:
        print_matrix(scored, to=target)
    target.print(f"{len(scored):,} rows -> {'stdout (CSV)' if streaming else path}")


def print_band_table(scored, title: str, bands=None, to=None) -> None:
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
    (to or console).print(table)


def print_matrix(scored, to=None) -> None:
    """Contacts per fit x engagement cell: fit A (best) to D down, engagement 1 (most) to 4 across."""
    counts = scored["cell"].value_counts(sort=False)
    table = Table(title="fit x engagement (A1 best; edges in the rules' matrix section)")
    table.add_column("fit / engagement")
    for digit in "1234":
        table.add_column(digit, justify="right")
    for letter in "ABCD":
        table.add_row(letter, *(f"{int(counts.get(letter + digit, 0)):,}" for digit in "1234"))
    (to or console).print(table)


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
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the "
                                                   "train config's).")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules YAML for the rule breakdown "
                                               "(default: the rules the model was trained against).")] = None,
    reasons: Annotated[int, typer.Option("--reasons", min=1, help="--all: reasons per contact.")] = 3,
    positive_only: Annotated[bool, typer.Option("--positive-only", help="--all: only reasons that raise the score.")] = False,
    since: Annotated[str | None, typer.Option("--since", help="Why the scores changed since this date (until --as-of, "
                                              "default after the latest event): new events, decay/expiry, "
                                              "attributes, rules/model.")] = None,
    changed_band: Annotated[bool, typer.Option("--changed-band", help="--since: every contact whose band changed "
                                               "(rule or learned); writes --out (.csv, .jsonl, .parquet).")] = False,
    rules_before: Annotated[Path | None, typer.Option("--rules-before", help="--since: the rules file that scored "
                                                      "the earlier date (default: the same rules).")] = None,
    model_before: Annotated[str | None, typer.Option("--model-before", help="--since: the model version that scored "
                                                     "the earlier date (default: the same model).")] = None,
    contacts_before: Annotated[Path | None, typer.Option("--contacts-before", help="--since: the contacts as they "
                                                         "were at the earlier date (default: attributes unchanged).")] = None,
    detail: Annotated[Path | None, typer.Option("--detail", help="--since --changed-band: also write every part "
                                                "(contact, score, component, group, points).")] = None,
) -> None:
    """Why a contact has its learned score: SHAP per activity and attribute in 0-5 points, beside the rule breakdown."""
    import json

    from propensity.pipelines.outputs import write_frame

    proj = project(ctx, read_only=True)
    if since is not None or changed_band:
        from propensity.pipelines.cli.changes import explain_change_cmd

        explain_change_cmd(proj, contact_id, since, as_of=as_of, changed_band=changed_band, out=out, detail=detail,
                           as_json=as_json, model=model, model_name=model_name, model_before=model_before,
                           rules=rules, rules_before=rules_before, contacts_before=contacts_before, reasons=reasons)
        return
    if all_:
        if contact_id is not None:
            raise typer.BadParameter("give a CONTACT_ID or --all, not both")
        choice = spine_choice(as_of, spine, default_from=proj.ws)
        with progress_bar() as progress:
            task = progress.add_task("explain every contact (pred_contrib)", total=None)
            report = proj.explain_all(choice, model=model, name=model_name, reasons=reasons,
                                      positive_only=positive_only)
            progress.update(task, completed=1, total=1)
        path = write_frame(report.reasons, out or proj.path / "explain" / f"reasons_{choice.label()}.parquet")
        (err if str(path) == "-" else console).print(f"{report.rows:,} contacts explained in {report.seconds_shap:.1f} s "
                      f"({report.rows_per_second:,.0f} rows/s) -> {path}")
        return
    if contact_id is None:
        raise typer.BadParameter("give a CONTACT_ID, or --all")
    result, learned, where = proj.explain(contact_id, as_of=as_of, model=model, name=model_name, rules=rules)
    if as_json:
        payload = result.to_dict()
        payload["rules"] |= {"file": str(where.path), "source": where.source}
        payload["model"] = {"name": learned.name, "version": learned.version, "uri": learned.uri}
        typer.echo(json.dumps(payload, indent=2, default=str))
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


