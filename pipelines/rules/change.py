"""The rule score's change split into its parts: the arithmetic shared by the batch and the service.

The path of states and why its steps come in their order are in
:mod:`propensity.pipelines.explain.change`; here are the pieces that need neither frames nor a
model (numpy only), so that the service, which calls :func:`split_rule_views` for every contact
whose score a commit changed, imports nothing heavy.
"""

from __future__ import annotations

import numpy as np

from propensity.pipelines.rules.config import Activity, RuleSet

__all__ = ["DATA_STEPS", "describe_part", "rule_step", "split_rule_views", "split_step"]

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


def _rule_group(rule) -> str:
    return rule.event if isinstance(rule, Activity) else rule.attribute


def _rule_groups(rules: RuleSet) -> tuple[list[str], np.ndarray]:
    """The groups the rules read (event types, attributes) and the group of each rule, in rule order."""
    items = [*rules.activities, *rules.fit]
    groups = list(dict.fromkeys(_rule_group(r) for r in items))
    index = {g: i for i, g in enumerate(groups)}
    return groups, np.array([index[_rule_group(r)] for r in items], dtype=int)


def rule_step(delta_points: np.ndarray, delta_score: np.ndarray, rules: RuleSet) -> tuple[list[str], np.ndarray]:
    """One data step of the rule score: rows x rules (rule order) points moved -> groups, rows x groups."""
    groups, group_of_rule = _rule_groups(rules)
    by_group = np.zeros((len(delta_points), len(groups)))
    np.add.at(by_group.T, group_of_rule, delta_points.T)
    return groups, split_step(by_group, delta_score)


_ONE_HOT: dict[int, tuple[RuleSet, list[str], np.ndarray, list[str], list[str]]] = {}


def _rule_one_hot(rules: RuleSet):
    """Per rule set, once: its groups, the rules x groups indicator, and its activity and fit names."""
    cached = _ONE_HOT.get(id(rules))
    if cached is None or cached[0] is not rules:
        groups, group_of_rule = _rule_groups(rules)
        one_hot = np.zeros((len(group_of_rule), len(groups)))
        one_hot[np.arange(len(group_of_rule)), group_of_rule] = 1.0
        cached = (rules, groups, one_hot, [a.name for a in rules.activities], [f.name for f in rules.fit])
        if len(_ONE_HOT) > 64:  # a long-lived process that loads many rule sets
            _ONE_HOT.clear()
        _ONE_HOT[id(rules)] = cached
    return cached[1:]


def split_rule_views(rules: RuleSet, earlier, aged, after, score_of_points) -> dict:
    """One contact's rule score change from three score views of the service, as JSON-ready data.

    ``earlier``: the stored state at its own (earlier) time; ``aged``: the same state moved to now
    (events that were waiting for their timestamp are then counted: time alone did that);
    ``after``: with the new events and attributes. Activity points depend only on events and
    fit points only on attributes, so the state "new events, earlier attributes" is ``after``'s
    activity points with ``aged``'s fit points, scored by ``score_of_points`` (the scale). The
    rules part is 0 (the service scores with one rules file). The three steps go through
    :func:`split_step` as three rows of one call: the service calls this for every contact whose
    score a commit changed.

    Returns the shape of :func:`propensity.pipelines.explain.change_jobs.split_json`.
    """
    groups, one_hot, activities, fit = _rule_one_hot(rules)
    mixed = [after.parts[n] for n in activities] + [aged.parts[n] for n in fit]
    names = activities + fit
    points = np.array([[earlier.parts[n] for n in names], [aged.parts[n] for n in names], mixed,
                       [after.parts[n] for n in names]])
    scores = np.array([earlier.rule_score, aged.rule_score, score_of_points(sum(mixed)), after.rule_score])
    shares = split_step(np.diff(points, axis=0) @ one_hot, np.diff(scores))
    components = {name: float(row.sum()) for name, row in zip(DATA_STEPS, shares)}
    components["rules"] = 0.0
    parts = [{"component": name, "group": g, "points": float(v), "reason": describe_part(name, g)}
             for name, row in zip(DATA_STEPS, shares) for g, v in zip(groups, row) if v != 0]
    parts.sort(key=lambda p: -abs(p["points"]))
    return {"since": earlier.as_of.isoformat(), "until": after.as_of.isoformat(),
            "before": float(scores[0]), "after": float(scores[3]), "change": float(scores[3] - scores[0]),
            "band_before": earlier.band, "band_after": after.band, "components": components,
            "definition": "unchanged", "parts": parts, "top_reason": parts[0] if parts else None, "notes": []}
