"""Compare the rule model, the learned model and the learned points on the same held-out rows.

Public API::

    comparison = compare_models(ws, train_config, compare_config)     # the test cut-off
    backtest = run_backtest(ws, train_config, compare_config)          # walk-forward, optional
    comparison.backtest, comparison.backtest_notes = backtest.table, backtest.notes
    paths = write_report(comparison, ws.layout.reports)              # compare.json + compare.html

:func:`compare_scores` is the pure middle (a scored frame in, a :class:`Comparison` out).
"""

from propensity.pipelines.compare.backtest import (
    Backtest,
    rescale_raw_points,
    run_backtest,
)
from propensity.pipelines.compare.config import (
    CompareConfig,
    CompareConfigError,
    load_compare_config,
    parse_k_list,
)
from propensity.pipelines.compare.core import DEFAULT_MODELS, Comparison, compare_scores
from propensity.pipelines.compare.evaluation import ModelSource, compare_models
from propensity.pipelines.compare.report import render_html, write_json, write_report

__all__ = [
    "DEFAULT_MODELS",
    "Backtest",
    "CompareConfig",
    "CompareConfigError",
    "Comparison",
    "ModelSource",
    "compare_models",
    "compare_scores",
    "load_compare_config",
    "parse_k_list",
    "render_html",
    "rescale_raw_points",
    "run_backtest",
    "write_json",
    "write_report",
]
