"""The rule model's configuration: activities, fit criteria, the 0-5 scale, bands, roll-up.

One YAML file (``configs/rules/*.yaml``) is validated once into a frozen :class:`RuleSet`;
unknown keys are errors, so a typo in a rule never silently scores zero.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from propensity.pipelines.config_files import load_yaml_config

__all__ = [
    "Activity",
    "Band",
    "FitCriterion",
    "Matrix",
    "RuleSet",
    "Rollup",
    "RulesConfigError",
    "load_rules",
    "dump_rules",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PropertyValue = str | int | float | bool


class RulesConfigError(ValueError):
    """A rules file that cannot be read or does not validate; the message names the file."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be snake_case (a-z, 0-9, _), starting with a letter")
    return value


class Activity(_Frozen):
    """Points for one kind of event, optionally filtered on its properties.

    raw = sum over events with ``ts < as_of`` and ``age < expires_after_days`` of
    ``points * weight * 0.5 ** (age / half_life_days)`` (``* value`` when ``per_value``);
    with a ``cap``: ``cap * (1 - exp(-raw / cap))`` for raw >= 0.
    """

    name: str
    event: str
    where: dict[str, PropertyValue | list[PropertyValue]] | None = None
    points: float
    weight: float = 1.0
    half_life_days: float | None = Field(default=None, gt=0)
    expires_after_days: float | None = Field(default=None, gt=0)
    cap: float | None = Field(default=None, gt=0)
    per_value: bool = False
    description: str | None = None
    # which axis of the fit x engagement matrix the activity's points count on: events are
    # engagement, unless they say something about who the contact is (e.g. an enrichment event)
    axis: Literal["engagement", "fit"] = "engagement"

    _name = field_validator("name")(_check_name)


class FitCriterion(_Frozen):
    """Points for a contact attribute: ``equals`` a value, ``in`` a list, or in ``[min, max)``."""

    name: str
    attribute: str
    points: float
    equals: PropertyValue | None = None
    in_: list[PropertyValue] | None = Field(default=None, alias="in")
    min: float | None = None
    max: float | None = None
    description: str | None = None

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _one_condition(self) -> FitCriterion:
        given = [self.equals is not None, self.in_ is not None, self.min is not None or self.max is not None]
        if sum(given) != 1:
            raise ValueError(
                f"fit criterion {self.name!r}: give exactly one of 'equals', 'in', or 'min'/'max'"
            )
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"fit criterion {self.name!r}: min must be below max")
        return self


class Band(_Frozen):
    """A named score range starting at ``min_score`` (inclusive) up to the next band."""

    name: str
    min_score: float = Field(ge=0, le=5)

    _name = field_validator("name")(_check_name)


class Rollup(_Frozen):
    """How contact scores become an account score.

    ``method`` picks the account's ``rule_score``: the best contact (``max``) or the mean of the
    ``k`` best (``top_k_mean``). Every account row also counts its contacts at or above
    ``count_band`` (default: the highest band).
    """

    method: Literal["max", "top_k_mean"] = "max"
    k: int = Field(default=3, ge=1)
    count_band: str | None = None


class Matrix(_Frozen):
    """The fit x engagement matrix (A1 best, D4 least): where each grade starts, in raw points.

    ``fit``: the fit points (fit criteria, and activities with ``axis: fit``) at which a contact
    is C, B and A (below the first: D). ``engagement``: the engagement points (every other
    activity) at which it is 3, 2 and 1 (below the first: 4). An edge is inclusive.
    """

    fit: tuple[float, float, float]
    engagement: tuple[float, float, float]

    @field_validator("fit", "engagement")
    @classmethod
    def _increasing(cls, edges: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"edges must increase strictly (where C, B, A or 3, 2, 1 start, in that order): {list(edges)}")
        return edges


class RuleSet(_Frozen):
    """A hand-weighted scoring model."""

    name: str
    description: str | None = None
    activities: tuple[Activity, ...]
    fit: tuple[FitCriterion, ...] = ()
    scale: dict[float, float]
    bands: tuple[Band, ...]
    thresholds: dict[str, float] = Field(default_factory=dict)
    rollup: Rollup = Rollup()
    matrix: Matrix | None = None

    @field_validator("scale")
    @classmethod
    def _monotone_scale(cls, scale: dict[float, float]) -> dict[float, float]:
        if len(scale) < 2:
            raise ValueError("scale needs at least two anchor points, e.g. {0: 0, 300: 5}")
        items = sorted(scale.items())
        scores = [s for _, s in items]
        if any(b < a for a, b in zip(scores, scores[1:])):
            raise ValueError("scale must be monotone: a higher raw total never maps to a lower score")
        if scores[0] < 0 or scores[-1] > 5:
            raise ValueError("scale scores must lie in [0, 5]")
        return dict(items)

    @model_validator(mode="after")
    def _consistent(self) -> RuleSet:
        names = [a.name for a in self.activities] + [f.name for f in self.fit]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"rule names must be unique across activities and fit: {duplicated}")
        mins = [b.min_score for b in self.bands]
        if not mins or mins[0] != 0 or any(b <= a for a, b in zip(mins, mins[1:])):
            raise ValueError("bands must start at min_score 0 and increase strictly")
        band_names = [b.name for b in self.bands]
        if self.rollup.count_band is not None and self.rollup.count_band not in band_names:
            raise ValueError(f"rollup.count_band {self.rollup.count_band!r} is not one of {band_names}")
        return self

    @property
    def count_band(self) -> Band:
        """The band whose lower edge account roll-ups count contacts at or above."""
        name = self.rollup.count_band or self.bands[-1].name
        return next(b for b in self.bands if b.name == name)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules YAML file.

    Raises
    ------
    RulesConfigError
        When the file is missing, is not YAML, or does not validate; the message names the file
        and every offending key.
    """
    return load_yaml_config(path, RuleSet, RulesConfigError, not_found='rules file not found',
                            invalid='invalid rules')


def dump_rules(rules: RuleSet) -> str:
    """Serialise a rule set back to YAML that :func:`load_rules` reads unchanged."""
    data = rules.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=False)
    data["scale"] = {_plain(k): _plain(v) for k, v in rules.scale.items()}
    for activity in data["activities"]:  # the default axis is left out, as files written before it had none
        if activity.get("axis") == "engagement":
            del activity["axis"]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _plain(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)
