"""`propensity train`, `compare`, `tune`: learn from outcomes, judge against the rules, propose rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from propensity.pipelines.cli.common import (
    EngineConfigOpt,
    EngineOpt,
    SparkMasterOpt,
    app,
    config_path,
    console,
    engine_tables,
    isna,
    project,
    steps,
)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config YAML (default: the workspace's configs/train.yaml from `init`, else the shipped train.yaml).")] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow or register.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's figures as JSON instead of tables.")] = False,
    engine: EngineOpt = None,
    engine_config: EngineConfigOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Learn from outcomes: LightGBM + Optuna and learned rule points, calibrated onto 0-5, tracked in MLflow."""
    import optuna

    proj = project(ctx, read_only=True)
    ws = proj.ws
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with steps() as step:
        result = proj.train(config, step=step, track=not no_track,
                            tables=engine_tables(ws, engine, engine_config, spark_master))
    if as_json:
        import json

        typer.echo(json.dumps(result.to_dict(), default=str))
        return
    print_training(result)


def print_cutoffs(report) -> None:
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


def print_training(result) -> None:
    splits = Table(title="training set (time split)")
    for column in ("split", "rows", "positives", "cut-offs"):
        splits.add_column(column, justify="left" if column == "split" else "right")
    for name, row in result.summary["splits"].items():
        splits.add_row(str(name), f"{row['rows']:,}", f"{row['positives']:,}", str(row["cutoffs"]))
    console.print(splits)
    if getattr(result, "cutoffs", None) is not None:
        print_cutoffs(result.cutoffs)
    if result.summary.get("purged_rows"):
        console.print(f"{result.summary['purged_rows']:,} spine rows left out: their label windows would run into a later split")
    metrics = Table(title="test split: rule vs learned")
    for column in ("model", "ROC-AUC", "PR-AUC", "Brier", "ECE", "lift top 10%"):
        metrics.add_column(column, justify="left" if column == "model" else "right")
    test = result.metrics[result.metrics["split"] == "test"]
    for row in test.itertuples(index=False):
        metrics.add_row(row.model, f"{row.roc_auc:.3f}", f"{row.pr_auc:.3f}", f"{row.brier:.4f}", f"{row.ece:.4f}",
                        f"{row.lift_top10:.2f}")
    console.print(metrics)
    attributes = result.summary.get("attributes") or {}
    if attributes.get("note"):  # identifier-like contacts columns left out (or forced in): never silently
        console.print(f"[yellow]attributes: {attributes['note']}[/]")
    if attributes.get("values"):  # as of each cut-off (the attribute history) or the latest
        console.print(attributes["values"])
    rare = result.summary.get("rare_categories")
    if rare:  # values too rare to learn from read as missing: said, so an absent company effect is not a mystery
        from propensity.pipelines.training.matrix import MIN_EXPECTED_POSITIVES

        listed = ", ".join(f"{name} {r['dropped']:,} of {r['of']:,} values" for name, r in rare.items())
        console.print(f"[yellow]categories read as missing, held by too few training contacts to show an effect "
                      f"(under {MIN_EXPECTED_POSITIVES:g} conversions expected at the base rate): {listed}[/]")
    search = result.summary.get("search")
    if search is not None:
        console.print(f"search: {search['trials_completed']} of {search['n_trials']} trials on "
                      f"{search['search_rows']:,} train rows" + (", refitted on all" if search["refitted"] else "")
                      + f", {search['fit_seconds']:g} s")
        if search["cut_by_time_budget"]:
            console.print(f"[yellow]{search['note']}[/]")
    shift = result.summary.get("calibration_shift")
    if shift and "test" in shift and "valid" in shift:  # the calibration on the next period, per test cut-off
        console.print(f"calibration on test: rate {shift['test']['rate']:.3f} vs mean probability "
                      f"{shift['test']['mean_probability']:.3f}, ECE {shift['test']['ece']:.4f} (valid {shift['valid']['ece']:.4f})"
                      + "".join(f"; {c['as_of']} rate {c['rate']:.3f} vs {c['mean_probability']:.3f}"
                                for c in shift["test_by_cutoff"][:4]))
    blend = result.summary.get("rule_inputs")
    if blend is not None:  # the rules as an input: what validation chose, in one line
        console.print(f"rules as input: valid ROC-AUC model {blend['valid_auc_model']:.4f}, rules "
                      f"{blend['valid_auc_rules']:.4f}, kept {blend['valid_auc_blend']:.4f} "
                      + ("(the model alone)" if blend["alpha"] == 0 else f"(rule score blended in at {blend['alpha']:g})"))
    if result.points_only:
        positives, floor = result.summary.get("positives_train"), result.summary.get("points_only_below")
        console.print(f"[yellow]few positives: {positives:,} in the train split, under points_only_below ({floor:,}) in "
                      "the train config, so no LightGBM model was fitted, only the points model (hand weights as "
                      "prior); lower points_only_below to fit one anyway, or add cut-offs / a longer horizon[/]")
    if result.leakage_allowed:
        console.print(f"[yellow]leakage guard overridden for: {', '.join(result.leakage_allowed)}[/]")
    console.print(f"learned rules: {result.learned_rules_path}  (run them: propensity score --rules {result.learned_rules_path} ...)")
    if result.run_id:
        console.print(f"MLflow run {result.run_id} at {result.tracking_uri}")
    if result.model_version:
        console.print(f"registered version {result.model_version}: {result.registry.reason}"
                      + (" -> now [bold]champion[/]" if result.registry.promoted else ""))


@app.command("tune")
def tune_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config YAML (grid, labels, splits; default: the one the model was trained with).")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="The rules to tune (default: the config's).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the proposal goes (never the live rules).")] = Path("rules.proposed.yaml"),
    model: Annotated[str, typer.Option("--model", help="Alias, version or models:/ URI of the learned model.")] = "champion",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the config's).")] = None,
    fit_rows: Annotated[int, typer.Option("--fit-rows", min=100, help="Train/valid rows sampled for SHAP.")] = 40_000,
    no_new_rules: Annotated[bool, typer.Option("--no-new-rules", help="Only re-weight the existing rules.")] = False,
    no_reshape: Annotated[bool, typer.Option("--no-reshape", help="Keep half-lives and caps as they are.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write the proposal even when it is not offered (gain not clear of zero, or earlier cut-offs disagree).")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the figures as JSON.")] = None,
) -> None:
    """Propose rule points (and new rules) from the learned model's SHAP values; backtest on the test split."""
    import json

    from propensity.pipelines.tune.jobs import write_proposal
    from propensity.pipelines.tune.propose import TuneConfig

    proj = project(ctx, read_only=True)
    with steps() as step:
        result, rules_path = proj.tune(model, model_name, config=config, rules=rules, proposal_path=out,
                                       tune_config=TuneConfig(new_rules=not no_new_rules, reshape=not no_reshape),
                                       fit_rows=fit_rows, step=step)
    rule_set = result.current_rules
    changes = Table(title=f"proposed changes to {rule_set.name} (from SHAP on {result.fit_rows:,} train/valid rows)")
    for column in ("rule", "status", "reads", "SHAP share", "points", "shape", "note"):
        changes.add_column(column, justify="right" if column == "SHAP share" else "left")
    for row in result.proposal.changes.itertuples(index=False):
        before = "-" if isna(row.current_points) else f"{row.current_points:g}"
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
        volumes.add_row(*["-" if isna(v) else (f"{int(v):,}" if not isinstance(v, str) else v) for v in row])
    console.print(volumes)
    closed = "" if isna(result.gap_closed) else f"; closes {result.gap_closed:.0%} of the ROC-AUC gap to the learned model"
    console.print(("[green]" if result.offered else "[yellow]") + result.reason + closed + "[/]")
    path = write_proposal(result, out, live=rules_path, force=force)
    if path is not None:
        console.print(("" if result.offered else "[yellow]written because of --force; NOT offered (see above)[/]\n")
                      + f"proposal: {path}  (diff: {path.with_suffix('.diff')}; the diff beside its evidence: "
                      f"{path.with_suffix('.md')}; "
                      f"run it: propensity score --rules {path} --as-of DATE)")
    else:
        console.print("no file written (use --force to write it anyway)")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.summary(), indent=2, default=str), encoding="utf-8")
        console.print(f"figures: {report}")


@app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="Training config: decides the test cut-off (default: the one the model was trained with).")] = None,
    compare_config: Annotated[Path | None, typer.Option("--compare-config", help="Compare settings YAML (default: the shipped compare.yaml).")] = None,
    model: Annotated[str, typer.Option("--model", help="Learned model: an alias (champion), a version or a models:/ URI.")] = "champion",
    model_name: Annotated[str | None, typer.Option("--model-name", help="Registered model name (default: the config's).")] = None,
    learned_rules: Annotated[Path | None, typer.Option("--learned-rules", help="Learned points file (default: the one trained with the model).")] = None,
    k: Annotated[str | None, typer.Option("--k", help="Top-k percentages, e.g. 5,10,20 (default: the compare config's).")] = None,
    backtest: Annotated[bool, typer.Option("--backtest", help="Also refit and score past cut-offs (walk-forward).")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Where compare.json and compare.html go (default <ws>/reports).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compare.json to stdout instead of the tables.")] = False,
) -> None:
    """Compare rule vs learned vs learned points on the held-out cut-off: metrics with intervals, report."""
    from propensity.pipelines.compare import (
        load_compare_config,
        parse_k_list,
        write_report,
    )
    proj = project(ctx, read_only=True)
    settings = load_compare_config(config_path(compare_config, "compare.yaml"))
    if k is not None:
        settings = settings.model_copy(update={"top_k_percent": parse_k_list(k)})
    with steps() as step:
        comparison = proj.compare(model, model_name, config=config, settings=settings, learned_rules=learned_rules,
                                  backtest=backtest, step=step)
        step("write the report")
        paths = write_report(comparison, out_dir or proj.ws.layout.reports)
    if as_json:
        typer.echo(paths["json"].read_text(encoding="utf-8"))
        return
    print_comparison(comparison)
    console.print(f"report: {paths['html']}\nnumbers: {paths['json']}")


def print_comparison(comparison) -> None:
    from propensity.pipelines.compare.verdict import plain_verdict

    for sentence in plain_verdict(comparison):
        console.print(f"[bold]{sentence}[/]")
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
        from propensity.pipelines.compare.backtest import backtest_models, gap_stability

        table = Table(title="backtest: refitted at each past cut-off, ROC-AUC (gap vs rules, paired 95% CI)")
        table.add_column("cut-off")
        columns = backtest_models(comparison.models, comparison.backtest)
        for model in columns:
            table.add_column(model, justify="right")
        for as_of, part in comparison.backtest.groupby("as_of"):
            cells = part.set_index("model")
            row = []
            for model in columns:
                if model not in cells.index:
                    row.append("-")
                elif model == comparison.reference:
                    row.append(f"{cells.loc[model, 'roc_auc']:.3f}")
                else:
                    r = cells.loc[model]
                    row.append(f"{r['roc_auc']:.3f} ({r['roc_auc_gap']:+.3f}, {r['roc_auc_gap_low']:+.3f} to {r['roc_auc_gap_high']:+.3f})")
            table.add_row(f"{as_of:%Y-%m-%d}", *row)
        console.print(table)
        for sentence in gap_stability(comparison.backtest, comparison.reference):
            console.print(f"backtest: {sentence}")
    for note in comparison.backtest_notes:
        console.print(f"[yellow]backtest: {note}[/]")
    for warning in comparison.warnings:
        console.print(f"[yellow]{warning}[/]")


