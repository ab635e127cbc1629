"""The rules' columns and the blend of their score: the part of the rules-as-input a scorer needs.

No ibis here (a registered model's pyfunc scores in a venv holding only its runtime packages); the
expression that builds the columns is :mod:`propensity.pipelines.training.rule_inputs`, which also
says what the blend guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.rules.score import scale_points, score_frame

__all__ = ["ALPHAS", "PREFIX", "Blend", "blend_contributions", "choose_blend", "rule_input_columns",
           "rule_parts_of", "rule_score_of"]

PREFIX = "rule__"
_ATTRIBUTE = f"{PREFIX}attribute__"
ALPHAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def attribute_names(rules: RuleSet) -> list[str]:
    return sorted({criterion.attribute for criterion in rules.fit})


def rule_input_columns(rules: RuleSet) -> list[str]:
    """The model's rule columns, in a fixed order: activities, then the fit criteria's attributes."""
    return [f"{PREFIX}{a.name}" for a in rules.activities] + [f"{_ATTRIBUTE}{name}" for name in attribute_names(rules)]


def rule_score_of(frame: pd.DataFrame, rules: RuleSet) -> np.ndarray:
    """The hand rules' 0-5 score recomputed from the rule columns of ``frame`` (one per row)."""
    return rule_parts_of(frame, rules)["rule_score"].to_numpy(dtype="float64")


def blend_contributions(frame: pd.DataFrame, rules: RuleSet, blend: Blend) -> tuple[pd.DataFrame, float]:
    """The blend's rule term split over the rule columns, in log-odds, and its constant part.

    ``alpha * scale * (rule_score - centre)`` = ``constant`` + the row's contributions, where the
    constant is the term of a contact with no points and the rest is shared over the rule columns
    in proportion to the capped points each earned (the secant of the piecewise-linear 0-5 map, so
    the shares add up exactly; explain/attribution.py adds them to the booster's SHAP values).
    """
    scored = rule_parts_of(frame, rules)
    weight = blend.alpha * blend.scale
    zero = float(scale_points(np.array([0.0]), rules)[0])
    deviation = weight * (scored["rule_score"].to_numpy(dtype="float64") - zero)
    parts = {f"{PREFIX}{a.name}": scored[f"points__{a.name}"].to_numpy(dtype="float64") for a in rules.activities}
    for criterion in rules.fit:
        column = f"{_ATTRIBUTE}{criterion.attribute}"
        parts[column] = parts.get(column, 0.0) + scored[f"points__{criterion.name}"].to_numpy(dtype="float64")
    points = pd.DataFrame(parts, index=frame.index)
    total = points.sum(axis=1).to_numpy()
    flat = np.abs(total) < 1e-12
    shares = points.to_numpy() / np.where(flat, 1.0, total)[:, None]
    if flat.any():  # no points (or cancelling ones): the deviation, ~0, goes to the first column
        shares[flat] = 0.0
        shares[flat, 0] = 1.0
    contributions = pd.DataFrame(shares * deviation[:, None], index=frame.index, columns=points.columns)
    return contributions, weight * (zero - blend.centre)


def rule_parts_of(frame: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """:func:`rules.score.score_frame` of the rule columns of ``frame``: the score and each rule's points."""
    columns = rule_input_columns(rules)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the rule input column(s) {missing}: build features as the model was "
                         "trained (training/as_trained.py)")
    rows = pd.RangeIndex(len(frame))
    # one constructor, not a column at a time (which was most of the cost for one row)
    raw = pd.DataFrame({"contact_id": rows.astype(str), "as_of": np.zeros(len(frame), dtype="datetime64[us]")}
                       | {f"points__{a.name}": frame[f"{PREFIX}{a.name}"].to_numpy(dtype="float64")
                          for a in rules.activities})
    contacts = None
    if rules.fit:
        contacts = pd.DataFrame({"contact_id": raw["contact_id"]}
                                | {name: frame[f"{_ATTRIBUTE}{name}"].to_numpy() for name in attribute_names(rules)})
    return score_frame(raw, contacts, rules).set_index(frame.index)


@dataclass(frozen=True)
class Blend:
    """``logit p = (1 - alpha) * logit p_model + alpha * scale * (rule_score - centre)``.

    ``scale`` and ``centre`` put the rule score on the spread of the model's logits on valid, so
    that ``alpha`` weighs two terms of similar size. ``alpha = 0``: the model alone.
    """

    alpha: float = 0.0
    scale: float = 1.0
    centre: float = 0.0
    valid_auc_model: float | None = None
    valid_auc_rules: float | None = None
    valid_auc_blend: float | None = None

    def apply(self, probability: np.ndarray, rule_score: np.ndarray | None) -> np.ndarray:
        if self.alpha == 0.0:
            return probability
        if rule_score is None:
            raise ValueError("this model blends the rule score in: it needs the rule input columns")
        logit = _logit(probability)
        mixed = (1 - self.alpha) * logit + self.alpha * self.scale * (np.asarray(rule_score) - self.centre)
        return 1.0 / (1.0 + np.exp(-mixed))

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "scale": self.scale, "centre": self.centre,
                "valid_auc_model": self.valid_auc_model, "valid_auc_rules": self.valid_auc_rules,
                "valid_auc_blend": self.valid_auc_blend}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def choose_blend(probability_valid: np.ndarray, rule_score_valid: np.ndarray, y_valid: np.ndarray) -> Blend:
    """The ``alpha`` of :data:`ALPHAS` whose blend ranks the validation rows best (ties: the smaller)."""
    from sklearn.metrics import (
        roc_auc_score,  # fitting only: scoring a blend needs no scikit-learn
    )

    logit = _logit(probability_valid)
    spread = float(np.std(rule_score_valid))
    scale = float(np.std(logit)) / spread if spread > 0 else 0.0
    centre = float(np.mean(rule_score_valid))
    model_auc = float(roc_auc_score(y_valid, probability_valid))
    rules_auc = float(roc_auc_score(y_valid, rule_score_valid))
    best = Blend(0.0, scale, centre, model_auc, rules_auc, model_auc)
    if scale == 0.0:  # a constant rule score adds nothing
        return best
    for alpha in ALPHAS[1:]:
        candidate = Blend(float(alpha), scale, centre)
        auc = float(roc_auc_score(y_valid, candidate.apply(probability_valid, rule_score_valid)))
        if auc > best.valid_auc_blend:
            best = Blend(float(alpha), scale, centre, model_auc, rules_auc, auc)
    return best
