"""The comparison settings (``configs/compare.yaml``), validated once into frozen models.

Kept apart from the training config on purpose: the same trained model can be compared with
another sales capacity (top k%) or over other past cut-offs without touching how it was trained.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from propensity.pipelines.config_files import load_yaml_config

__all__ = ["BacktestSection", "CompareConfig", "CompareConfigError", "load_compare_config", "parse_k_list"]


class CompareConfigError(ValueError):
    """A compare config that does not validate; the message names the file and the keys."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BacktestSection(_Section):
    """Walk-forward backtest: refit at each past cut-off on what was known then, score that cut-off.

    ``cutoffs`` picks cut-offs of the training grid by date; otherwise the last ``last_n`` grid
    cut-offs that have enough earlier history for a train and a valid split are used.
    """

    cutoffs: tuple[datetime, ...] | None = None
    last_n: int = Field(default=3, ge=1)
    # False: LightGBM's fixed default parameters at every cut-off. A search per cut-off costs
    # minutes; reusing the champion's tuned parameters would leak later data into early cut-offs.
    tune: bool = False
    n_trials: int = Field(default=5, ge=1)
    n_boot: int = Field(default=200, ge=10)


class CompareConfig(_Section):
    """How rule, learned and learned-points models are compared on held-out cut-offs."""

    top_k_percent: tuple[float, ...] = (5.0, 10.0, 20.0)
    n_boot: int = Field(default=1000, ge=10)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    seed: int = 0
    ece_bins: int = Field(default=10, ge=2)
    calibration_bins: int = Field(default=10, ge=2)
    examples_per_cell: int = Field(default=3, ge=0, le=50)
    backtest: BacktestSection = BacktestSection()

    @field_validator("top_k_percent")
    @classmethod
    def _valid_k(cls, ks: tuple[float, ...]) -> tuple[float, ...]:
        if not ks:
            raise ValueError("give at least one top-k percentage, e.g. [5, 10, 20]")
        bad = [k for k in ks if not 0 < k <= 100]
        if bad:
            raise ValueError(f"top-k percentages must lie in (0, 100], got {bad}")
        return tuple(sorted(set(ks)))


def parse_k_list(text: str) -> tuple[float, ...]:
    """``"5,10,20"`` -> ``(5.0, 10.0, 20.0)``; a clear error for anything else."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--k {text!r}: expected comma-separated percentages, e.g. 5,10,20") from None
    try:
        return CompareConfig(top_k_percent=values).top_k_percent
    except ValidationError as exc:
        raise ValueError(f"--k {text!r}: {exc.errors()[0]['msg']}") from None


def load_compare_config(path: str | Path | None) -> CompareConfig:
    """Read and validate a compare YAML (``None``: the defaults)."""
    if path is None:
        return CompareConfig()
    return load_yaml_config(path, CompareConfig, CompareConfigError, not_found='compare config not found',
                            invalid='invalid compare config', empty_ok=True)
