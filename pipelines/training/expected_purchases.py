"""BG/NBD expected purchases over the horizon as a model input (``expected_purchases: true``).

For each purchase-like type (the feature config's ``monetary_types``), one column
``{type}__bgnbd_expected_{H}d``: the number of purchases BG/NBD (Fader, Hardie & Lee 2005, eq. 10)
expects in the next ``H`` days (the horizon) given the RFM summary the feature build already has
(``rfm_frequency``, ``rfm_recency_days``, ``rfm_tenure_days``, lifetimes' conventions, in days);
NULL without a purchase, as the RFM columns.

Point in time. The four population parameters ``r, alpha, a, b`` are fitted without labels on the
RFM summaries of one cut-off's rows, which read only events with ``ts < as_of``:

- a training row gets the parameters fitted on its own cut-off's rows;
- every other row (valid, test, scoring later) gets those of the latest training cut-off, stored
  with the model: they were fitted on events before that cut-off, hence before the row's own.

The fit uses ``lifetimes`` (extra ``btyd``, see compare/repeat_purchase.py for why that library);
the conditional expectation is written here once in numpy/scipy (the same formula as lifetimes'
``conditional_expected_number_of_purchases_up_to_time``) and used both on pandas frames
(training) and inside an Ibis expression as a Python scalar UDF (scoring, compare, explain), which
runs on DuckDB and on Spark; a backend without Python UDFs (PostgreSQL, warehouses) is refused
when the expression is built, with the reason.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import asdict, dataclass

import ibis
import numpy as np
import pandas as pd

__all__ = ["BTYD_EXTRA", "BgNbd", "ExpectedPurchases", "add_expected_purchases", "column_name",
           "conditional_expected_purchases", "expected_purchases_expr", "fit_bgnbd", "fit_expected_purchases",
           "purchase_type_names", "rfm_columns"]

BTYD_EXTRA = "btyd"
_UDF_BACKENDS = ("duckdb", "pyspark")
_MIN_BUYERS = 20


@dataclass(frozen=True)
class BgNbd:
    """BG/NBD's population parameters (rates per day)."""

    r: float
    alpha: float
    a: float
    b: float


def column_name(type_name: str, horizon_days: float) -> str:
    return f"{type_name}__bgnbd_expected_{horizon_days:g}d"


def purchase_type_names(columns) -> list[str]:
    """The purchase-like types of a feature frame: those the build gave the RFM family."""
    suffix = "__rfm_frequency"
    return [c[: -len(suffix)] for c in columns if c.endswith(suffix)]


def rfm_columns(type_name: str) -> tuple[str, str, str]:
    """The feature build's ``frequency, recency, T`` columns of a purchase-like type."""
    return (f"{type_name}__rfm_frequency", f"{type_name}__rfm_recency_days", f"{type_name}__rfm_tenure_days")


def conditional_expected_purchases(frequency, recency, tenure, params: BgNbd, t: float) -> np.ndarray:
    """``E[purchases in (T, T + t] | x, t_x, T]`` under BG/NBD; NaN where an input is NaN.

    The hypergeometric term switches to Euler's transformation where the plain one overflows (as
    lifetimes does).
    """
    # scipy.special costs ~0.2 s to import (with numpy.f2py, through its array-API layer): every
    # model's features import this module, and only a model that reads expected purchases needs it
    from scipy.special import hyp2f1

    x, tx, big_t = (np.asarray(v, dtype="float64") for v in (frequency, recency, tenure))
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(all="ignore"):
        a1, b1, c1 = r + x, b + x, a + b + x - 1
        z = t / (alpha + big_t + t)
        ln_hyp = np.log(hyp2f1(a1, b1, c1, z))
        alt = np.log(hyp2f1(c1 - a1, c1 - b1, c1, z)) + (c1 - a1 - b1) * np.log1p(-z)
        ln_hyp = np.where(np.isinf(ln_hyp), alt, ln_hyp)
        numerator = (a + b + x - 1) / (a - 1) * -np.expm1(ln_hyp + (r + x) * np.log((alpha + big_t) / (alpha + t + big_t)))
        denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + big_t) / (alpha + tx)) ** (r + x)
        return numerator / denominator


def fit_bgnbd(frequency, recency, tenure, *, weights=None, penalizer: float = 0.001) -> BgNbd:
    """BG/NBD fitted by lifetimes on buyers with ``T > 0`` (a first purchase at the cut-off informs nothing).

    ``weights``: how many customers each row stands for (training's negative sampling keeps a share
    of the rows that did not convert, weighted 1 / rate: unweighted, the fit would see a population
    chosen by its labels).

    Raises ValueError with the reason when there are too few buyers or the fit does not converge,
    ImportError naming the extra when lifetimes is missing.
    """
    try:
        from lifetimes import BetaGeoFitter
    except ImportError as exc:  # the optional extra
        raise ImportError(f"BG/NBD needs the `{BTYD_EXTRA}` extra: pip install 'propensity[{BTYD_EXTRA}]' "
                          "(lifetimes)") from exc
    x, tx, big_t = (pd.Series(np.asarray(v, dtype="float64")) for v in (frequency, recency, tenure))
    w = pd.Series(np.ones(len(x)) if weights is None else np.asarray(weights, dtype="float64"))
    keep = big_t.notna() & x.notna() & tx.notna() & (big_t > 0)
    if int(keep.sum()) < _MIN_BUYERS:
        raise ValueError(f"only {int(keep.sum())} contacts have a purchase before the cut-off: too few for BG/NBD")
    fitter = BetaGeoFitter(penalizer_coef=penalizer)
    # lifetimes prints scipy's whole OptimizeResult to stdout before raising when the fit does not
    # converge: kept out of stdout, its first line goes into the reason
    printed = io.StringIO()
    try:
        # the optimiser's overflow warnings on the way are noise; whether it converged is what counts
        with contextlib.redirect_stdout(printed), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            fitter.fit(x[keep].reset_index(drop=True), tx[keep].reset_index(drop=True),
                       big_t[keep].reset_index(drop=True), weights=w[keep].to_numpy())
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:  # ConvergenceError is a ValueError
        said = next((line.strip() for line in printed.getvalue().splitlines() if line.strip()), "")
        raise ValueError(f"BG/NBD did not converge on {int(keep.sum()):,} buyers"
                         + (f" ({said})" if said else f" ({type(exc).__name__})")) from None
    return BgNbd(**{k: float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")})


@dataclass(frozen=True)
class ExpectedPurchases:
    """What a model stores: the horizon, and per purchase-like type (its safe name) the parameters
    fitted on the latest training cut-off (``fitted_as_of``)."""

    horizon_days: float
    params: dict[str, BgNbd]
    fitted_as_of: str

    @property
    def columns(self) -> list[str]:
        return [column_name(name, self.horizon_days) for name in self.params]

    def to_dict(self) -> dict:
        return {"horizon_days": self.horizon_days, "fitted_as_of": self.fitted_as_of,
                "params": {name: asdict(p) for name, p in self.params.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> ExpectedPurchases:
        return cls(horizon_days=float(data["horizon_days"]), fitted_as_of=str(data["fitted_as_of"]),
                   params={name: BgNbd(**p) for name, p in data["params"].items()})


def fit_expected_purchases(frame: pd.DataFrame, type_names: list[str], horizon_days: float
                           ) -> tuple[pd.DataFrame, ExpectedPurchases | None, list[str]]:
    """Training: ``frame`` (train rows first, any split) with the columns, the stored fit, and notes.

    Each training cut-off's rows get the parameters fitted on that cut-off; every other row those
    of the latest training cut-off. A type whose fit fails on the latest training cut-off gets no
    column (a note says why); on an earlier cut-off its rows get the latest training parameters
    (a note says so too).
    """
    notes: list[str] = []
    train_as_of = sorted(frame.loc[frame["split"] == "train", "as_of"].unique())
    if not type_names or not train_as_of:
        return frame, None, ["no BG/NBD expected purchases: " + ("no purchase-like type (monetary_types)"
                                                                if not type_names else "no training rows")]
    latest = train_as_of[-1]
    out, kept = frame.copy(), {}
    for name in type_names:
        cols = rfm_columns(name)
        at_latest = out[(out["split"] == "train") & (out["as_of"] == latest)]
        try:
            stored = fit_bgnbd(*(at_latest[c] for c in cols), weights=_weights(at_latest))
        except ValueError as exc:
            notes.append(f"no {column_name(name, horizon_days)}: {exc} (latest training cut-off {latest:%Y-%m-%d})")
            continue
        params_of = {}
        for cutoff in train_as_of[:-1]:
            rows = out[(out["split"] == "train") & (out["as_of"] == cutoff)]
            try:
                params_of[cutoff] = fit_bgnbd(*(rows[c] for c in cols), weights=_weights(rows))
            except ValueError as exc:
                params_of[cutoff] = stored
                notes.append(f"{column_name(name, horizon_days)} at {cutoff:%Y-%m-%d}: {exc}; the latest "
                             "training cut-off's parameters are used there (fitted on later events)")
        # which fit each row reads: its own cut-off's on train, the latest training cut-off's elsewhere
        own = out["as_of"].where((out["split"] == "train") & out["as_of"].isin(list(params_of)))
        values = np.full(len(out), np.nan)
        for cutoff, params in [*params_of.items(), (None, stored)]:
            mask = (own == cutoff).to_numpy() if cutoff is not None else own.isna().to_numpy()
            values[mask] = conditional_expected_purchases(*(out.loc[mask, c] for c in cols), params, horizon_days)
        out[column_name(name, horizon_days)] = _finite(values, out[cols[0]].isna().to_numpy())
        kept[name] = stored
    if not kept:
        return out, None, notes
    fitted = ExpectedPurchases(horizon_days=float(horizon_days), params=kept, fitted_as_of=str(latest))
    notes.insert(0, f"BG/NBD expected purchases in {horizon_days:g} days for {', '.join(kept)} (parameters fitted "
                 f"per training cut-off, the latest's kept for scoring: "
                 + "; ".join(f"{n}: " + ", ".join(f"{k}={v:.3g}" for k, v in asdict(p).items()) for n, p in kept.items())
                 + ")")
    return out, fitted, notes


def _weights(rows: pd.DataFrame):
    # training's negative sampling (training/sampling.py) leaves a `weight` column; the backtest has none
    return rows["weight"].to_numpy() if "weight" in rows.columns else None


def _finite(values: np.ndarray, no_purchase: np.ndarray) -> np.ndarray:
    # an overflow of the formula (far outside the fitted range) reads as missing, as no purchase does
    values = np.where(np.isfinite(values) & (values >= 0), values, np.nan)
    values[no_purchase] = np.nan
    return values


def add_expected_purchases(frame: pd.DataFrame, fitted: ExpectedPurchases) -> pd.DataFrame:
    """``frame`` with the stored fit's columns (pandas; :func:`expected_purchases_expr` is the Ibis twin)."""
    out = frame.copy()
    for name, params in fitted.params.items():
        cols = rfm_columns(name)
        values = conditional_expected_purchases(*(out[c] for c in cols), params, fitted.horizon_days)
        out[column_name(name, fitted.horizon_days)] = _finite(values, out[cols[0]].isna().to_numpy())
    return out


@ibis.udf.scalar.python
def _bgnbd_expected(frequency: float, recency: float, tenure: float, r: float, alpha: float, a: float, b: float,
                    t: float) -> float:
    if frequency is None or recency is None or tenure is None:
        return None
    # float(): Spark hands numeric literals over as decimal.Decimal
    x, tx, big_t, r, alpha, a, b, t = (float(v) for v in (frequency, recency, tenure, r, alpha, a, b, t))
    value = float(conditional_expected_purchases(x, tx, big_t, BgNbd(r, alpha, a, b), t))
    return value if math.isfinite(value) and value >= 0 else None


def expected_purchases_expr(features: ibis.Table, fitted: ExpectedPurchases) -> ibis.Table:
    """``features`` (the build's table, with the RFM columns) with the stored fit's columns.

    Raises ValueError on a backend without Python scalar UDFs (the family runs on DuckDB and Spark).
    """
    backend = features._find_backend().name
    if backend not in _UDF_BACKENDS:
        raise ValueError(f"the model reads BG/NBD expected purchases ({', '.join(fitted.columns)}), a Python UDF "
                         f"that runs on {' and '.join(_UDF_BACKENDS)}, not on {backend}: score on DuckDB or "
                         "Spark, or train with expected_purchases: false")
    added = {}
    for name, p in fitted.params.items():
        x, tx, big_t = (features[c] for c in rfm_columns(name))
        constants = (ibis.literal(v, "float64") for v in (p.r, p.alpha, p.a, p.b, fitted.horizon_days))
        value = _bgnbd_expected(x.cast("float64"), tx.cast("float64"), big_t.cast("float64"), *constants)
        added[column_name(name, fitted.horizon_days)] = ibis.ifelse(x.isnull(), ibis.null("float64"), value)
    return features.mutate(**added)
