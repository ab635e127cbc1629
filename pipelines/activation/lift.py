"""``propensity lift``: do the triggers and pushes bring conversions that would not have happened?

Per source (a trigger, or ``push:<destination>``) and band, the conversion of treated contacts
is compared with that of held-out contacts exposed the same way (see
:mod:`propensity.pipelines.activation.holdout`). A contact converts when an outcome (of the
configured kind) falls in ``[exposed at, exposed at + window_days)``; only exposures whose window
has closed by ``data_end`` (by default the newest outcome known) count, and the others are
reported as still open.

The interval of the difference of the two rates is Newcombe's hybrid score interval (method 10
of Newcombe 1998), built from each arm's Wilson interval (scipy's ``proportion_ci``). It keeps
its coverage near the nominal level for small arms and rates near 0, where the Wald interval is
too narrow, and statsmodels (whose ``confint_proportions_2indep`` computes the same) is not one
of our dependencies. Incremental conversions are the difference times the treated count: the
conversions the treated arm had beyond what its own size would have had at the held-out rate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa
from scipy.stats import binomtest

from propensity.pipelines.activation.holdout import HoldoutConfig
from propensity.pipelines.activation.tables import holdout_exposures

__all__ = [
    "LIFT_COLUMNS",
    "LiftReport",
    "label_exposures",
    "lift_report",
    "lift_table",
    "newcombe_interval",
    "read_exposures",
]

ALL_BANDS = "(all)"
LIFT_COLUMNS = ["source", "band", "treated", "treated_converted", "treated_rate", "held_out", "held_out_converted",
                "held_out_rate", "difference", "difference_low", "difference_high", "incremental",
                "incremental_low", "incremental_high", "effect"]


@dataclass(frozen=True)
class LiftReport:
    """The lift table and what it was computed from."""

    experiment: str
    window_days: float
    data_end: dt.datetime | None
    alpha: float
    table: pd.DataFrame  # LIFT_COLUMNS, one row per source and band plus each source's (all)
    exposures: int  # whose windows have closed (counted)
    still_open: int  # exposures whose windows have not closed yet (not counted)
    notes: list[str] = field(default_factory=list)


def read_exposures(engine: sa.Engine, experiment: str) -> pd.DataFrame:
    """The recorded exposures of ``experiment``: ``source, contact_id, band, at, held_out``."""
    t = holdout_exposures
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.source, t.c.contact_id, t.c.band, t.c.at, t.c.held_out)
                            .where(t.c.experiment == experiment)).all()
    frame = pd.DataFrame(rows, columns=["source", "contact_id", "band", "at", "held_out"])
    frame["at"] = pd.to_datetime(frame["at"]).astype("datetime64[us]")
    frame["held_out"] = frame["held_out"].astype(bool)
    frame["band"] = frame["band"].fillna("(none)").astype(str)
    return frame


def label_exposures(exposures: pd.DataFrame, outcomes: pd.DataFrame, window_days: float,
                    data_end: dt.datetime, outcome: str | None = None) -> pd.DataFrame:
    """``exposures`` with ``closed`` (the window ended by ``data_end``) and ``converted``.

    ``outcomes`` has ``contact_id, ts`` (and ``outcome`` when ``outcome`` is given). Pure.
    """
    out = exposures.copy()
    window = pd.Timedelta(days=window_days)
    out["closed"] = out["at"] + window <= pd.Timestamp(data_end)
    if outcome is not None:
        outcomes = outcomes[outcomes["outcome"].astype("string") == outcome]
    hits = out.reset_index(names="_row")[["_row", "contact_id", "at"]].merge(
        outcomes[["contact_id", "ts"]], on="contact_id", how="inner")
    inside = hits[(hits["ts"] >= hits["at"]) & (hits["ts"] < hits["at"] + window)]
    out["converted"] = np.isin(np.arange(len(out)), inside["_row"].unique())
    return out


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``k1/n1 - k2/n2`` from the two Wilson intervals."""
    if n1 == 0 or n2 == 0:
        return float("nan"), float("nan")
    p1, p2 = k1 / n1, k2 / n2
    lo1, hi1 = binomtest(k1, n1).proportion_ci(confidence, method="wilson")
    lo2, hi2 = binomtest(k2, n2).proportion_ci(confidence, method="wilson")
    d = p1 - p2
    return (d - float(np.sqrt((p1 - lo1) ** 2 + (hi2 - p2) ** 2)),
            d + float(np.sqrt((hi1 - p1) ** 2 + (p2 - lo2) ** 2)))


def lift_table(labelled: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per source and band (and per source over all bands), from closed exposures. Pure.

    ``effect`` is ``more`` / ``fewer`` when the interval excludes 0, ``none found`` when it
    includes it, and ``no held-out contacts`` (or treated) when an arm is empty.
    """
    closed = labelled[labelled["closed"]]
    rows = []
    for source, part in closed.groupby("source", sort=True):
        groups = [(band, g) for band, g in part.groupby("band", sort=True)] + [(ALL_BANDS, part)]
        for band, g in groups:
            rows.append(_row(str(source), str(band), g, 1 - alpha))
    return pd.DataFrame(rows, columns=LIFT_COLUMNS)


def _row(source: str, band: str, g: pd.DataFrame, confidence: float) -> dict:
    treated, held = g[~g["held_out"]], g[g["held_out"]]
    n1, k1 = len(treated), int(treated["converted"].sum())
    n2, k2 = len(held), int(held["converted"].sum())
    p1 = k1 / n1 if n1 else float("nan")
    p2 = k2 / n2 if n2 else float("nan")
    lo, hi = newcombe_interval(k1, n1, k2, n2, confidence)
    if n1 == 0 or n2 == 0:
        effect = "no treated contacts" if n1 == 0 else "no held-out contacts"
    elif lo > 0:
        effect = "more"
    elif hi < 0:
        effect = "fewer"
    else:
        effect = "none found"
    return {"source": source, "band": band, "treated": n1, "treated_converted": k1, "treated_rate": p1,
            "held_out": n2, "held_out_converted": k2, "held_out_rate": p2, "difference": p1 - p2,
            "difference_low": lo, "difference_high": hi, "incremental": (p1 - p2) * n1,
            "incremental_low": lo * n1, "incremental_high": hi * n1, "effect": effect}


def lift_report(exposures: pd.DataFrame, outcomes: pd.DataFrame, config: HoldoutConfig, *,
                data_end: dt.datetime | None = None, alpha: float = 0.05,
                window_days: float | None = None) -> LiftReport:
    """The lift of ``config``'s experiment (pure: frames in, a report out).

    ``data_end`` defaults to the newest outcome's time (what is known to have been recorded);
    the report's notes say so.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    window = window_days if window_days is not None else config.window_days
    notes = []
    if data_end is None:
        if outcomes.empty:
            data_end = None
            notes.append("no outcomes in the workspace yet: no window can be judged closed "
                         "(`propensity ingest outcomes FILE`, or give --data-end)")
        else:
            data_end = pd.Timestamp(outcomes["ts"].max()).to_pydatetime()
            notes.append(f"windows are judged closed up to the newest outcome, {data_end:%Y-%m-%d %H:%M} "
                         "(give --data-end to choose another end)")
    if exposures.empty:
        notes.append(f"experiment {config.experiment!r} has no exposures recorded yet: serve with "
                     "--triggers (a file with a holdout) or push with --triggers")
    if data_end is None:
        labelled = exposures.assign(closed=False, converted=False)
    else:
        labelled = label_exposures(exposures, outcomes, window, data_end, config.outcome)
    table = lift_table(labelled, alpha)
    still_open = int((~labelled["closed"]).sum()) if len(labelled) else 0
    if still_open:
        notes.append(f"{still_open:,} exposure(s) whose {window:g}-day window has not closed are not counted yet")
    return LiftReport(config.experiment, window, data_end, alpha, table, int(labelled["closed"].sum())
                      if len(labelled) else 0, still_open, notes)
