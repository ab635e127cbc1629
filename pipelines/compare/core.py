"""Compare models scored on the same held-out rows: the pure middle of `propensity compare`.

Conventions, stated once:

* Ranking metrics (ROC-AUC, PR-AUC, top-k precision/recall/lift, cumulative gain) rank by each
  model's **0-5 score**, the number a sales team sorts by; ties (a band of rule scores at 0, say)
  are handled without favouring row order. ``roc_auc_probability`` and ``pr_auc_probability``
  are also given: ``propensity train`` reports AUCs on the probability, and the difference shows
  what the 0-5 map costs in ranking (ties where the map is flat or saturates at 5).
* Calibration metrics (Brier, ECE, the calibration curve) use each model's **probability**
  (for the rules and the learned points: their score calibrated isotonically on the valid split).
* Intervals are percentile bootstraps over rows, every model on the same resamples; the gap to
  the reference (``rules``) has its own paired interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from propensity.pipelines.compare.config import CompareConfig
from propensity.pipelines.compare.tables import (
    band_table,
    calibration_points,
    gain_curve,
    rank_correlation,
    score_histogram,
    top_k_table,
    transition_matrix,
)
from propensity.pipelines.rules.config import Band
from propensity.pipelines.training.bootstrap import interval, paired_bootstrap
from propensity.pipelines.training.metrics import expected_calibration_error

__all__ = ["DEFAULT_MODELS", "Comparison", "compare_scores"]

# model -> (probability column, 0-5 score column): the columns TrainResult.test_scores holds
DEFAULT_MODELS: dict[str, tuple[str, str]] = {
    "rules": ("rule_probability", "rule_score"),
    "learned": ("probability", "learned_score"),
    "learned_points": ("points_probability", "points_score"),
}


@dataclass
class Comparison:
    """Everything the terminal summary, ``compare.json`` and the HTML report show."""

    models: list[str]
    reference: str
    summary: pd.DataFrame  # one row per model
    gaps: pd.DataFrame  # one row per non-reference model: difference to the reference, paired CI
    top_k: pd.DataFrame
    bands: pd.DataFrame
    rank_correlation: pd.DataFrame
    transitions: dict[str, dict]  # "rules->learned" -> transition_matrix(...)
    curves: dict[str, dict]  # gain / calibration / histogram data per model
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    backtest: pd.DataFrame | None = None  # from propensity.pipelines.compare.backtest
    backtest_notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes None)."""

        def records(frame: pd.DataFrame | None) -> list[dict] | None:
            if frame is None:
                return None
            out = frame.copy()
            for column in out.columns:
                if pd.api.types.is_datetime64_any_dtype(out[column]):
                    out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
            return _clean(out.to_dict(orient="records"))

        return {
            "meta": _clean(self.meta),
            "warnings": list(self.warnings),
            "models": list(self.models),
            "reference": self.reference,
            "summary": records(self.summary),
            "gaps": records(self.gaps),
            "top_k": records(self.top_k),
            "bands": records(self.bands),
            "rank_correlation": _clean(self.rank_correlation.to_dict()),
            "transitions": _clean(self.transitions),
            "curves": _clean(self.curves),
            "backtest": records(self.backtest),
            "backtest_notes": list(self.backtest_notes),
        }


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _check_frame(frame: pd.DataFrame, models: Mapping[str, tuple[str, str]]) -> np.ndarray:
    needed = ["contact_id", "label", *[c for pair in models.values() for c in pair]]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"the scored frame lacks columns {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise ValueError("nothing to compare: the scored frame has no rows")
    labels = frame["label"].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("label must hold 0/1 only")
    for name, (probability, score) in models.items():
        p, s = frame[probability].to_numpy(dtype="float64"), frame[score].to_numpy(dtype="float64")
        if not (np.isfinite(p).all() and np.isfinite(s).all()):
            raise ValueError(f"model {name!r}: {probability} or {score} has missing values")
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"model {name!r}: {probability} is not a probability (outside [0, 1])")
        if s.min() < 0 or s.max() > 5:
            raise ValueError(f"model {name!r}: {score} is not on the 0-5 scale")
    return labels.astype("int64")


def _model_row(model: str, labels: np.ndarray, score: np.ndarray, probability: np.ndarray, boot,
               config: CompareConfig) -> dict:
    """One summary row; ``boot`` is None when the rows hold a single class (AUCs undefined)."""
    nan = math.nan
    roc_ci = interval(boot.roc_auc, config.alpha) if boot is not None else (nan, nan)
    pr_ci = interval(boot.pr_auc, config.alpha) if boot is not None else (nan, nan)
    ranked = boot is not None
    return {
        "model": model, "n": int(labels.size), "positives": int(labels.sum()), "base_rate": float(labels.mean()),
        "roc_auc": float(roc_auc_score(labels, score)) if ranked else nan,
        "roc_auc_low": roc_ci[0], "roc_auc_high": roc_ci[1],
        "pr_auc": float(average_precision_score(labels, score)) if ranked else nan,
        "pr_auc_low": pr_ci[0], "pr_auc_high": pr_ci[1],
        "roc_auc_probability": float(roc_auc_score(labels, probability)) if ranked else nan,
        "pr_auc_probability": float(average_precision_score(labels, probability)) if ranked else nan,
        "brier": float(brier_score_loss(labels, probability, pos_label=1)),
        "ece": expected_calibration_error(labels, probability, n_bins=config.ece_bins),
    }


def compare_scores(
    frame: pd.DataFrame,
    bands: Sequence[Band],
    config: CompareConfig = CompareConfig(),
    models: Mapping[str, tuple[str, str]] | None = None,
    *,
    reference: str = "rules",
    n_boot: int | None = None,
    meta: dict | None = None,
) -> Comparison:
    """Compare models scored on the same rows.

    Parameters
    ----------
    frame : DataFrame
        ``contact_id, label`` and, per model, a probability and a 0-5 score column
        (``TrainResult.test_scores`` has exactly these).
    bands : sequence of Band
        The rule file's bands; every model's 0-5 score is banded with them.
    config : CompareConfig
    models : mapping of name to (probability column, score column), optional
        Default: the models of :data:`DEFAULT_MODELS` whose columns are in ``frame``.
    reference : str
        The model the others are measured against (gaps, transitions).
    n_boot : int, optional
        Overrides ``config.n_boot`` (the backtest uses fewer resamples).
    meta : dict, optional
        Provenance carried into the report (model version, cut-off, paths).
    """
    if models is None:
        models = {m: cols for m, cols in DEFAULT_MODELS.items() if set(cols) <= set(frame.columns)}
    if reference not in models:
        raise ValueError(f"the reference model {reference!r} is not among {list(models)}")
    labels = _check_frame(frame, models)
    scores = {m: frame[s].to_numpy(dtype="float64") for m, (_, s) in models.items()}
    probabilities = {m: frame[p].to_numpy(dtype="float64") for m, (p, _) in models.items()}
    both = 0 < labels.sum() < labels.size
    warnings = [] if both else ["the held-out rows have a single class: AUCs and intervals are undefined"]
    boot = paired_bootstrap(labels, scores, n_boot or config.n_boot, config.seed) if both else None

    nan_pair = (math.nan, math.nan)
    rows = [_model_row(model, labels, scores[model], probabilities[model], boot[model] if both else None, config)
            for model in models]
    summary = pd.DataFrame(rows).set_index("model", drop=False)
    gaps = []
    for model in models:
        if model == reference:
            continue
        gap = {"model": model, "reference": reference}
        for metric in ("roc_auc", "pr_auc"):
            stats = getattr(boot[model], metric) - getattr(boot[reference], metric) if both else None
            low, high = interval(stats, config.alpha) if both else nan_pair
            point = summary.loc[model, metric] - summary.loc[reference, metric]
            gap |= {f"{metric}_gap": float(point), f"{metric}_gap_low": low, f"{metric}_gap_high": high}
        gaps.append(gap)

    contact_ids = frame["contact_id"].astype(str).to_numpy()
    transitions = {
        f"{reference}->{m}": transition_matrix(scores[reference], scores[m], labels, contact_ids, bands,
                                               examples_per_cell=config.examples_per_cell, seed=config.seed)
        for m in models if m != reference
    }
    curves = {}
    for model in models:
        share, captured = gain_curve(labels, scores[model])
        curves[model] = {
            "gain": {"share": share.tolist(), "captured": captured.tolist()},
            "calibration": calibration_points(labels, probabilities[model], config.calibration_bins),
            "histogram": score_histogram(labels, scores[model]),
        }
    summary_meta = dict(meta or {})
    if "as_of" in frame.columns:
        cutoffs = sorted(pd.to_datetime(frame["as_of"]).unique())
        labels_of_cutoffs = [pd.Timestamp(c).strftime("%Y-%m-%d %H:%M").removesuffix(" 00:00") for c in cutoffs]
        summary_meta.setdefault("cutoffs", labels_of_cutoffs)
    summary_meta.setdefault("bands", [{"name": b.name, "min_score": b.min_score} for b in bands])
    summary_meta.setdefault("top_k_percent", list(config.top_k_percent))
    summary_meta.setdefault("n_boot", n_boot or config.n_boot)
    summary_meta.setdefault("alpha", config.alpha)
    return Comparison(
        models=list(models), reference=reference,
        summary=summary.reset_index(drop=True), gaps=pd.DataFrame(gaps),
        top_k=top_k_table(labels, scores, config.top_k_percent),
        bands=band_table(labels, scores, bands),
        rank_correlation=rank_correlation(scores),
        transitions=transitions, curves=curves, meta=summary_meta, warnings=warnings,
    )
