"""The rules as a served model's input: its ``rule__*`` columns from the service's own rule state.

A model trained with ``rule_inputs: true`` (training/rule_inputs.py) reads one ``rule__{activity}``
column per activity (the activity's uncapped points at the cut-off, the batch expression
:func:`propensity.pipelines.rules.score.activity_points`) and one ``rule__attribute__{name}`` per
attribute a fit criterion reads, and may blend in the rule score recomputed from them. The
service already keeps exactly those numbers per contact: :meth:`RuleScorer.raw_points` are the
uncapped points per activity at the state's time (equal to the batch's to 1e-9, tested), the
state's traits are the attributes, and :meth:`RuleScorer.view` is the rule score. So nothing is
recomputed from events here; the only condition is that the service serves the rules the model
was trained with, which :func:`rules_difference` checks at start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.serve.feature_plan import trait_number
from propensity.pipelines.serve.state import ContactState, RuleScorer

__all__ = ["RULE_PREFIX", "rule_input_arrays", "rules_difference"]

RULE_PREFIX = "rule__"
_ATTRIBUTE = f"{RULE_PREFIX}attribute__"
# what an activity's rule__ column depends on (description and axis change no number the model reads)
_ACTIVITY_INPUTS = ("name", "event", "where", "points", "weight", "half_life_days", "expires_after_days",
                    "per_value")


def rules_difference(model_rules: RuleSet, served: RuleSet, *, blends: bool) -> str | None:
    """What makes ``served`` give the model other inputs than ``model_rules`` did; None: nothing.

    The ``rule__*`` columns depend on each activity's event, filter, points, weight, half-life,
    expiry and ``per_value`` (in order) and on the attributes the fit criteria read; a model that
    blends the rule score in (``blends``) also reads the caps, the fit criteria and the scale.
    Bands, thresholds, names of files and descriptions change none of it.
    """
    trained = [a.name for a in model_rules.activities]
    serving = [a.name for a in served.activities]
    if trained != serving:
        return f"activities {trained} (trained) vs {serving} (served)"
    for old, new in zip(model_rules.activities, served.activities):
        for key in _ACTIVITY_INPUTS + (("cap",) if blends else ()):
            if getattr(old, key) != getattr(new, key):
                return f"activity {old.name!r}: {key} {getattr(old, key)!r} (trained) vs {getattr(new, key)!r} (served)"
    old_attributes = sorted({c.attribute for c in model_rules.fit})
    new_attributes = sorted({c.attribute for c in served.fit})
    if old_attributes != new_attributes:
        return f"fit criteria read {old_attributes} (trained) vs {new_attributes} (served)"
    if blends:
        strip = ("description",)
        old_fit = [c.model_dump(exclude=set(strip)) for c in model_rules.fit]
        new_fit = [c.model_dump(exclude=set(strip)) for c in served.fit]
        if old_fit != new_fit:
            return "the fit criteria differ (the model blends the rule score in, which counts their points)"
        if dict(model_rules.scale) != dict(served.scale):
            return f"scale {dict(model_rules.scale)} (trained) vs {dict(served.scale)} (served)"
    return None


def rule_input_arrays(rules: RuleScorer, contacts: Sequence[str], states: Mapping[str, ContactState],
                      as_of_us: int, columns: Sequence[str], categorical: frozenset[str],
                      blends: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The ``rule__*`` columns of ``contacts`` at ``as_of_us`` and (``blends``) their rule scores.

    ``states``: each contact's rule state moved to ``as_of_us`` (a contact without one has no
    events and no traits: 0 points, missing attributes, as the batch's left join gives). An
    attribute column is read as the model was trained: its category's value, else a number.
    """
    n_activities = len(rules.rules.activities)
    points = np.zeros((len(contacts), n_activities))
    traits: list[Mapping] = []
    scores = np.zeros(len(contacts)) if blends else None
    empty: dict = {}
    for r, contact in enumerate(contacts):
        state = states.get(contact)
        if state is None:
            traits.append(empty)
            if blends:
                scores[r] = rules.scale(0.0)
            continue
        if state.at_us != as_of_us:
            raise ValueError(f"contact {contact!r}: its rule state is at {state.at_us} us, not at the learned "
                             f"score's instant {as_of_us} us")
        points[r] = rules.raw_points(state)
        traits.append(state.traits)
        if blends:
            scores[r] = rules.view(contact, state).rule_score
    out: dict[str, np.ndarray] = {}
    names = [a.name for a in rules.rules.activities]
    for column in columns:
        if column.startswith(_ATTRIBUTE):
            attribute = column[len(_ATTRIBUTE):]
            values = [t.get(attribute) for t in traits]
            out[column] = (np.array(values, dtype=object) if column in categorical
                           else np.array([trait_number(v) for v in values], dtype="float64"))
        else:
            out[column] = points[:, names.index(column[len(RULE_PREFIX):])]
    return out, scores

