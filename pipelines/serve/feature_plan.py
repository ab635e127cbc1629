"""The feature columns a served model was trained on, and the array formulas shared by the mirror.

:class:`FeaturePlan` names every column :func:`propensity.features.build.build_features` makes for a
model's feature config, in the build's order; the helpers below (purchase summaries, day ages)
are the pieces of the build's definitions that :mod:`propensity.pipelines.serve.mirror` computes
with numpy. Times are integer microseconds (UTC), as in :mod:`propensity.pipelines.serve.state`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from propensity.features.build import KEY_COLUMNS, safe_name
from propensity.features.config import FeatureConfig

__all__ = [
    "NO_AGE",
    "US_PER_DAY",
    "FeaturePlan",
    "account_columns",
    "days_or_nan",
    "half_life_text",
    "purchase_summary",
    "trait_number",
]

US_PER_DAY = 86_400_000_000
NO_AGE = np.iinfo(np.int64).max


def half_life_text(half_life: float) -> str:
    return f"{half_life:g}"  # propensity.features.build names decayed columns the same way


def trait_number(value: Any) -> float:
    """A trait as a float (NaN when missing or not a number), for a numeric attribute feature."""
    if value is None or isinstance(value, bool | int | float):
        return math.nan if value is None else float(value)
    try:
        return float(str(value))
    except ValueError:
        return math.nan



@dataclass(frozen=True)
class FeaturePlan:
    """The feature columns a model was trained on and how they are named (as the batch build)."""

    config: FeatureConfig
    event_types: tuple[str, ...]
    names: dict[str, str]  # event type -> its safe name, in the build's (given) order
    columns: tuple[str, ...]  # every generated feature column, in the build's order
    attributes: tuple[str, ...]  # contact attributes the model uses (traits of the same name)
    categorical: frozenset[str]
    rule_columns: tuple[str, ...] = ()  # the hand rules' columns the model reads (rule__*), from the rule state

    @classmethod
    def from_scorer(cls, scorer: Any) -> FeaturePlan:
        """The plan of a :class:`propensity.pipelines.training.scorer.LearnedScorer`."""
        if getattr(scorer, "expected_purchases", None):
            raise ValueError("the model reads BG/NBD expected purchases (`expected_purchases: true` in its training "
                             "config), which the service does not compute yet; score it in batch, or retrain it "
                             "with `expected_purchases: false` to serve it live")
        config = FeatureConfig.of_model(scorer.feature_config)
        if config.value_stats_types or config.value_thresholds:
            raise ValueError("the model reads value summaries per event type (`value_stats_types` / "
                             "`value_thresholds` in its feature config: propensity.features.value_stats), which the "
                             "service does not compute yet; score it in batch, or retrain it without them to serve it live")
        if not config.is_resolved:
            unresolved = [k for k in ("windows_days", "half_lives_days", "monetary_types") if getattr(config, k) == "auto"]
            raise ValueError(f"the model's feature config leaves {unresolved} on `auto`: the service cannot know which "
                             "columns it was trained on; retrain it (training records the resolved choices)")
        if config.purchase_history_features and config.monetary_types:
            raise ValueError("the model reads the purchase-history features (`purchase_history_features: true` in its "
                             "feature config: events since the last purchase, features/purchase_history.py), which "
                             "the service does not compute yet; score it in batch, or retrain it with "
                             "`purchase_history_features: false` to serve it live")
        event_types = tuple(scorer.event_types)
        names: dict[str, str] = {}
        for event_type in event_types:
            name = safe_name(event_type)
            if name in names.values():
                raise ValueError(f"event types of the model clash on the feature name {name!r}")
            names[event_type] = name
        columns = _column_names(config, names)
        # the rules' columns (rule__*, `rule_inputs: true`): the service's rule state gives them
        # (propensity.pipelines.serve.rule_inputs); without the rules they were built from, they are unknown
        rule_columns = tuple(c for c in scorer.feature_names if c.startswith("rule__"))
        if rule_columns and getattr(scorer, "rule_inputs", None) is None:
            raise ValueError(f"the model reads rule columns {list(rule_columns)[:3]} but carries no rules they were "
                             "built from: retrain it")
        generated = set(columns) | set(KEY_COLUMNS) | set(rule_columns)
        attributes = tuple(c for c in scorer.feature_names if c not in generated)
        prefixes = {*names.values(), "all", "value", "account", "rule"}
        unknown = [c for c in attributes if c.split("__")[0] in prefixes and "__" in c]
        if unknown:  # read as traits they would be missing on every row: NaN, silently
            raise ValueError(f"the model uses feature families this service does not compute: {unknown[:5]}; "
                             "serve it with the version that trained it, or retrain")
        if attributes and not config.include_attributes:
            raise ValueError(f"the model uses features the service cannot compute: {list(attributes)[:5]}")
        return cls(config, event_types, names, tuple(columns), attributes, frozenset(scorer.categories),
                   rule_columns)

    @property
    def uses_accounts(self) -> bool:
        return self.config.account_features


def _column_names(config: FeatureConfig, names: Mapping[str, str]) -> list[str]:
    out = []
    for name in names.values():
        out += [f"{name}__count_{n}d" for n in config.windows_days]
        out.append(f"{name}__days_since_last")
        out += [f"{name}__decayed_{half_life_text(h)}d" for h in config.half_lives_days]
        out += [f"{name}__active_days_{n}d" for n in config.resolved_active_days_windows]
        out += _lifetime_columns(config, name)
        if name in {names[t] for t in config.monetary_types if t in names}:
            out += [f"{name}__{part}" for part in _PURCHASE_PARTS]
    out += [f"all__count_{n}d" for n in config.windows_days]
    out.append("all__days_since_last")
    out += [f"all__distinct_types_{n}d" for n in config.windows_days]
    out += [f"value__sum_{n}d" for n in config.windows_days]
    out += [f"value__max_{n}d" for n in config.windows_days]
    out += ["tenure_days", f"all__momentum_{config.momentum_days}d"]
    if config.account_features:
        out += [f"account__active_contacts_{n}d" for n in config.windows_days]
        out += [f"account__count_{n}d" for n in config.windows_days]
        out.append("account__contacts")
    return out


_PURCHASE_PARTS = ("rfm_frequency", "rfm_recency_days", "rfm_tenure_days", "rfm_monetary", "value_total")


def _lifetime_columns(config: FeatureConfig, name: str) -> list[str]:
    out = []
    if config.lifetime_features:
        out += [f"{name}__count_total", f"{name}__days_since_first", f"{name}__mean_gap_days"]
    if config.trend_windows is not None:
        short, long = config.trend_windows
        out.append(f"{name}__trend_{short}d_{long}d")
    return out



def purchase_summary(name: str, rows: np.ndarray, day: np.ndarray, value: np.ndarray, R: int, T: int
                      ) -> dict[str, np.ndarray]:
    """The build's repeat-purchase summaries of one type: per row and UTC day first, then per row."""
    value = np.where(np.isnan(value), 0.0, value)  # a NULL value adds nothing, as the build's fill
    width = int(day.max()) + 1 if len(day) else 1
    keys, where = np.unique(rows * width + day, return_inverse=True)
    day_value = np.bincount(where, weights=value, minlength=len(keys))
    key_row, key_day = keys // width, keys % width
    days = np.bincount(key_row, minlength=R)
    first = np.full(R, -1, dtype="int64")
    np.maximum.at(first, key_row, key_day)
    last = np.full(R, np.iinfo(np.int64).max, dtype="int64")
    np.minimum.at(last, key_row, key_day)
    is_first = key_day == first[key_row]
    first_value = np.bincount(key_row[is_first], weights=day_value[is_first], minlength=R)
    total = np.bincount(key_row, weights=day_value, minlength=R)
    bought = days > 0
    midnight = 1 if T % US_PER_DAY == 0 else 0  # the observation ends the day before a midnight
    frequency = np.where(bought, days - 1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(days > 1, (total - first_value) / (days - 1), 0.0)
    return {
        f"{name}__rfm_frequency": frequency,
        f"{name}__rfm_recency_days": np.where(bought, first - last, np.nan),
        f"{name}__rfm_tenure_days": np.where(bought, first - midnight, np.nan),
        f"{name}__rfm_monetary": np.where(bought, monetary, np.nan),
        f"{name}__value_total": total,
    }


def account_columns(cfg: FeatureConfig) -> list[str]:
    return ([f"account__active_contacts_{n}d" for n in cfg.windows_days]
            + [f"account__count_{n}d" for n in cfg.windows_days] + ["account__contacts"])


def days_or_nan(age_us: np.ndarray) -> np.ndarray:
    return np.where(age_us == NO_AGE, np.nan, age_us.astype("float64") / US_PER_DAY)

