"""What ``tune`` is told (:class:`TuneConfig`) and what it answers (:class:`Proposal`).

The method is described in :mod:`propensity.pipelines.tune.propose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from propensity.pipelines.rules.config import RuleSet

__all__ = ["Proposal", "TuneConfig"]


@dataclass(frozen=True)
class TuneConfig:
    """How rules are proposed (see the module docstring).

    Attributes
    ----------
    half_lives : tuple
        Half-lives (days) tried for re-shaped and new rules; ``None`` is no decay.
    new_expiries : tuple of float
        Windows (days) of new undecayed rules (a plain count of recent events).
    reshape_expiries : tuple
        Expiry windows (days; ``None``: never expires) tried for the hand rules besides their own,
        each with every half-life (empty: the hand expiry only).
    cap_quantiles : tuple of float
        Caps tried, as quantiles of a shape's positive per-unit values (besides no cap).
    reshape : bool
        Try other half-lives and caps for the hand rules.
    reshape_margin : float
        R^2 a new shape must gain over the hand rule's own shape to replace it.
    new_rules : bool
        Propose rules for uncovered event types and attributes.
    min_share : float
        Share of the model's mean |SHAP| below which a group carries no signal.
    min_r2 : float
        R^2 of its group a new rule must reach.
    max_fit_bins : int
        Bins of the tree that turns an attribute into criteria.
    min_bin_share : float
        Smallest share of rows in one attribute bin.
    quantiles : tuple of float or None
        Quantile levels where the proposed total is matched to the hand total (None: the
        hand file's band edges and thresholds).
    target : {"margin", "groups"}
        What the points are fitted to: the whole SHAP sum (the margin) in one joint fit, or
        each group's own SHAP values separately (see the module docstring).
    zero_no_signal : bool
        Give 0 points to rules flagged ``no signal`` (they stay in the file). Off by default:
        in the joint fit such a rule can still carry signal of a correlated group.
    keep_share : float
        A hand rule (or criterion) whose group carries at least this share of the mean |SHAP|
        is never cut to ~0 (below ``keep_fraction`` of its current points) nor flipped against
        the sign the model credits its own group with: it gets its own group's fit instead,
        else keeps its points, and the joint fit is redone around it.
    keep_fraction : float
        Proposed points below this fraction of the current points count as "cut to ~0".
    second_shapes : bool
        Add a second rule on an activity's event (another half-life or cap) where it raises the
        R^2 of the activity's group by at least ``second_margin`` (see ``propose._second_shapes``).
    second_margin : float
        R^2 the second shape must add.
    second_max_corr : float
        Largest correlation of the second shape's column with the rule's own.
    n_boot : int
        Paired bootstrap resamples of the test rows for the gain's interval (offer gate).
    alpha : float
        The interval is the central ``1 - alpha`` percentile interval; its lower end must be above 0.
    seed : int
        Seed of the bootstrap resamples.
    """

    half_lives: tuple[float | None, ...] = (None, 7.0, 14.0, 30.0, 60.0)
    new_expiries: tuple[float, ...] = (30.0, 90.0)
    reshape_expiries: tuple[float | None, ...] = ()
    cap_quantiles: tuple[float, ...] = (0.5, 0.75, 0.9, 0.975)
    reshape: bool = True
    reshape_margin: float = 0.02
    new_rules: bool = True
    min_share: float = 0.01
    min_r2: float = 0.05
    max_fit_bins: int = 3
    min_bin_share: float = 0.02
    quantiles: tuple[float, ...] | None = None
    target: str = "margin"
    zero_no_signal: bool = False
    keep_share: float = 0.01
    keep_fraction: float = 0.2
    second_shapes: bool = True
    second_margin: float = 0.05
    second_max_corr: float = 0.95
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_share < 1 or not 0 <= self.min_r2 < 1:
            raise ValueError("min_share and min_r2 must lie in [0, 1)")
        if self.max_fit_bins < 2:
            raise ValueError("max_fit_bins must be at least 2")
        if self.target not in ("groups", "margin"):
            raise ValueError(f"target must be 'groups' or 'margin', not {self.target!r}")
        if any(not 0 < q < 1 for q in self.cap_quantiles):
            raise ValueError("cap_quantiles must lie strictly between 0 and 1")
        if not 0 <= self.keep_share < 1 or not 0 <= self.keep_fraction <= 1:
            raise ValueError("keep_share must lie in [0, 1) and keep_fraction in [0, 1]")
        if self.n_boot < 1 or not 0 < self.alpha < 1:
            raise ValueError("n_boot must be at least 1 and alpha in (0, 1)")


@dataclass(frozen=True)
class Proposal:
    """Proposed rules and why.

    Attributes
    ----------
    rules : RuleSet
        The proposed file (``{name}_proposed``): the hand rules with new points (and shapes),
        then new activities and criteria.
    changes : pandas.DataFrame
        One row per rule: ``rule, kind, status`` (kept / changed / new / no signal),
        ``group, share`` (of mean |SHAP|), ``r2``, ``current_points, proposed_points``,
        ``current_shape, proposed_shape``, ``logodds_per_unit``, ``note``.
    out_of_reach : pandas.DataFrame
        Groups no rule can read (``group, kind, share``).
    k_points_per_logodds : float
    """

    rules: RuleSet
    changes: pd.DataFrame
    out_of_reach: pd.DataFrame
    k_points_per_logodds: float
    shapes: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # rule -> (candidate column, unit cap)
