"""Why did a score change between two dates: an exact split along a path of states.

The path
--------
A contact's score at ``until`` differs from its score at ``since`` for four reasons, and the
split walks from one to the other through states that change one of them at a time::

    s0  events ts < since,  evaluated at since,  attributes at since,  rules/model before
    s1  events ts < since,  evaluated at until,  attributes at since,  rules/model before
    s2  events ts < until,  evaluated at until,  attributes at since,  rules/model before
    s3  events ts < until,  evaluated at until,  attributes at until,  rules/model before
    s4  events ts < until,  evaluated at until,  attributes at until,  rules/model after

    decay_expiry = S(s1) - S(s0)   the old events, older: half-lives and expiry windows
    new_events   = S(s2) - S(s1)   the events with since <= ts < until
    fit          = S(s3) - S(s2)   changed contact attributes (and account)
    rules|model  = S(s4) - S(s3)   another rules file or model version

The four parts telescope, so they add up to ``S(s4) - S(s0)``, the change, exactly (to float
rounding, ~1e-15). Each state is point in time: a state at a date reads only events with
``ts <`` that date, so an event after ``until`` moves nothing.

Why this order. Time passing comes first because it needs no new information, and it is the only
order in which every later state is evaluated at ``until``: new events are then counted at the
ages they have now (they could not be counted at ``since``, before they happened). The data steps
(time, events, attributes) come before the rules/model step so that they are measured with the
rules or model that made the earlier score, the one the team saw; the change of definition is
then measured on today's data alone ("what the new rules do to this contact now"). Attributes
come after events so that their part reads "with today's activity, what the attribute change
did". Another order would give other (equally exact) numbers where the score is not additive
(the scale's clipping, the model's interactions); the average over all 24 orders (a Shapley value
of the four steps) would cost six times as many states for a split that is harder to read.

Within a step
-------------
A step's score difference is shared over groups (event types, attributes) in proportion to
their change of an additive inner quantity, the secant rule of
:mod:`propensity.pipelines.explain.attribution`:

* rule score: the capped points of each rule (``points__{rule}``, which add up to the total
  the 0-5 scale maps), grouped by the event type an activity reads or the attribute a fit
  criterion reads; caps apply per rule, so each rule's change is exact before the scale;
* learned score: the SHAP values (log-odds) of each feature group
  (:func:`propensity.pipelines.explain.groups.group_features`), whose sum is the margin.

``part_g = delta_g * (delta score / sum delta)``: the parts sum to the step's score difference
exactly (the float residual goes to the group that moved most), a group that moved the inner
quantity up never pulls the score down (the scale and the model's chain are non-decreasing), and
when the groups cancel (``sum delta`` is 0) the score did not move and every part is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from propensity.pipelines.explain.attribution import feature_contributions, group_sum
from propensity.pipelines.explain.groups import group_features
from propensity.pipelines.rules.config import Activity, RuleSet

__all__ = [
    "DATA_STEPS",
    "ChangeSplit",
    "describe_part",
    "split_learned_change",
    "split_rule_change",
    "split_step",
]

# the data steps, in path order; the fourth step is "rules" (rule score) or "model" (learned)
DATA_STEPS = ("decay_expiry", "new_events", "fit")
_TINY = 1e-12


def split_step(delta_inner: np.ndarray, delta_score: np.ndarray) -> np.ndarray:
    """Share each row's ``delta_score`` over groups in proportion to ``delta_inner`` (secant rule).

    Parameters
    ----------
    delta_inner : numpy.ndarray
        Rows x groups: each group's change of the additive quantity the score is a function of.
    delta_score : numpy.ndarray
        The score change of each row.

    Returns
    -------
    numpy.ndarray
        Rows x groups; each row sums to its ``delta_score`` (the float residual is put on the
        group with the largest ``|delta_inner|``).
    """
    delta_inner = np.asarray(delta_inner, dtype="float64")
    delta_score = np.asarray(delta_score, dtype="float64")
    if delta_inner.shape[1] == 0:
        if np.any(delta_score != 0):
            raise ValueError("a step moved the score but has no groups to share it over")
        return delta_inner.copy()
    total = delta_inner.sum(axis=1)
    moved = np.abs(total) > _TINY
    slope = np.zeros_like(total)
    slope[moved] = delta_score[moved] / total[moved]
    parts = delta_inner * slope[:, None]
    residual = delta_score - parts.sum(axis=1)
    largest = np.argmax(np.abs(delta_inner), axis=1)
    parts[np.arange(len(parts)), largest] += residual
    return parts


@dataclass(frozen=True)
class ChangeSplit:
    """The change of one score (rule or learned) between two dates, split into its parts.

    Attributes
    ----------
    score : {"rule", "learned"}
    contact_ids : numpy.ndarray
    since, until : datetime
    before, after : numpy.ndarray
        The score at ``since`` (rules/model before) and at ``until`` (rules/model after).
    band_before, band_after : list of str or None
    steps : dict of str to pandas.DataFrame
        Component -> rows x groups, in 0-5 points; ``decay_expiry``, ``new_events``, ``fit`` and
        ``rules`` or ``model``. Every row of every step sums to that step's score difference,
        and the steps sum to ``after - before``.
    definition : str
        What the rules/model step changed (``"saas -> saas_v2"``, ``"v3 -> v4"``, or
        ``"unchanged"``).
    notes : tuple of str
        What was assumed (e.g. attributes taken as unchanged), said rather than hidden.
    """

    score: str
    contact_ids: np.ndarray
    since: datetime
    until: datetime
    before: np.ndarray
    after: np.ndarray
    band_before: list | None
    band_after: list | None
    steps: dict[str, pd.DataFrame]
    definition: str = "unchanged"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.contact_ids)

    @property
    def change(self) -> np.ndarray:
        return self.after - self.before

    @property
    def definition_step(self) -> str:
        return "rules" if self.score == "rule" else "model"

    def components(self) -> pd.DataFrame:
        """Rows x the four components (0-5 points); each row sums to its change."""
        return pd.DataFrame({name: frame.sum(axis=1).to_numpy() for name, frame in self.steps.items()})

    def residual(self) -> float:
        """The largest ``|sum of parts - change|`` over rows (0 up to float rounding)."""
        if not len(self):
            return 0.0
        total = sum(frame.to_numpy().sum(axis=1) for frame in self.steps.values())
        return float(np.max(np.abs(total - self.change)))

    def parts(self, row: int | None = None, *, min_points: float = 0.0) -> pd.DataFrame:
        """Long table ``contact_id, score, component, group, points, reason``, largest first per contact.

        Parts with ``|points| <= min_points`` are left out (``min_points=0`` drops exact zeros
        only, which add nothing to the sum).
        """
        rows = range(len(self)) if row is None else [row]
        out = []
        for r in rows:
            for component, frame in self.steps.items():
                values = frame.iloc[r]
                for group, points in values.items():
                    if abs(points) > min_points:
                        out.append((self.contact_ids[r], self.score, component, group, float(points),
                                    describe_part(component, group, self.definition)))
        table = pd.DataFrame(out, columns=["contact_id", "score", "component", "group", "points", "reason"])
        if table.empty:
            return table
        order = table.assign(_abs=-table["points"].abs()).sort_values(["contact_id", "_abs"], kind="stable")
        return order.drop(columns="_abs").reset_index(drop=True)

    def summary(self, n_reasons: int = 3) -> pd.DataFrame:
        """One row per contact: before, after, change, bands, the four components and the top reasons."""
        table = pd.DataFrame({
            "contact_id": self.contact_ids,
            "score": self.score,
            "since": pd.Timestamp(self.since),
            "until": pd.Timestamp(self.until),
            "before": self.before,
            "after": self.after,
            "change": self.change,
            "band_before": self.band_before if self.band_before is not None else None,
            "band_after": self.band_after if self.band_after is not None else None,
        })
        table = pd.concat([table, self.components()], axis=1)
        labels, values = [], []
        for component, frame in self.steps.items():
            for group in frame.columns:
                labels.append(describe_part(component, group, self.definition))
                values.append(frame[group].to_numpy())
        matrix = np.column_stack(values) if values else np.zeros((len(self), 0))
        order = np.argsort(-np.abs(matrix), axis=1, kind="stable")
        for k in range(n_reasons):
            text, points = [], []
            for r in range(len(self)):
                if k < matrix.shape[1] and abs(matrix[r, order[r, k]]) > 0:
                    text.append(labels[order[r, k]])
                    points.append(float(matrix[r, order[r, k]]))
                else:
                    text.append(None)
                    points.append(np.nan)
            table[f"reason_{k + 1}"] = text
            table[f"reason_{k + 1}_points"] = points
        return table

    def top_reason(self, row: int = 0) -> dict | None:
        """The largest part of one row as ``{"component", "group", "points", "reason"}`` (None: no change)."""
        parts = self.parts(row)
        if parts.empty:
            return None
        first = parts.iloc[0]
        return {"component": first["component"], "group": first["group"], "points": float(first["points"]),
                "reason": first["reason"]}


def describe_part(component: str, group: str, definition: str = "") -> str:
    """A part in words: ``new demo_requested events``, ``older email_open events decayed or expired``."""
    if component == "new_events":
        return {"all_activity": "new events (all activity)", "account": "new activity in the account",
                "tenure": "new events (tenure)"}.get(group, f"new {group} events")
    if component == "decay_expiry":
        return {"all_activity": "older activity decayed or expired",
                "account": "older account activity decayed or expired",
                "tenure": "time since the first event"}.get(group, f"older {group} events decayed or expired")
    if component == "fit":
        return f"{group} changed"
    if component in ("rules", "model"):
        return f"{component} changed ({definition})" if definition else f"{component} changed"
    return f"{component}: {group}"


# --------------------------------------------------------------------------- the rule score


def _rule_group(rule) -> str:
    return rule.event if isinstance(rule, Activity) else rule.attribute


def _rule_step(a: pd.DataFrame, b: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """One data step of the rule score, per group (event type or attribute) the rules read."""
    items = [*rules.activities, *rules.fit]
    columns = [f"points__{r.name}" for r in items]
    delta = b[columns].to_numpy(dtype="float64") - a[columns].to_numpy(dtype="float64")
    groups = list(dict.fromkeys(_rule_group(r) for r in items))
    index = {g: i for i, g in enumerate(groups)}
    by_group = np.zeros((len(a), len(groups)))
    for j, rule in enumerate(items):
        by_group[:, index[_rule_group(rule)]] += delta[:, j]
    delta_score = b["rule_score"].to_numpy(dtype="float64") - a["rule_score"].to_numpy(dtype="float64")
    return pd.DataFrame(split_step(by_group, delta_score), columns=groups)


def _check_aligned(states: Sequence[pd.DataFrame]) -> np.ndarray:
    ids = states[0]["contact_id"].astype(str).to_numpy()
    for state in states[1:]:
        if len(state) != len(ids) or not np.array_equal(state["contact_id"].astype(str).to_numpy(), ids):
            raise ValueError("the states of a change split must hold the same contacts in the same order")
    return ids


def split_rule_change(
    states: Sequence[pd.DataFrame],
    rules_before: RuleSet,
    rules_after: RuleSet | None = None,
    *,
    since: datetime,
    until: datetime,
    definition: str | None = None,
    notes: Sequence[str] = (),
) -> ChangeSplit:
    """Split the rule score's change along the path ``s0 .. s4`` (see the module docstring).

    Parameters
    ----------
    states : sequence of 5 pandas.DataFrame
        :func:`propensity.pipelines.rules.score.score_frame` outputs for ``s0 .. s4``, rows aligned
        (same contacts, same order); ``s0 .. s3`` scored with ``rules_before``, ``s4`` with
        ``rules_after``.
    rules_before, rules_after : RuleSet
        ``rules_after`` None: the same rules (the rules part is then 0).
    """
    if len(states) != 5:
        raise ValueError(f"a rule change split needs the 5 states s0..s4, got {len(states)}")
    ids = _check_aligned(states)
    steps = {name: _rule_step(states[k], states[k + 1], rules_before) for k, name in enumerate(DATA_STEPS)}
    final = states[4]["rule_score"].to_numpy(dtype="float64") - states[3]["rule_score"].to_numpy(dtype="float64")
    after_rules = rules_after or rules_before
    label = definition or (f"{rules_before.name} -> {after_rules.name}" if rules_after is not None
                           and rules_after != rules_before else "unchanged")
    steps["rules"] = pd.DataFrame({"rules": final})
    return ChangeSplit(
        score="rule", contact_ids=ids, since=since, until=until,
        before=states[0]["rule_score"].to_numpy(dtype="float64"),
        after=states[4]["rule_score"].to_numpy(dtype="float64"),
        band_before=[str(b) for b in states[0]["band"]], band_after=[str(b) for b in states[4]["band"]],
        steps=steps, definition=label, notes=tuple(notes),
    )


# --------------------------------------------------------------------------- the learned score


def _bands_of(scorer, scores: np.ndarray) -> list | None:
    from propensity.pipelines.jobs import model_bands
    from propensity.pipelines.rules.score import assign_bands

    bands = model_bands(scorer)
    return None if bands is None else [str(b) for b in assign_bands(scores, bands)]


def split_learned_change(
    scorer_before,
    states: Sequence[pd.DataFrame],
    scorer_after=None,
    state_after: pd.DataFrame | None = None,
    *,
    since: datetime,
    until: datetime,
    definition: str | None = None,
    notes: Sequence[str] = (),
    method: str = "pred_contrib",
) -> ChangeSplit:
    """Split the learned score's change along the path ``s0 .. s4`` (see the module docstring).

    Parameters
    ----------
    scorer_before : LearnedScorer
        The model of the earlier score (``s0 .. s3``).
    states : sequence of 4 pandas.DataFrame
        Feature frames of ``s0 .. s3`` as ``scorer_before`` was trained (``contact_id`` and its
        features), rows aligned.
    scorer_after : LearnedScorer, optional
        Another model version for ``s4``; None: the same model (the model part is then 0).
    state_after : pandas.DataFrame, optional
        ``s3``'s features as ``scorer_after`` was trained (its feature config may differ);
        default ``states[3]``.
    method : {"pred_contrib", "shap"}
        How the SHAP values that share each step over groups are computed.

    Each state's score is the model's own ``learned_score``; SHAP only decides the shares
    within a step, so the endpoints are the scores ``propensity score --model`` gives.
    """
    if len(states) != 4:
        raise ValueError(f"a learned change split needs the 4 feature states s0..s3, got {len(states)}")
    ids = _check_aligned(states)
    n = len(ids)
    stacked = pd.concat([s.reset_index(drop=True) for s in states], ignore_index=True)
    scores = scorer_before.score(stacked)["learned_score"].to_numpy(dtype="float64").reshape(4, n)
    groups = group_features(scorer_before.feature_names, scorer_before.event_types)
    if n:
        contributions, _ = feature_contributions(scorer_before, stacked, method=method)
        logodds = group_sum(contributions, groups.of_feature, groups.order).to_numpy().reshape(4, n, -1)
    else:
        logodds = np.zeros((4, 0, len(groups.order)))
    steps = {}
    for k, name in enumerate(DATA_STEPS):
        parts = split_step(logodds[k + 1] - logodds[k], scores[k + 1] - scores[k])
        steps[name] = pd.DataFrame(parts, columns=list(groups.order))
    final_scorer = scorer_after if scorer_after is not None else scorer_before
    if scorer_after is not None:
        last = state_after if state_after is not None else states[3]
        if not np.array_equal(last["contact_id"].astype(str).to_numpy(), ids):
            raise ValueError("the state for the later model must hold the same contacts in the same order")
        after = scorer_after.score(last.reset_index(drop=True))["learned_score"].to_numpy(dtype="float64")
    else:
        after = scores[3]
    steps["model"] = pd.DataFrame({"model": after - scores[3]})
    return ChangeSplit(
        score="learned", contact_ids=ids, since=since, until=until, before=scores[0], after=after,
        band_before=_bands_of(scorer_before, scores[0]), band_after=_bands_of(final_scorer, after),
        steps=steps, definition=definition or ("unchanged" if scorer_after is None else "another model"),
        notes=tuple(notes),
    )
