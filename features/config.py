"""Feature configuration: which windows, half-lives and event types the build uses.

The configuration is a frozen pydantic model with ``extra="forbid"`` so that a typo in a
YAML key fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["AttributeSelection", "FeatureConfig", "FeatureConfigError", "load_feature_config"]


class FeatureConfigError(ValueError):
    """A feature configuration file could not be read or is invalid."""


def _unique(values: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must not contain duplicates, got {list(values)}")
    return values


class AttributeSelection(BaseModel):
    """Which contacts columns become features (the guard: :mod:`propensity.features.attributes`).

    Parameters
    ----------
    include : tuple of str
        Columns used as features even when they look like identifiers.
    exclude : tuple of str
        Columns never used as features.
    columns : tuple of str, "auto" or "all"
        ``"auto"``: every other column unless it looks like an identifier (its name, or unique
        per contact, or free text); what was dropped is said. ``"all"``: every column, no guard
        (what models trained before the guard used). A list: exactly these (training records
        the list it chose here, so scoring reads the trained columns).
    values : "as_of" or "latest"
        ``"as_of"``: each row's attribute values as they were at its ``as_of``, from the contacts'
        attribute history (``features/history.py``) when the build is given one (the workspace's
        DuckDB); otherwise, and with ``"latest"``, the contacts' current values. Commands say which.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    columns: tuple[str, ...] | Literal["auto", "all"] = "auto"
    values: Literal["as_of", "latest"] = "as_of"

    @model_validator(mode="after")
    def _consistent(self) -> AttributeSelection:
        _unique(self.include, "attributes.include")
        _unique(self.exclude, "attributes.exclude")
        both = sorted(set(self.include) & set(self.exclude))
        if both:
            raise ValueError(f"attributes.include and attributes.exclude both name {both}")
        if isinstance(self.columns, tuple):
            _unique(self.columns, "attributes.columns")
            clash = sorted(set(self.columns) & set(self.exclude))
            if clash:
                raise ValueError(f"attributes.columns lists excluded columns {clash}")
        return self


# Families added after models were first recorded, as "off" (see FeatureConfig.of_model); a model
# recorded before the attribute guard and history read every contacts column at its latest value.
_BEFORE_FAMILIES: dict[str, Any] = {"lifetime_features": False, "trend_features": False, "monetary_types": (),
                                    "purchase_history_features": False,
                                    "attributes": {"columns": "all", "values": "latest"}}


class FeatureConfig(BaseModel):
    """Settings of the point-in-time feature build.

    Parameters
    ----------
    windows_days : tuple of int or "auto"
        Look-back windows in days for counts, sums, maxima and distinct types. A window of
        N days holds events with ``as_of - N days <= ts < as_of``. ``"auto"`` proposes them
        from the horizon and the data's cadence (:mod:`propensity.features.auto`); the chosen
        set is what a trained model records.
    half_lives_days : tuple of float or "auto"
        Half-lives in days of the exponentially decayed sums (all history is used); a short
        one (a few days) beside the long ones catches signals that fade within the week.
        ``"auto"`` as for ``windows_days``.
    value_weighted_types : tuple of str
        Event types whose decayed sum is weighted by the event's ``value``.
    event_types : tuple of str or None
        Event types that get per-type features. None discovers them from the events table
        (the ``max_event_types`` most frequent ones).
    max_event_types : int
        How many of the most frequent types are kept when discovering.
    active_days_windows : tuple of int or None
        Windows of the ``{type}__active_days_{N}d`` features; None means ``windows_days``.
    momentum_days : int
        N of ``all__momentum_{N}d``: the last N days against the N days before them.
    lifetime_features : bool
        Whether to add, per type, ``count_total`` (all history), ``days_since_first`` and
        ``mean_gap_days`` (first to last event over the gaps between them).
    trend_features : bool
        Whether to add, per type, ``trend_{S}d_{L}d``: the rate in the shortest window over
        the rate in the longest (NULL without an event in the longest).
    monetary_types : tuple of str or "auto"
        Purchase-like types that get the repeat-purchase summaries (``rfm_frequency``,
        ``rfm_recency_days``, ``rfm_tenure_days``, ``rfm_monetary``) and ``value_total``.
        ``"auto"``: the feature types whose values are not all the same (one small query).
    purchase_history_features : bool
        Whether to add, per purchase-like type, what happened since the last purchase (events of
        each other type since then, and per day) and the contact's own rhythm (recency over its
        mean gap, the last gap and its trend, the last purchase's value):
        :mod:`propensity.features.purchase_history`. Off by default: the service does not
        compute them yet (it refuses such a model, naming the family).
    value_stats_types : tuple of str
        Event types whose values are summarised over all history before ``as_of``
        (:mod:`propensity.features.value_stats`): ``value_mean``, ``value_min``, ``value_max``
        and ``value_last`` (the latest instant's value; the largest on a tie). For types whose
        value is a measurement (a score, a delay, an amount) rather than a weight. Empty: off.
    value_thresholds : mapping of str to tuple of float
        Per event type, thresholds ``T`` of ``count_value_below_{T}``: its events (all history)
        with ``value < T``, e.g. marks below a pass mark. Types need not be in ``value_stats_types``.
    account_features : bool
        Whether to add the ``account__*`` features.
    include_attributes : bool
        Whether to join the contacts' attribute columns at all.
    attributes : AttributeSelection
        Which of them: identifier-like columns are left out unless included (and said).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows_days: tuple[int, ...] | Literal["auto"] = (7, 30, 90)
    half_lives_days: tuple[float, ...] | Literal["auto"] = (2.0, 7.0, 30.0)
    value_weighted_types: tuple[str, ...] = ()
    event_types: tuple[str, ...] | None = None
    max_event_types: int = Field(default=50, ge=1)
    active_days_windows: tuple[int, ...] | None = None
    momentum_days: int = Field(default=30, ge=1)
    lifetime_features: bool = True
    trend_features: bool = True
    monetary_types: tuple[str, ...] | Literal["auto"] = "auto"
    purchase_history_features: bool = False
    value_stats_types: tuple[str, ...] = ()
    value_thresholds: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    account_features: bool = True
    include_attributes: bool = True
    attributes: AttributeSelection = AttributeSelection()

    @field_validator("windows_days", "active_days_windows")
    @classmethod
    def _positive_unique_windows(cls, value: tuple[int, ...] | str | None) -> tuple[int, ...] | str | None:
        if value is None or value == "auto":
            return value
        if not value:
            raise ValueError("give at least one window (or `auto`)")
        if any(n <= 0 for n in value):
            raise ValueError(f"windows must be positive numbers of days, got {list(value)}")
        return _unique(value, "windows")

    @field_validator("half_lives_days")
    @classmethod
    def _positive_unique_half_lives(cls, value: tuple[float, ...] | str) -> tuple[float, ...] | str:
        if value == "auto":
            return value
        if any(not h > 0 for h in value):  # `not >` also rejects NaN
            raise ValueError(f"half-lives must be positive, got {list(value)}")
        return _unique(value, "half_lives_days")

    @field_validator("value_thresholds")
    @classmethod
    def _finite_unique_thresholds(cls, value: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
        for event_type, thresholds in value.items():
            if not event_type.strip():
                raise ValueError("event types must be non-empty strings")
            if not thresholds:
                raise ValueError(f"value_thresholds[{event_type!r}]: give at least one threshold")
            if any(not math.isfinite(t) for t in thresholds):
                raise ValueError(f"value_thresholds[{event_type!r}]: thresholds must be finite, got {list(thresholds)}")
            _unique(thresholds, f"value_thresholds[{event_type!r}]")
        return value

    @field_validator("event_types", "value_weighted_types", "monetary_types", "value_stats_types")
    @classmethod
    def _non_empty_unique_types(cls, value: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        if value is None or value == "auto":
            return value
        if any(not t.strip() for t in value):
            raise ValueError("event types must be non-empty strings")
        return _unique(value, "event types")

    @model_validator(mode="after")
    def _weighted_types_are_listed(self) -> FeatureConfig:
        # Only checkable when the types are given; a typo here would silently drop the weight.
        if self.event_types is not None:
            for key in ("value_weighted_types", "monetary_types", "value_stats_types", "value_thresholds"):
                listed = getattr(self, key)
                missing = [] if listed == "auto" else sorted(set(listed) - set(self.event_types))
                if missing:
                    raise ValueError(f"{key} not in event_types: {missing}")
        return self

    @classmethod
    def of_model(cls, recorded: dict[str, Any]) -> FeatureConfig:
        """A trained model's recorded config; keys it predates mean their families were off.

        A model trained before a family existed was trained without its columns: reading its
        config with today's defaults would build them (and leave ``monetary_types`` on
        ``auto``, which the service refuses).
        """
        return cls.model_validate({**_BEFORE_FAMILIES, **recorded})

    @property
    def is_resolved(self) -> bool:
        """True when nothing is ``"auto"`` any more (see :func:`propensity.features.auto.resolve_feature_config`)."""
        return "auto" not in (self.windows_days, self.half_lives_days, self.monetary_types)

    @property
    def trend_windows(self) -> tuple[int, int] | None:
        """(shortest, longest) window of the trend features; None when off or one window."""
        if not self.trend_features or len(self.windows_days) < 2:
            return None
        return min(self.windows_days), max(self.windows_days)

    @property
    def resolved_active_days_windows(self) -> tuple[int, ...]:
        """Windows of the active-days features (``windows_days`` when not set)."""
        if self.active_days_windows is None:
            return self.windows_days
        return self.active_days_windows


def load_feature_config(path: str | Path | None) -> FeatureConfig:
    """Read and validate a feature configuration YAML file.

    Parameters
    ----------
    path : str, Path or None
        The YAML file (a mapping of :class:`FeatureConfig` fields). None returns the defaults.

    Returns
    -------
    FeatureConfig

    Raises
    ------
    FeatureConfigError
        If the file cannot be read or parsed, or a value is invalid; the message names the file.
    """
    if path is None:
        return FeatureConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FeatureConfigError(f"{path}: cannot read feature config: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise FeatureConfigError(
            f"{path}: a feature config must be a mapping, got {type(raw).__name__}"
        )
    try:
        return FeatureConfig.model_validate(raw)
    except ValidationError as exc:
        raise FeatureConfigError(f"{path}: invalid feature config:\n{exc}") from exc
