"""A small scored frame with the columns TrainResult.test_scores has (made in code, seeded)."""

import numpy as np
import pandas as pd

from propensity.pipelines.rules.config import Band

BANDS = (Band(name="cold", min_score=0), Band(name="warm", min_score=2), Band(name="hot", min_score=3.5))


def scored_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal * 1.5 - 2.5)))).astype(int)
    rule = np.clip(np.round(2 + signal + rng.normal(scale=1.2, size=n), 1), 0, 5)  # banded, tied
    learned_p = 1 / (1 + np.exp(-(signal * 1.4 - 2.4 + rng.normal(scale=0.3, size=n))))
    points = np.clip(2 + signal + rng.normal(scale=0.8, size=n), 0, 5)
    return pd.DataFrame({
        "contact_id": [f"c{i:04d}" for i in range(n)],
        "as_of": pd.Timestamp("2025-05-01"),
        "label": y,
        "rule_score": rule, "rule_probability": np.clip(rule / 10, 0, 1),
        "probability": learned_p, "learned_score": np.clip(learned_p * 10, 0, 5),
        "points_score": points, "points_probability": np.clip(points / 12, 0, 1),
    })
