"""Propose rule points from the learned model's SHAP contributions (pure; no I/O).

The idea
--------
The learned model's SHAP values split its margin (log-odds) exactly over its features; summed
per group (an event type's features; an attribute) they say how much the model credits that
activity or attribute with, contact by contact. A rule contributes ``points x u_r(i)``, where
``u_r`` is its per-unit column (its decayed, expiring, capped event count with points 1, or 0/1
for a fit criterion). The points come from a least-squares fit of the learned model's log-odds
on the rules' columns over the fitted rows:

* ``target="margin"`` (default): one joint fit ``sum_G phi_G(i) ~ a + sum_r beta_r u_r(i)``
  of the whole SHAP sum (the margin minus its base). Rules then also carry the part of the
  signal that sits in groups no rule can read but that is correlated with rules that can
  (overall activity, account activity): on OULAD those groups hold ~37% of the mean |SHAP|, and
  per-group fits closed 6% of the test ROC-AUC gap instead of 32% (the valid split ranks the
  two the same way).
* ``target="groups"``: for each group ``G`` separately, ``phi_G(i) ~ a_G + sum_{r reads G}
  beta_r u_r(i)``: each rule gets exactly what the model credits its own event type with.

``beta_r`` is the log-odds per unit of rule ``r``; the intercept absorbs the SHAP centring (SHAP
is relative to the average contact, rules to "nothing happened"). The per-group SHAP values also
choose shapes, decide which new rules are worth adding and which rules carry no signal (below).
No outcome is used: the proposal distils the learned model, which was itself fitted on the
train split and early-stopped on valid, so judging the proposal on test stays honest.

Shapes (the optional half-life / expiry / cap search, done as a small grid, not Optuna)
---------------------------------------------------------------------------------------
Each hand activity is also tried with other half-lives, and each shape with caps at a few
quantiles of its positive per-unit values (or none); the shape whose column best explains
``phi_G`` (R^2) wins, but a hand rule keeps its own shape unless another is better by
``reshape_margin`` of R^2. Event types no unfiltered rule reads get new-rule candidates (decay
half-lives, or a plain count over a window), kept when the group carries at least ``min_share``
of the model's mean ``|SHAP|`` and the best shape explains at least ``min_r2`` of it. Attributes
without a criterion get up to ``max_fit_bins - 1`` new criteria from a small regression tree
of ``phi_A`` on the attribute (numbers: ``min``/``max`` ranges; text: ``in`` lists); the bin
holding most contacts is the reference and earns no points.

From log-odds to points
-----------------------
The proposed total in log-odds is ``L = sum_r beta_r u_r``; one factor ``k`` (points per
log-odds) puts it on the hand file's scale by least squares over the quantiles where the hand
file's meaning lives (the shares of rows below each band edge and threshold), so the ``scale``,
bands and thresholds can stay as they are. Points are ``k beta_r / weight`` (the hand weight is
kept) rounded with :func:`nice_round`; a cap ``c`` found in per-unit terms becomes
``points x c``, rounded the same way.

Signal
------
A hand rule is flagged ``no signal`` when the group it reads carries less than ``min_share``
of the mean ``|SHAP|``, or its proposed points round to 0; with ``zero_no_signal`` it also gets
0 points (by default it stays in the joint fit, where it may stand in for a correlated group).
Groups rules cannot express (``all_activity``, ``account``, ``tenure``) are listed with their
share, so a user sees how much of the learned model is out of reach of any rules file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.features.build import safe_name
from propensity.pipelines.rules.config import Activity, FitCriterion, RuleSet
from propensity.pipelines.rules.rounding import nice_ceil, nice_round, points_resolution
from propensity.pipelines.training.points import edge_quantiles, points_per_logodds
from propensity.pipelines.tune.candidates import Candidate
from propensity.pipelines.tune.config import Proposal, TuneConfig
from propensity.pipelines.tune.shapes import (
    _best_shape,
    _lstsq,
    _r2,
    _shape_text,
    criterion_matches,
    fit_criteria_for,
    unit_capped,
)

__all__ = ["Proposal", "TuneConfig", "criterion_matches", "fit_criteria_for", "propose_rules", "unit_capped"]


def propose_rules(
    rules: RuleSet,
    group_logodds: pd.DataFrame,
    group_kinds: dict[str, str],
    unit_raw: pd.DataFrame,
    candidates: list[Candidate],
    attributes: pd.DataFrame | None,
    hand_total: np.ndarray,
    config: TuneConfig = TuneConfig(),
) -> Proposal:
    """Propose points (and shapes, and new rules) from SHAP group contributions.

    Parameters
    ----------
    rules : RuleSet
        The hand rules.
    group_logodds : pandas.DataFrame
        Rows x groups: the learned model's SHAP values summed per group (log-odds).
    group_kinds : dict
        Group -> ``event``, ``fit``, ``account`` or ``activity``.
    unit_raw : pandas.DataFrame
        Rows x candidate columns: uncapped per-unit raw points of each candidate.
    candidates : list of Candidate
    attributes : pandas.DataFrame or None
        Rows x contact attributes (aligned with the other frames).
    hand_total : numpy.ndarray
        The hand rules' total points on the same rows (to choose ``k``).
    config : TuneConfig

    Returns
    -------
    Proposal
    """
    n = len(group_logodds)
    if len(unit_raw) != n or len(hand_total) != n or (attributes is not None and len(attributes) != n):
        raise ValueError("group_logodds, unit_raw, attributes and hand_total must have one row each per fitted row")
    phi = {g: group_logodds[g].to_numpy(dtype="float64") for g in group_logodds.columns}
    mean_abs = group_logodds.abs().mean()
    share = (mean_abs / mean_abs.sum()).to_dict() if mean_abs.sum() > 0 else {g: 0.0 for g in mean_abs.index}
    by_rule: dict[str, list[Candidate]] = {}
    new_by_group: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.existing is not None:
            by_rule.setdefault(c.existing, []).append(c)
        else:
            new_by_group.setdefault(c.group, []).append(c)
    lookup = {c.column: c for c in candidates}
    zeros = np.zeros(n)

    notes: dict[str, list[str]] = {}  # rule -> what was clamped or kept, and why

    # 1. shapes: one column per activity (hand ones, then new ones)
    chosen: list[dict] = []
    for activity in rules.activities:
        group = safe_name(activity.event)
        y = phi.get(group, zeros)
        options = by_rule.get(activity.name, [])
        own = next((c for c in options if c.activity.half_life_days == activity.half_life_days
                    and c.activity.expires_after_days == activity.expires_after_days), None)
        if own is None:
            raise ValueError(f"no candidate column for rule {activity.name!r}")
        unit = activity.points * activity.weight
        own_cap = activity.cap / unit if activity.cap is not None and unit > 0 else None
        if own_cap is not None and own_cap < 1:
            notes.setdefault(activity.name, []).append(
                f"the hand cap {activity.cap:g} swallowed {unit:g} points per event: cap raised to one event's points")
            own_cap = 1.0
        own_values = unit_capped(unit_raw[own.column].to_numpy(dtype="float64"), own_cap)
        column, cap, r2 = own.column, own_cap, _r2(y, own_values)
        if config.reshape and group in phi:
            best = _best_shape(y, unit_raw, [c.column for c in options], config.cap_quantiles)
            if best[2] > r2 + config.reshape_margin:
                column, cap, r2 = best
        chosen.append({"rule": activity.name, "group": group, "column": column, "cap": cap, "r2": r2,
                       "activity": activity, "new": False})
    if config.new_rules:
        taken = {a.name for a in rules.activities} | {f.name for f in rules.fit}
        for group, options in new_by_group.items():
            if group not in phi or share.get(group, 0.0) < config.min_share:
                continue
            column, cap, r2 = _best_shape(phi[group], unit_raw, [c.column for c in options], config.cap_quantiles)
            if r2 < config.min_r2:
                continue
            name = group if group not in taken else f"{group}_any"
            taken.add(name)
            base = lookup[column].activity
            chosen.append({"rule": name, "group": group, "column": column, "cap": cap, "r2": r2,
                           "activity": base.model_copy(update={"name": name, "description": "proposed by propensity tune"}),
                           "new": True})

    if config.second_shapes and config.target == "margin":  # see the uncapping after the joint fit
        chosen += _second_shapes(chosen, phi, unit_raw, by_rule, new_by_group, lookup, config)

    # 2. fit criteria: hand ones, then new ones for attributes with signal and no criterion
    criteria: list[dict] = []
    for criterion in rules.fit:
        criteria.append({"criterion": criterion, "group": criterion.attribute, "new": False})
    if config.new_rules and attributes is not None:
        with_criteria = {c.attribute for c in rules.fit}
        for group, kind in group_kinds.items():
            if kind != "fit" or group in with_criteria or group not in attributes.columns:
                continue
            if share.get(group, 0.0) < config.min_share:
                continue
            for criterion in fit_criteria_for(group, attributes[group], phi[group],
                                              max_bins=config.max_fit_bins, min_share=config.min_bin_share):
                criteria.append({"criterion": criterion, "group": group, "new": True})
    indicator = {}
    for item in criteria:
        crit = item["criterion"]
        values = attributes[crit.attribute] if attributes is not None and crit.attribute in attributes else pd.Series([None] * n)
        indicator[crit.name] = criterion_matches(crit, values.reset_index(drop=True))

    # 3. per-group regressions: log-odds per unit of each column
    columns: dict[str, np.ndarray] = {}
    for item in chosen:
        columns[item["rule"]] = unit_capped(unit_raw[item["column"]].to_numpy(dtype="float64"), item["cap"])
    for item in criteria:
        columns[item["criterion"].name] = indicator[item["criterion"].name]
    members: dict[str, list[str]] = {}
    for item in chosen:
        members.setdefault(item["group"], []).append(item["rule"])
    for item in criteria:
        members.setdefault(item["group"], []).append(item["criterion"].name)
    # hand rules whose group the model hardly uses: flagged, and given 0 points when asked
    silent = {name for group, names in members.items() for name in names
              if share.get(group, 0.0) < config.min_share}
    beta: dict[str, float] = {}
    group_r2: dict[str, float] = {}
    for group, names in members.items():
        y = phi.get(group, zeros)
        x = np.column_stack([columns[m] for m in names])
        slopes = _lstsq(y, x) if group in phi else np.zeros(len(names))
        beta.update(zip(names, slopes.tolist()))
        group_r2[group] = _r2(y, x @ slopes) if group in phi else 0.0
    own_beta = dict(beta)  # what the model credits each rule's own group with
    margin = group_logodds.sum(axis=1).to_numpy(dtype="float64")
    joint = [m for m in columns if not (config.zero_no_signal and m in silent)]
    if config.target == "margin":
        # one joint fit of the whole margin: rules also carry the signal of correlated groups no
        # rule can read (all activity, account), which per-group fits would leave out
        slopes = _lstsq(margin, np.column_stack([columns[m] for m in joint]))
        beta = {m: 0.0 for m in columns} | dict(zip(joint, slopes.tolist()))
        # the engine caps positive raws only: a capped second shape the fit gave negative points
        # would be scored uncapped, so it is fitted uncapped (once, then the joint fit again)
        negative = [item for item in chosen if item.get("second_of") and item["cap"] is not None
                    and beta[item["rule"]] < 0]
        for item in negative:
            item["cap"] = None
            columns[item["rule"]] = unit_raw[item["column"]].to_numpy(dtype="float64")
        if negative:
            slopes = _lstsq(margin, np.column_stack([columns[m] for m in joint]))
            beta = {m: 0.0 for m in columns} | dict(zip(joint, slopes.tolist()))
    elif config.zero_no_signal:
        beta.update({m: 0.0 for m in silent})

    # 4. one factor onto the hand scale
    logodds_total = sum(beta[name] * values for name, values in columns.items())
    # the learned points model's own scale matching, so tuned and learned points share one scale
    quantiles = config.quantiles or edge_quantiles(hand_total, rules)
    k = points_per_logodds(np.asarray(logodds_total, dtype="float64"), hand_total, quantiles)

    # 4b. a hand rule the model uses is never cut to ~0 (nor flipped against its own group)
    resolution = points_resolution([a.points for a in rules.activities] + [f.points for f in rules.fit])
    hand = {item["rule"]: (item["activity"].points, item["activity"].weight, item["group"])
            for item in chosen if not item["new"]}
    hand |= {item["criterion"].name: (item["criterion"].points, 1.0, item["group"])
             for item in criteria if not item["new"]}
    # a hand rule with a second shape of its event is judged with it: the pair says what one shape
    # could not (a short decay against a long one may need opposite signs)
    paired = {item["second_of"]: item["rule"] for item in chosen if item.get("second_of")}
    for name, second in paired.items():
        notes.setdefault(name, []).append(f"its event is also read by {second}: the two rules' points are fitted together")
    fixed = _kept_points({m: v for m, v in hand.items() if m not in paired}, beta, own_beta, share, k, resolution,
                         config, notes)
    if fixed:
        offset = sum(fixed[m] * hand[m][1] / k * columns[m] for m in fixed)
        for m in fixed:
            beta[m] = fixed[m] * hand[m][1] / k
        free = [m for m in joint if m not in fixed]
        if config.target == "margin" and free:
            # the joint fit again, around the kept rules, on the same scale k
            slopes = _lstsq(margin - offset, np.column_stack([columns[m] for m in free]))
            beta.update(zip(free, slopes.tolist()))

    # 5. the proposed file, rounded
    activities, rows, shapes = [], [], {}
    for item in chosen:
        activity: Activity = item["activity"]
        weight = activity.weight if not item["new"] else 1.0
        exact = k * beta[item["rule"]] / weight
        step = _per_event_resolution(columns[item["rule"]], resolution) if item.get("second_of") else resolution
        points = fixed.get(item["rule"], nice_round(exact, resolution=step))
        shape = lookup[item["column"]].activity
        update = {"points": points, "half_life_days": shape.half_life_days,
                  "expires_after_days": shape.expires_after_days, "cap": None}
        # the engine caps positive raws only: a negative rule keeps no cap (its fit was on the capped column)
        if item["cap"] is not None and points > 0:
            per_event = points * weight
            cap = nice_round(per_event * item["cap"], resolution=resolution)
            if cap < per_event:  # rounding put the cap under one event's points: the cap would swallow them
                cap = nice_ceil(per_event, resolution=resolution)
                notes.setdefault(item["rule"], []).append(
                    f"cap raised to {cap:g} so that one event's {per_event:g} points are not swallowed")
            update["cap"] = cap
        proposed = activity.model_copy(update=update)
        activities.append(proposed)
        shapes[proposed.name] = (item["column"], item["cap"])
        current_text = _shape_text(activity, activity.cap) if not item["new"] else ""
        rows.append(_change_row(item, "activity", activity if not item["new"] else None, proposed,
                                share.get(item["group"], 0.0), group_r2.get(item["group"], 0.0),
                                beta[item["rule"]], current_text, _shape_text(proposed, proposed.cap), config))
    fit = []
    for item in criteria:
        crit: FitCriterion = item["criterion"]
        proposed = crit.model_copy(update={"points": fixed.get(crit.name, nice_round(k * beta[crit.name], resolution=resolution))})
        fit.append(proposed)
        rows.append(_change_row(item | {"rule": crit.name}, "fit", crit if not item["new"] else None, proposed,
                                share.get(item["group"], 0.0), group_r2.get(item["group"], 0.0),
                                beta[crit.name], "", "", config))
    # evidence: each rule's share of the proposed points (mean |points| on the fitted rows) beside
    # its group's share of the model's mean |SHAP|
    amounts = {a.name: np.abs(a.points * a.weight * columns[a.name]).mean() for a in activities}
    amounts |= {c.name: np.abs(c.points * columns[c.name]).mean() for c in fit}
    total_amount = sum(amounts.values()) or 1.0
    for row in rows:
        row["points_share"] = float(amounts[row["rule"]] / total_amount)
        evidence = f"SHAP share {row['share']:.1%} of mean |SHAP| vs {row['points_share']:.1%} of the rule points"
        row["note"] = "; ".join([*notes.get(row["rule"], []), *([row["note"]] if row["note"] else []), evidence])
    data = rules.model_dump(by_alias=True)
    data.update(
        name=f"{rules.name}_proposed",
        description=(f"{rules.name} with points proposed from the learned model's SHAP values by propensity tune "
                     f"({k:.4g} points per unit of log-odds, matched at quantiles {[round(q, 3) for q in quantiles]})."),
        activities=[a.model_dump(by_alias=True) for a in activities],
        fit=[c.model_dump(by_alias=True) for c in fit],
    )
    proposed_rules = RuleSet.model_validate(data)  # validated again: the file must load as is
    reachable = set(members)
    out_of_reach = pd.DataFrame(
        [{"group": g, "kind": group_kinds.get(g, ""), "share": share.get(g, 0.0)}
         for g in group_logodds.columns if g not in reachable],
        columns=["group", "kind", "share"],
    ).sort_values("share", ascending=False, kind="stable").reset_index(drop=True)
    return Proposal(rules=proposed_rules, changes=pd.DataFrame(rows), out_of_reach=out_of_reach,
                    k_points_per_logodds=k, shapes=shapes)


def _second_shapes(chosen: list[dict], phi: dict, unit_raw: pd.DataFrame, by_rule: dict, new_by_group: dict,
                   lookup: dict, config: TuneConfig) -> list[dict]:
    """A second rule on an activity's event where one shape leaves much of its group unexplained.

    One decayed, capped count cannot say "bought often, but not lately": a lifetime or long-decayed
    count beside a recent one, each with its own sign. For each chosen rule, the candidate shape
    (half-life, expiry, cap) that best explains its group together with the rule's own column
    (correlated with it at most ``second_max_corr``: two near copies get points that cancel out) is
    added as a new rule when it raises the group's R^2 by at least ``second_margin``; the joint fit
    then sets both rules' points.
    """
    out: list[dict] = []
    taken = {item["rule"] for item in chosen}
    for item in list(chosen):
        group = item["group"]
        if group not in phi:
            continue
        y = phi[group]
        own = unit_capped(unit_raw[item["column"]].to_numpy(dtype="float64"), item["cap"])
        options = by_rule.get(item["rule"], []) if not item["new"] else new_by_group.get(group, [])
        best = (None, None, item["r2"] + config.second_margin)
        for candidate in options:
            if candidate.column == item["column"]:
                continue  # another cap of the same column: nearly collinear, points that cancel out
            values = unit_raw[candidate.column].to_numpy(dtype="float64")
            positive = values[values > 0]
            caps = [None] + sorted({max(float(c), 1.0) for c in np.quantile(positive, config.cap_quantiles)}
                                   if positive.size else set())
            for cap in caps:
                other = unit_capped(values, cap)
                if np.ptp(other) == 0 or abs(np.corrcoef(own, other)[0, 1]) > config.second_max_corr:
                    continue
                r2 = _r2(y, np.column_stack([own, other]))
                if r2 > best[2]:
                    best = (candidate.column, cap, r2)
        column, cap, r2 = best
        if column is None:
            continue
        shape = lookup[column].activity
        suffix = f"hl{shape.half_life_days:g}d" if shape.half_life_days else "no_decay"
        expiry = f"_{shape.expires_after_days:g}d" if shape.expires_after_days else ""
        name = f"{item['rule']}_{suffix}{expiry}"
        if name in taken:
            continue
        taken.add(name)
        base = item["activity"].model_copy(update={
            "name": name, "weight": 1.0, "half_life_days": shape.half_life_days,
            "expires_after_days": shape.expires_after_days,
            "description": f"proposed by propensity tune beside {item['rule']} (a second shape of its event)"})
        out.append({"rule": name, "group": group, "column": column, "cap": cap, "r2": r2, "activity": base,
                    "new": True, "second_of": item["rule"], "r2_gain": r2 - item["r2"]})
    return out


def _per_event_resolution(values: np.ndarray, resolution: float) -> float:
    """A finer step for a rule whose column runs high (a lifetime count): rounding its per-event
    points by ``resolution`` would move a typical contact's total by many points (0.6 -> 1 point
    per purchase is 24 points for 60 purchases). The coarsest of 1, 0.5, 0.1, 0.05, 0.01 (not
    above ``resolution``) at which the rounding moves the 90th percentile row by at most ``resolution``."""
    positive = np.asarray(values, dtype="float64")
    positive = positive[positive > 0]
    typical = float(np.quantile(positive, 0.9)) if positive.size else 1.0
    for step in (1.0, 0.5, 0.1, 0.05, 0.01):
        if step <= resolution and step * typical <= resolution:
            return step
    return 0.01


def _kept_points(hand: dict, beta: dict, own_beta: dict, share: dict, k: float, resolution: float,
                 config: TuneConfig, notes: dict) -> dict[str, float]:
    """Points of the hand rules the joint fit would cut to ~0 (or flip against their own group).

    ``hand``: rule -> (current points, weight, group). A rule whose group carries at least
    ``keep_share`` of the mean |SHAP| gets its own group's fit when that keeps at least
    ``keep_fraction`` of its points, else its current points.
    """
    fixed = {}
    for name, (current, weight, group) in hand.items():
        group_share = share.get(group, 0.0)
        if current == 0 or group_share < config.keep_share:
            continue
        proposed = nice_round(k * beta[name] / weight, resolution=resolution)
        cut = abs(proposed) < config.keep_fraction * abs(current)
        flipped = proposed * current < 0 and own_beta.get(name, 0.0) * current > 0
        if not (cut or flipped):
            continue
        own = nice_round(k * own_beta.get(name, 0.0) / weight, resolution=resolution)
        why = "cut to ~0" if cut else "flipped against the model's credit to its event"
        if abs(own) >= config.keep_fraction * abs(current) and own * current > 0:
            fixed[name] = own
            notes.setdefault(name, []).append(
                f"the joint fit {why} ({proposed:g}) although the model uses {group} ({group_share:.1%}): "
                f"its own group's fit gives {own:g}")
        else:
            fixed[name] = current
            notes.setdefault(name, []).append(
                f"the joint fit {why} ({proposed:g}) although the model uses {group} ({group_share:.1%}): "
                f"current points kept")
    return fixed


def _change_row(item, kind, current, proposed, share, r2, beta, current_shape, proposed_shape, config) -> dict:
    if current is None and item.get("second_of"):
        status, note = "new", (f"second shape beside {item['second_of']}: the group's R^2 "
                               f"{item['r2'] - item['r2_gain']:.2f} -> {item['r2']:.2f}")
    elif current is None:
        status, note = "new", f"new rule on {item['group']}"
    elif share < config.min_share or proposed.points == 0:
        status, note = "no signal", f"the learned model hardly uses {item['group']}"
    elif proposed.points * current.points < 0:
        status, note = "changed", "sign flipped"
    elif proposed.points != current.points or current_shape != proposed_shape:
        status, note = "changed", ""
    else:
        status, note = "kept", ""
    return {
        "rule": proposed.name, "kind": kind, "status": status, "group": item["group"], "share": share, "r2": r2,
        "current_points": None if current is None else current.points, "proposed_points": proposed.points,
        "current_shape": current_shape, "proposed_shape": proposed_shape, "logodds_per_unit": beta, "note": note,
    }
