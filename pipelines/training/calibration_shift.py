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

__all__ = ["calibration_shift"]


def _figures(label: np.ndarray, probability: np.ndarray) -> dict:
    return {"rows": len(label), "rate": float(label.mean()), "mean_probability": float(probability.mean()),
            "ece": float(expected_calibration_error(label, probability))}


def calibration_shift(frame: pd.DataFrame, probability: str = "probability") -> dict:
    """``valid`` and ``test`` figures (rate, mean probability, ECE), the test ones per cut-off too,
    and ``shift``: test ECE minus valid ECE (what the next period costs the calibration)."""
    out: dict = {}
    for split in ("valid", "test"):
        part = frame[frame["split"] == split]
        if len(part):
            out[split] = _figures(part["label"].to_numpy(), part[probability].to_numpy())
    test = frame[frame["split"] == "test"]
    out["test_by_cutoff"] = [{"as_of": str(pd.Timestamp(as_of).date()), **_figures(g["label"].to_numpy(), g[probability].to_numpy())}
                             for as_of, g in test.groupby("as_of", sort=True)]
    if "valid" in out and "test" in out:
        out["shift"] = out["test"]["ece"] - out["valid"]["ece"]
    return out
