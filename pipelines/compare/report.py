"""Write a comparison: ``compare.json`` (every number) and one self-contained ``compare.html``.

The HTML page embeds its figures as base64 PNG and its style inline; it loads nothing from
anywhere, so it can be mailed, attached to a ticket or opened offline.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

from propensity.pipelines.compare.backtest import gap_stability
from propensity.pipelines.compare.core import Comparison
from propensity.pipelines.compare.plots import render_plots
from propensity.pipelines.compare.verdict import plain_verdict

__all__ = ["render_html", "write_json", "write_report"]


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _pct(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}%"


def render_html(comparison: Comparison) -> str:
    """The report page as a string."""
    from jinja2 import Environment, StrictUndefined

    template_text = (files("propensity.pipelines.compare") / "templates" / "report.html.j2").read_text(encoding="utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _fmt
    env.filters["pct"] = _pct
    template = env.from_string(template_text)
    backtest = None
    if comparison.backtest is not None and not comparison.backtest.empty:
        frame = comparison.backtest.copy()
        frame["as_of"] = frame["as_of"].dt.strftime("%Y-%m-%d")
        backtest = {
            "stability": gap_stability(comparison.backtest, comparison.reference),
            "rows": frame.to_dict(orient="records"),
            "lift_columns": [c for c in frame.columns if c.startswith("lift_top")],
        }
    return template.render(
        c=comparison,
        verdict=plain_verdict(comparison),
        meta=comparison.meta,
        summary=comparison.summary.to_dict(orient="records"),
        gaps=comparison.gaps.to_dict(orient="records"),
        top_k=comparison.top_k.to_dict(orient="records"),
        bands=comparison.bands.to_dict(orient="records"),
        correlation=comparison.rank_correlation,
        backtest=backtest,
        plots=render_plots(comparison),
    )


def write_json(comparison: Comparison, path: str | Path) -> Path:
    """``compare.json``: the comparison as plain JSON (missing values as null), its plain-language
    verdict first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"verdict": plain_verdict(comparison), **comparison.to_dict()}
    path.write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    return path


def write_report(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write ``compare.json`` and ``compare.html`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / "compare.html"
    html.write_text(render_html(comparison), encoding="utf-8")
    return {"json": write_json(comparison, out_dir / "compare.json"), "html": html}
