"""Write a monitor run: ``monitor.json`` (every number, the verdict first) and one self-contained
``monitor.html`` (inline style, figures as data: URIs, nothing loaded from anywhere)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from propensity.pipelines.monitor.plots import render_plots
from propensity.pipelines.monitor.verdict import monitor_verdict

__all__ = ["render_html", "to_json", "write_report"]


def to_json(result) -> dict:
    data = result.to_dict()
    return {"verdict": monitor_verdict(data), **data}


def render_html(result) -> str:
    from jinja2 import Environment, StrictUndefined

    data = to_json(result)
    text = (files("propensity.pipelines.monitor") / "templates" / "monitor.html.j2").read_text(encoding="utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    series = {"meta": result.series["meta"], "reference": result.series["reference"], "cutoffs": result.cutoffs,
              "open": result.open_cutoff}
    return env.from_string(text).render(d=data, plots=render_plots(series, result.config) if result.cutoffs else {})


def write_report(result, out_dir: str | Path) -> dict[str, Path]:
    """``monitor.json`` and ``monitor.html`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "monitor.json"
    json_path.write_text(json.dumps(to_json(result), indent=1, allow_nan=False), encoding="utf-8")
    html = out_dir / "monitor.html"
    html.write_text(render_html(result), encoding="utf-8")
    return {"json": json_path, "html": html}
