"""BG/NBD expected purchases (training/expected_purchases.py) against a naive reference.

The reference: the RFM summary from tests/features/reference.py (plain Python over the raw events,
one row at a time) and lifetimes' own ``conditional_expected_number_of_purchases_up_to_time``
with the same parameters; ours is the feature build's RFM columns and our formula inside an Ibis
expression (a Python UDF), run on DuckDB.
"""

from __future__ import annotations

from datetime import timedelta

import ibis
import numpy as np
import pandas as pd
import pytest
from reference import (
    AS_OF,
    TYPES,
    RefConfig,
    make_world,
    reference_features,
    reference_known,
)

from propensity.features.build import build_features
from propensity.features.config import FeatureConfig
from propensity.features.spine import spine_from_frame
from propensity.pipelines.training.expected_purchases import (
    BgNbd,
    ExpectedPurchases,
    add_expected_purchases,
    expected_purchases_expr,
)

lifetimes = pytest.importorskip("lifetimes", reason="the btyd extra (lifetimes) is the reference")

PURCHASE = "trialStarted"
CONFIG = FeatureConfig(windows_days=(7, 30), half_lives_days=(7.0,), monetary_types=(PURCHASE,))
# two parameter sets: a > 1, and a < 1 as the fit gave on the generated repeat-purchase world
PARAMS = {"trial_started": BgNbd(r=0.8, alpha=25.0, a=1.4, b=5.0)}
LOW_A = {"trial_started": BgNbd(r=0.83, alpha=29.2, a=0.617, b=2.43)}


def _reference(records, rows, params: BgNbd, horizon: float) -> dict[tuple, float | None]:
    expected = reference_features(records.events, rows, RefConfig(event_types=TYPES, windows=(7, 30),
                                                                   half_lives=(7.0,), monetary=(PURCHASE,)),
                                  records.contacts)
    fitter = lifetimes.BetaGeoFitter()
    fitter.params_ = pd.Series({"r": params.r, "alpha": params.alpha, "a": params.a, "b": params.b})
    out = {}
    for row in expected:
        x = row["trial_started__rfm_frequency"]
        if x is None:
            out[(row["contact_id"], row["as_of"])] = None
            continue
        value = fitter.conditional_expected_number_of_purchases_up_to_time(
            horizon, x, row["trial_started__rfm_recency_days"], row["trial_started__rfm_tenure_days"])
        out[(row["contact_id"], row["as_of"])] = float(np.asarray(value))
    return out


@pytest.mark.parametrize(("seed", "params"), [(0, PARAMS), (1, LOW_A)])
def test_expected_purchases_match_lifetimes_on_the_reference_rfm(seed, params):
    records = make_world(seed, n_events=900)
    events, contacts = records.frames()
    con = ibis.duckdb.connect()
    ev, ct = con.create_table("events", events), con.create_table("contacts", contacts)
    cutoffs = [AS_OF, AS_OF - timedelta(days=40), (AS_OF - timedelta(days=3)).replace(hour=0, minute=0, second=0,
                                                                                      microsecond=0)]
    rows = [(c, t) for t in cutoffs for c in reference_known(records.events, t, records.contacts)]
    spine = spine_from_frame(con, pd.DataFrame(rows, columns=["contact_id", "as_of"]))
    fitted = ExpectedPurchases(horizon_days=30.0, params=params, fitted_as_of=str(AS_OF))
    built = build_features(ev, spine, CONFIG, contacts=ct, event_types=TYPES)
    got = expected_purchases_expr(built, fitted).execute()
    want = _reference(records, rows, params["trial_started"], 30.0)
    column = "trial_started__bgnbd_expected_30d"
    assert got[column].notna().sum() > 20  # enough buyers for the comparison to mean something
    for row in got.itertuples(index=False):
        key = (row.contact_id, pd.Timestamp(row.as_of).to_pydatetime())
        value, ref = getattr(row, column), want[key]
        if ref is None or not np.isfinite(ref) or ref < 0:
            assert pd.isna(value), key
        else:
            assert value == pytest.approx(ref, rel=1e-9, abs=1e-12), key
    # the pandas twin (training's path) gives the same numbers as the Ibis expression
    frame = add_expected_purchases(built.execute(), fitted)
    merged = got.merge(frame, on=["contact_id", "as_of"], suffixes=("", "_pandas"))
    np.testing.assert_allclose(merged[column], merged[f"{column}_pandas"], rtol=1e-12, equal_nan=True)


def test_events_after_as_of_do_not_move_the_expected_purchases():
    records = make_world(2, n_events=700)
    events, contacts = records.frames()
    later = events[events["event_type"] == PURCHASE].head(50).assign(
        event_id=lambda f: "future" + f["event_id"], ts=pd.Timestamp(AS_OF) + pd.Timedelta(days=2))
    fitted = ExpectedPurchases(horizon_days=30.0, params=PARAMS, fitted_as_of=str(AS_OF))
    results = []
    for frame in (events, pd.concat([events, later], ignore_index=True)):
        con = ibis.duckdb.connect()
        ev, ct = con.create_table("events", frame), con.create_table("contacts", contacts)
        spine = spine_from_frame(con, pd.DataFrame({"contact_id": contacts["contact_id"], "as_of": AS_OF}))
        out = expected_purchases_expr(build_features(ev, spine, CONFIG, contacts=ct, event_types=TYPES), fitted)
        results.append(out.execute().sort_values("contact_id").reset_index(drop=True))
    pd.testing.assert_frame_equal(results[0], results[1])
