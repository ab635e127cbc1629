"""Category values held by too few training contacts to show an effect read as missing: the model
cannot fit a per-company effect to one or two conversions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.pipelines.training.config import CalibrationSection
from propensity.pipelines.training.fit import fit_learned
from propensity.pipelines.training.matrix import learnable_categories
from propensity.pipelines.training.model import ModelConfig


def _frame(contacts: int = 3000, cutoffs: int = 3, seed: int = 0) -> pd.DataFrame:
    """Each contact at several cut-offs; ``tier`` (two values) drives conversion, ``company`` (300
    values of ~10 contacts each) does not."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i}" for i in range(contacts)])
    company = rng.choice([f"acme{j:03d}" for j in range(300)], contacts)
    tier = rng.choice(["gold", "basic"], contacts)
    activity = rng.gamma(1.0, 1.0, contacts)
    valid = rng.random(contacts) < 0.3
    rows = []
    for k in range(cutoffs):
        x = activity * rng.gamma(2.0, 0.5, contacts)
        z = -4.2 + 0.8 * x + 1.0 * (tier == "gold")
        label = (rng.random(contacts) < 1 / (1 + np.exp(-z))).astype(int)
        rows.append(pd.DataFrame({"contact_id": ids, "as_of": pd.Timestamp("2025-01-01") + pd.Timedelta(days=7 * k),
                                  "x": x, "company": company, "tier": tier, "label": label,
                                  "split": np.where(valid, "valid", "train"), "rule_score": np.clip(x, 0, 5)}))
    return pd.concat(rows, ignore_index=True)


def test_values_with_too_few_contacts_are_not_learned_and_contacts_count_once():
    frame = _frame()
    train = frame[frame["split"] == "train"]
    cats = {"company": sorted(train["company"].unique()), "tier": ["basic", "gold"]}
    rate = train["label"].mean()
    kept, pooled = learnable_categories(train, cats, train["label"].to_numpy())
    assert kept["tier"] == ["basic", "gold"] and "tier" not in pooled  # ~1,000 contacts each
    per_company = train.groupby("company")["contact_id"].nunique()  # distinct: 3 cut-offs count once
    expected = sorted(per_company.index[per_company * rate >= 5])
    assert kept["company"] == expected and len(expected) < 5
    assert pooled["company"] == (len(cats["company"]) - len(expected), len(cats["company"]))
    # a lower bar keeps them all: the rule is the expected conversions, nothing else
    everything, none = learnable_categories(train, cats, train["label"].to_numpy(), min_expected_positives=0.0)
    assert everything == cats and none == {}


def test_the_fitted_model_reads_a_rare_company_as_missing():
    frame = _frame()
    fitted = fit_learned(frame, ["x", "company", "tier"], ModelConfig(tune=False, n_jobs=1), CalibrationSection())
    assert fitted.categories["tier"] == ["basic", "gold"]
    seen = frame.loc[frame["split"] == "train", "company"].unique()  # the categories train learns from
    rare = [c for c in seen if c not in fitted.categories["company"]]
    assert fitted.pooled["company"][0] == len(rare) > 250
    # two rows that differ only in a rare company get the same raw score, equal to a missing company
    row = frame.iloc[[0, 0, 0]].copy()
    row["company"] = [rare[0], rare[1], None]
    from propensity.pipelines.training.matrix import prepare_matrix

    matrix, _ = prepare_matrix(row, ["x", "company", "tier"], fitted.categories)
    raw = fitted.model.predict_raw(matrix)
    assert raw[0] == raw[1] == raw[2]
