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
A step's score difference is shared over groups, so that each part names an event type or an
attribute, and the parts of a step add up to its difference exactly:

* rule score: each rule's capped points (``points__{rule}``) add up to the total that the 0-5
  scale maps, and a rule's points depend only on its own events (caps apply per rule), so a
  step's change of each rule's points is exact; they are grouped by the event type an activity
  reads or the attribute a fit criterion reads, and the step's score difference is shared in
  proportion to them (``part_g = delta_g * delta score / sum delta``, the secant rule of
  :mod:`propensity.pipelines.explain.attribution`): a group that added points never lowers the
  score (the scale is non-decreasing), and when the groups cancel the score did not move and
  every part is 0;
* learned score: the groups of :func:`propensity.pipelines.explain.groups.group_features` (one per
  event type, ``all_activity``, ``tenure``, ``account``, one per attribute) that changed in the
  step share it by their Shapley values, the value of a set of groups being the model's score of
  the state that takes those groups from the later state
  (:mod:`propensity.pipelines.explain.coalitions`, which says why a difference of TreeSHAP values
  would not do: it credits unchanged groups with interactions). A group that did not change gets 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from propensity.pipelines.explain.coalitions import group_shapley
from propensity.pipelines.explain.groups import group_features
from propensity.pipelines.rules.change import (
    DATA_STEPS,
    describe_part,
    rule_step,
    split_rule_views,
    split_step,
)
from propensity.pipelines.rules.config import RuleSet

__all__ = [
    "DATA_STEPS",
    "ChangeSplit",
    "describe_part",
    "split_learned_change",
    "split_rule_change",
    "split_rule_views",
    "split_step",
]

# the data steps, in path order; the fourth step is "rules" (rule score) or "model" (learned)
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
            table[f"change_reason_{k + 1}"] = text
            table[f"change_reason_{k + 1}_points"] = points
        return table

    def top_reason(self, row: int = 0) -> dict | None:
        """The largest part of one row as ``{"component", "group", "points", "reason"}`` (None: no change)."""
        parts = self.parts(row)
        if parts.empty:
            return None
        first = parts.iloc[0]
        return {"component": first["component"], "group": first["group"], "points": float(first["points"]),
                "reason": first["reason"]}


# --------------------------------------------------------------------------- the rule score


def _rule_step(a: pd.DataFrame, b: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """One data step of the rule score, per group (event type or attribute) the rules read."""
    columns = [f"points__{r.name}" for r in (*rules.activities, *rules.fit)]
    delta = b[columns].to_numpy(dtype="float64") - a[columns].to_numpy(dtype="float64")
    delta_score = b["rule_score"].to_numpy(dtype="float64") - a["rule_score"].to_numpy(dtype="float64")
    groups, parts = rule_step(delta, delta_score, rules)
    return pd.DataFrame(parts, columns=groups)


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


def _typed_frame(matrix: np.ndarray, names: list[str], dtypes: dict) -> pd.DataFrame:
    """``pd.DataFrame(matrix, columns=names).astype(dtypes)``, one block per dtype.

    The same frame, but the columns of one NumPy dtype are converted as one array: column by
    column, a model's ~200 columns cost most of a learned split (the service splits one contact
    on request).
    """
    by_dtype: dict = {}
    for j, name in enumerate(names):
        by_dtype.setdefault(dtypes[name], []).append(j)
    parts = []
    for dtype, index in by_dtype.items():
        columns = [names[j] for j in index]
        if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
            parts.append(pd.DataFrame(matrix[:, index].astype(dtype), columns=columns))
        else:
            parts.append(pd.DataFrame(matrix[:, index], columns=columns).astype(dtype))
    return pd.concat(parts, axis=1)[names]


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

    Each state's score is the model's own ``learned_score``, so the ends are the scores
    ``propensity score --model`` gives; within a step the groups share the difference by their
    Shapley values (:mod:`propensity.pipelines.explain.coalitions`).
    """
    if len(states) != 4:
        raise ValueError(f"a learned change split needs the 4 feature states s0..s3, got {len(states)}")
    ids = _check_aligned(states)
    names = list(scorer_before.feature_names)
    frames = [s.reset_index(drop=True)[names] for s in states]
    dtypes = frames[0].dtypes.to_dict()
    arrays = [f.to_numpy(dtype=object) for f in frames]

    def score_of(matrix: np.ndarray) -> np.ndarray:
        # the model's own score of (hybrid) rows: LearnedScorer.score, with its rule blend if any
        return scorer_before.score(_typed_frame(matrix, names, dtypes))["learned_score"].to_numpy(dtype="float64")

    def equal(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
        a, b = a.astype(object), b.astype(object)
        return (a.eq(b) | (a.isna() & b.isna())).to_numpy(dtype=bool)

    scores = [score_of(m) for m in arrays]
    groups = group_features(names, scorer_before.event_types, getattr(scorer_before, "input_rules", None))
    group_index = {g: i for i, g in enumerate(groups.order)}
    group_of_column = np.array([group_index[groups.of_feature[f]] for f in names])
    steps = {}
    for k, name in enumerate(DATA_STEPS):
        parts = group_shapley(score_of, arrays[k], arrays[k + 1], group_of_column, len(groups.order),
                              same=equal(frames[k], frames[k + 1]))
        # the ends of each step are the states' own scores: any float residual goes on the largest part
        residual = (scores[k + 1] - scores[k]) - parts.sum(axis=1)
        rows = np.arange(len(parts))
        parts[rows, np.argmax(np.abs(parts), axis=1)] += residual
        steps[name] = pd.DataFrame(parts, columns=list(groups.order))
    final_scorer = scorer_after if scorer_after is not None else scorer_before
    if scorer_after is not None:
        last = state_after if state_after is not None else states[3]
        if not np.array_equal(last["contact_id"].astype(str).to_numpy(), ids):
            raise ValueError("the state for the later model must hold the same contacts in the same order")
        after = scorer_after.score(last.reset_index(drop=True))["learned_score"].to_numpy(dtype="float64")
    else:
        after = scores[3]
    before = scores[0]
    steps["model"] = pd.DataFrame({"model": after - scores[3]})
    return ChangeSplit(
        score="learned", contact_ids=ids, since=since, until=until, before=before, after=after,
        band_before=_bands_of(scorer_before, before), band_after=_bands_of(final_scorer, after),
        steps=steps, definition=definition or ("unchanged" if scorer_after is None else "another model"),
        notes=tuple(notes),
    )
