"""What each driver adds to the hidden log-hazard at a cut-off: the truth an explanation is checked against."""

from __future__ import annotations

import numpy as np
import pandas as pd

from propensity.pipelines.synthetic.simulate import _saturate
from propensity.pipelines.synthetic.truth import _as_of_day, observed_at
from propensity.pipelines.synthetic.world import (
    _BETA,
    _KINDS,
    _SIZE_REFERENCE,
    HIDDEN_FIT_EFFECTS,
    World,
)

__all__ = ["true_contributions"]


def true_contributions(world: World, as_of: object) -> pd.DataFrame:
    """Per contact eligible at ``as_of`` (as :func:`true_probability`), each driver's term of the
    hidden daily log-hazard on the cut-off's day, in log-odds, *not* centred.

    Columns ``contact_id, as_of``, then one per explanation group the driver belongs to: the event
    types (``page_view`` holds both page views and the hidden ``pricing_view``, which are one event
    type in the tables) with ``beta_k * s(decayed_k)``, and the contact attributes
    (``company_size``, ``industry``, ``country``, ``role``, ``plan_interest``, ``lead_source``) with
    their additive fit effect. The terms add up to the log-hazard minus the intercept. Centre them
    (subtract each column's mean over the rows compared) before setting them beside SHAP values,
    which are relative to the model's average.
    """
    config = world.config
    t0 = _as_of_day(config, as_of)
    stamp = pd.Timestamp(config.start) + pd.Timedelta(days=t0)
    contacts = world.contacts
    observed = observed_at(world, t0)
    eligible = observed.eligible
    decayed = observed.decayed[eligible]
    terms = _BETA[None, :] * _saturate(decayed)  # once-kinds saturate the same way (truth.py)
    out = pd.DataFrame({"contact_id": contacts["contact_id"].iloc[eligible].to_numpy(),
                        "as_of": stamp.to_datetime64().astype("datetime64[us]")})
    for k, name in enumerate(_KINDS):
        group = "page_view" if name == "pricing_view" else name
        out[group] = out.get(group, 0.0) + terms[:, k]
    attributes = contacts.iloc[eligible]
    size = HIDDEN_FIT_EFFECTS["log_company_size"]["per_log_unit_vs_50"]
    out["company_size"] = size * np.log(attributes["company_size"].to_numpy(dtype="float64") / _SIZE_REFERENCE)
    for name in ("industry", "country", "role", "plan_interest", "lead_source"):
        effects = HIDDEN_FIT_EFFECTS[name]
        out[name] = attributes[name].map(effects).to_numpy(dtype="float64")
    return out
