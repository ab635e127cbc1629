"""Down-sampling negatives for training at scale, without losing calibration.

Conversions are rare (a few percent of spine rows), so most of a large training set is
negatives that teach little. Keeping every positive and a share ``rate`` of the negatives
cuts the feature build and the fit by about ``1 / rate``, but a model fitted on the sample
sees odds inflated by ``1 / rate``: its probabilities come out too high. Two equivalent
corrections keep them calibrated:

- **weights** (used by ``propensity train``): each kept negative counts ``1 / rate``, so the
  weighted log-loss has the expectation of the full data's (importance weighting) and the
  booster's raw probability stays calibrated;
- **prior correction** (King & Zeng, 2001, for a model fitted without weights): shift the
  log-odds by ``log(rate)``, i.e. ``p = r p' / (r p' + 1 - p')``. For a logistic model this is
  exact (case-control sampling changes only the intercept), which is also why the learned
  points model, whose points come from its coefficients and not its intercept, needs none.

Only the training split is sampled: validation and test keep their natural rate, so early
stopping, the calibrator (fitted on validation) and every reported metric see real data.
Which rows are kept is a hash of ``(contact_id, as_of, seed)``: deterministic, independent of
row order, and stable when the data grows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["WEIGHT", "prior_correction", "sample_negatives"]

WEIGHT = "weight"
_KEYS = ["contact_id", "as_of"]


def _uniform(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A value in [0, 1) per row from a hash of its keys (pandas wants a 16-character key)."""
    key = f"propensity{seed % 1_000_000:06d}"
    hashed = pd.util.hash_pandas_object(frame[_KEYS], index=False, hash_key=key).to_numpy()
    return (hashed >> np.uint64(11)).astype("float64") / float(1 << 53)


def sample_negatives(
    frame: pd.DataFrame,
    rate: float,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Keep every positive and a share ``rate`` of the training split's negatives; add ``weight``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Labelled spine rows: ``contact_id``, ``as_of``, ``label`` (0/1) and ``split``.
    rate : float
        Share of negatives kept, in (0, 1]; 1 keeps everything (all weights 1).
    seed : int
        Chooses which negatives are kept.

    Returns
    -------
    pandas.DataFrame
        A new frame, rows in their original order, with ``weight`` = ``1 / rate`` on the kept
        training negatives and 1 elsewhere; the sum of the training weights estimates the
        split's original row count.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"negative_sample_rate must be in (0, 1], got {rate}")
    missing = [c for c in (*_KEYS, "label", "split") if c not in frame.columns]
    if missing:
        raise KeyError(f"sample_negatives needs columns {missing}")
    sampled = (frame["split"] == "train").to_numpy() & (frame["label"].to_numpy() == 0)
    if rate == 1:
        return frame.assign(**{WEIGHT: 1.0})
    keep = ~sampled | (_uniform(frame, seed) < rate)
    weight = np.where(sampled, 1.0 / rate, 1.0)
    return frame.assign(**{WEIGHT: weight})[keep].reset_index(drop=True)


def prior_correction(probability: np.ndarray | Sequence[float], rate: float) -> np.ndarray:
    """Undo negative down-sampling for a model fitted on the sample without weights.

    ``odds = odds' * rate``, i.e. ``p = rate p' / (rate p' + 1 - p')``.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    p = np.asarray(probability, dtype="float64")
    return rate * p / (rate * p + 1.0 - p)
