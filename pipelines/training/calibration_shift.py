"""How well the calibration fitted on valid holds on the next period: the shift, stated per cut-off.

The calibrator is fitted on the validation rows; the test rows come later. When the world moves
(OULAD: the 2014 presentations pass at other rates than 2013's), probabilities drift even where
the ranking holds. The training summary (and the MLflow run's summary.json) carries, per split
and per test cut-off, the observed rate, the mean predicted probability and the ECE, so that a
drift is visible on the model's record rather than found later.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.pipelines.training.metrics import expected_calibration_error

__all__ = ["calibration_shift", "largest_gaps_by_account", "prior_shift_adjusted"]


def _figures(label: np.ndarray, probability: np.ndarray) -> dict:
    return {"rows": len(label), "rate": float(label.mean()), "mean_probability": float(probability.mean()),
            "ece": float(expected_calibration_error(label, probability))}


def largest_gaps_by_account(test: pd.DataFrame, probability: str = "probability", *, min_rows: int = 100,
                            top: int = 5) -> list[dict]:
    """The test accounts (``account_id``, at least ``min_rows`` rows) whose observed rate and mean
    probability differ most, weighted by their share of the test rows: where the calibration misses
    on the next period (on OULAD an account is a module presentation, e.g. one redesigned since the
    training period). ``share_of_gap``: the account's rows x (rate - mean probability) / all test rows,
    its part of the overall rate minus mean probability. Empty without ``account_id``."""
    if "account_id" not in test.columns or test.empty:
        return []
    groups = test.groupby("account_id", sort=True).agg(rows=("label", "size"), rate=("label", "mean"),
                                                       mean_probability=(probability, "mean"))
    groups = groups[groups["rows"] >= min_rows]
    share = groups["rows"] * (groups["rate"] - groups["mean_probability"]) / len(test)
    order = share.abs().sort_values(ascending=False, kind="stable").index[:top]
    return [{"account_id": str(a), "rows": int(groups.at[a, "rows"]), "rate": float(groups.at[a, "rate"]),
             "mean_probability": float(groups.at[a, "mean_probability"]), "share_of_gap": float(share[a])}
            for a in order]


def calibration_shift(frame: pd.DataFrame, probability: str = "probability") -> dict:
    """``valid`` and ``test`` figures (rate, mean probability, ECE), the test ones per cut-off too,
    the test accounts where it misses most (:func:`largest_gaps_by_account`), and ``shift``: test ECE
    minus valid ECE (what the next period costs the calibration)."""
    out: dict = {}
    for split in ("valid", "test"):
        part = frame[frame["split"] == split]
        if len(part):
            out[split] = _figures(part["label"].to_numpy(), part[probability].to_numpy())
    test = frame[frame["split"] == "test"]
    out["test_by_cutoff"] = [{"as_of": str(pd.Timestamp(as_of).date()), **_figures(g["label"].to_numpy(), g[probability].to_numpy())}
                             for as_of, g in test.groupby("as_of", sort=True)]
    out["test_largest_gaps_by_account"] = largest_gaps_by_account(test, probability)
    if "valid" in out and "test" in out:
        out["shift"] = out["test"]["ece"] - out["valid"]["ece"]
    return out


def prior_shift_adjusted(probability: np.ndarray, train_prior: float, *, tol: float = 1e-8,
                         max_iter: int = 1000) -> tuple[np.ndarray, float]:
    """Calibrated probabilities moved to a new period's class prior, estimated without labels.

    Saerens, Latinne & Decaestecker (2002): when only the share of positives changes (``p(x | y)``
    holds), the posterior under a new prior ``q`` is ``p * q / pi / (p * q / pi + (1 - p) * (1 - q) / (1 - pi))``
    and ``q`` is the fixed point of ``q = mean(adjusted posterior)`` (EM on the unlabelled rows of the
    period). Returns ``(adjusted probabilities, q)``. ``train_prior`` is the positive rate the
    calibration was fitted at (the validation rows').

    Measured, not applied by ``train``: on OULAD's 2014 presentations it raised the test ECE
    (0.0254 -> 0.0312, ``benchmarks/oulad_calibration.py``): what moved there is not only the share
    of passes, so the assumption it rests on does not hold.
    """
    p = np.clip(np.asarray(probability, dtype="float64"), 1e-12, 1 - 1e-12)
    if not 0 < train_prior < 1:
        raise ValueError(f"train_prior must be in (0, 1), got {train_prior}")
    q = float(p.mean())
    for _ in range(max_iter):
        up, down = p * q / train_prior, (1 - p) * (1 - q) / (1 - train_prior)
        adjusted = up / (up + down)
        new = float(adjusted.mean())
        if abs(new - q) < tol:
            q = new
            break
        q = new
    up, down = p * q / train_prior, (1 - p) * (1 - q) / (1 - train_prior)
    return up / (up + down), q
