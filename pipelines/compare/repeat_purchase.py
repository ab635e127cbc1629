"""A probabilistic repeat-purchase baseline (BG/NBD) for `compare` when outcomes recur.

Which library and why: ``lifetimes`` (0.11.3, extra ``btyd``), the reference BG/NBD / Pareto-NBD
implementation. It is unmaintained since 2020, but it installs and fits here on numpy 2.4 and
pandas 3.1 (only its ``lifetimes.datasets`` module fails, on a missing ``pkg_resources``; it is not
used). The maintained alternative, ``pymc-marketing`` (its CLV module), needs Python >= 3.12 from
1.3 on and brings PyMC and PyTensor (a C compiler at run time): too heavy for a comparator;
``btyd`` 0.1b3 is a 2022 beta fork of lifetimes.

The model is unsupervised (it reads each contact's purchase history before the cut-off, never a
label), so it is fitted on the rows it scores. Inputs are the feature build's RFM summary of the
purchase-like type, in days, in lifetimes' conventions: ``frequency`` = repeat purchase days,
``recency`` = days from the first to the last purchase, ``T`` = days from the first purchase to
the cut-off; contacts without a purchase have frequency 0, recency 0, T 0.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from propensity.pipelines.training.calibration import ScoreMapper
from propensity.pipelines.training.expected_purchases import (
    BTYD_EXTRA,
    conditional_expected_purchases,
    fit_bgnbd,
)

__all__ = ["BTYD_EXTRA", "bgnbd_scores", "rfm_of"]


def rfm_of(features: pd.DataFrame, purchase_type: str) -> pd.DataFrame:
    """``frequency, recency, T`` (days) from the ``{type}__rfm_*`` columns of the feature build."""
    columns = {"frequency": f"{purchase_type}__rfm_frequency", "recency": f"{purchase_type}__rfm_recency_days",
               "T": f"{purchase_type}__rfm_tenure_days"}
    missing = [c for c in columns.values() if c not in features.columns]
    if missing:
        raise ValueError(f"the feature frame lacks {missing}: the purchase type needs the RFM family "
                         "(monetary_types in the feature config)")
    out = pd.DataFrame({k: pd.to_numeric(features[c], errors="coerce").to_numpy(dtype="float64")
                        for k, c in columns.items()}, index=features.index)
    return out.fillna(0.0).clip(lower=0.0)


def bgnbd_scores(rfm: pd.DataFrame, horizon_days: float, rule_score: np.ndarray, *,
                 penalizer: float = 0.001) -> tuple[np.ndarray, np.ndarray, dict]:
    """BG/NBD fitted on ``rfm``: ``(probability, score 0-5, params)`` of a purchase in the horizon.

    ``probability`` is ``1 - exp(-E[purchases in the horizon])`` (lifetimes gives the expected
    count, not the chance of at least one; the Poisson form is the approximation, stated). The
    0-5 score puts the model's ranking onto the rules' scale by quantile matching (same share of
    contacts per band as the rule score), which needs no label.
    """
    fitted = fit_bgnbd(rfm["frequency"], rfm["recency"], rfm["T"], penalizer=penalizer)  # buyers with T > 0
    expected = conditional_expected_purchases(rfm["frequency"], rfm["recency"], rfm["T"], fitted, horizon_days)
    expected = np.nan_to_num(expected, nan=0.0, posinf=0.0).clip(min=0.0)
    probability = -np.expm1(-expected)
    mapper = ScoreMapper(method="quantile").fit(probability, None, np.asarray(rule_score, dtype="float64"))
    params = asdict(fitted)
    return probability, np.asarray(mapper.transform(probability), dtype="float64"), params
