"""An uplift model on the holdout's data, compared with the propensity ranking (optional extra).

The propensity score ranks who will convert; a trigger is worth sending to those it *moves*.
On the closed exposures of one trigger, a two-model uplift estimator (scikit-uplift's
``TwoModels``: one classifier on treated contacts, one on held-out contacts, uplift = the
difference of their probabilities) is fitted on the earlier exposures and judged on the later
ones (the held-out period), beside the rule score at exposure used as the ranking. Both are
scored with the Qini coefficient and the uplift in the top ``k`` of each ranking (scikit-uplift's
``qini_auc_score`` and ``uplift_at_k``). Needs ``pip install 'propensity[uplift]'``.

scikit-uplift's metrics call ``sklearn.utils.extmath.stable_cumsum``, deprecated in scikit-learn
1.8 and removed in 1.10 (our pin stays below it); its FutureWarning is silenced around the call
only, never at import.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["UpliftComparison", "compare_uplift", "uplift_unavailable"]


def uplift_unavailable() -> str | None:
    """Why the uplift model cannot run here (the extra is missing), or None."""
    try:
        import sklift  # noqa: F401
    except ImportError:
        return "the uplift model needs scikit-uplift: pip install 'propensity[uplift]'"
    return None


@dataclass(frozen=True)
class UpliftComparison:
    """The uplift model vs the propensity ranking on the later exposures of one source."""

    source: str
    split_at: pd.Timestamp  # exposures before it fitted the model, the others judged it
    fit_rows: int
    evaluated_rows: int
    k: float
    table: pd.DataFrame  # ranking, qini, uplift_at_k
    notes: list[str] = field(default_factory=list)


def compare_uplift(frame: pd.DataFrame, features: Sequence[str], score_column: str, *, source: str = "",
                   k: float = 0.3, fit_share: float = 0.5, random_state: int = 0) -> UpliftComparison:
    """Fit on the first ``fit_share`` of exposures in time, judge both rankings on the rest (pure).

    ``frame``: one row per closed exposure with ``at``, ``held_out``, ``converted``, the
    ``features`` and ``score_column`` (the propensity score at exposure).

    Raises
    ------
    ValueError
        When an arm of either period is empty, or its outcomes are all one class.
    """
    reason = uplift_unavailable()
    if reason is not None:
        raise ValueError(reason)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklift.metrics import qini_auc_score, uplift_at_k
    from sklift.models import TwoModels

    ordered = frame.sort_values("at", kind="stable").reset_index(drop=True)
    cut = round(len(ordered) * fit_share)
    fit, judged = ordered.iloc[:cut], ordered.iloc[cut:]
    for name, part in (("fitting", fit), ("held-out period", judged)):
        for arm, rows in (("treated", part[~part["held_out"]]), ("held-out", part[part["held_out"]])):
            if rows["converted"].nunique() < 2:
                raise ValueError(f"{source or 'exposures'}: the {name}'s {arm} contacts all "
                                 f"{'converted' if rows['converted'].all() and len(rows) else 'did not convert'} "
                                 f"({len(rows):,} rows): no uplift model can be fitted or judged")

    def estimator():
        return make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000,
                                                                                   random_state=random_state))

    columns = list(features)
    model = TwoModels(estimator_trmnt=estimator(), estimator_ctrl=estimator(), method="vanilla")
    treatment = (~fit["held_out"]).astype(int).to_numpy()
    model.fit(fit[columns].to_numpy(dtype="float64"), fit["converted"].astype(int).to_numpy(), treatment)
    uplift = model.predict(judged[columns].to_numpy(dtype="float64"))
    y = judged["converted"].astype(int).to_numpy()
    t = (~judged["held_out"]).astype(int).to_numpy()
    rankings = {"uplift model": np.asarray(uplift, dtype="float64"),
                "propensity (rule score)": judged[score_column].to_numpy(dtype="float64")}
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*stable_cumsum.*", category=FutureWarning)
        for name, ranking in rankings.items():
            rows.append({"ranking": name, "qini": float(qini_auc_score(y, ranking, t)),
                         "uplift_at_k": float(uplift_at_k(y, ranking, t, strategy="overall", k=k))})
    notes = [f"fitted on {len(fit):,} exposures before {judged['at'].iloc[0]:%Y-%m-%d %H:%M}, judged on the "
             f"{len(judged):,} after; uplift_at_k: treated minus held-out conversion in the top {k:.0%}"]
    return UpliftComparison(source, pd.Timestamp(judged["at"].iloc[0]), len(fit), len(judged), k,
                            pd.DataFrame(rows), notes)
