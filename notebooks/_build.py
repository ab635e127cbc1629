"""Writes the walkthrough notebooks from the cell sources below (run: python notebooks/_build.py).

Keeping the sources here, not hand-edited JSON, makes reviews readable; the committed .ipynb files
are the output (unexecuted) and the test suite executes them.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd

from features.store import Workspace

pd.set_option("display.width", 140)
pd.set_option("display.max_columns", 12)
# A throwaway workspace: the DuckDB file, the MLflow store and every output go here.
ws = Workspace(Path(tempfile.mkdtemp(prefix="propensity-nb-")))
REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
ws"""

QUICKSTART = [
    new_markdown_cell(
        "# 01 · Quick start: raw events → features → rule scores → a learned model\n\n"
        "The same steps as `make demo`, from Python, on a small synthetic SaaS world (3,000 contacts, "
        "180 days). Every step is one call into the `features` and `pipelines` packages; the notebook "
        "has no logic of its own."
    ),
    new_code_cell(SETUP),
    new_markdown_cell("## 1. A synthetic world with a known truth\n\n"
                      "`generate_world` draws contacts, ~10 event types and conversions from a hidden hazard."),
    new_code_cell(
        "from pipelines.synthetic import WorldConfig, generate_world, write_world\n\n"
        "world = generate_world(WorldConfig(contacts=3_000, days=180, seed=1))\n"
        "files = write_world(world, ws.path / 'data', fmt='parquet')\n"
        "world.events.head()"
    ),
    new_markdown_cell("## 2. Ingest\n\nValidated, deduplicated, rejects kept with their reason."),
    new_code_cell(
        "from features.store import ingest_file\n\n"
        "reports = {kind: ingest_file(ws, kind, files[kind]) for kind in ('contacts', 'events', 'outcomes')}\n"
        "pd.DataFrame({k: {'read': r.read, 'loaded': r.loaded, 'rejected': r.rejected} for k, r in reports.items()})"
    ),
    new_markdown_cell("## 3. Features as of a cut-off\n\nOnly events strictly before `as_of` are used."),
    new_code_cell(
        "from features.config import FeatureConfig\n"
        "from pipelines.jobs import SpineChoice, run_features\n\n"
        "as_of = datetime(2025, 6, 1)\n"
        "run = run_features(ws, SpineChoice(as_of=as_of), FeatureConfig())\n"
        "features = pd.read_parquet(run.path)\n"
        "features.filter(regex='contact_id|demo_request|pricing|all__').head()"
    ),
    new_markdown_cell("## 4. Rule scores (the hand-weighted model the team already has)\n\n"
                      "`points__*` columns add up to `points`, so every score reads point by point."),
    new_code_cell(
        "from pipelines.rules.config import load_rules\n"
        "from pipelines.jobs import run_rule_scores\n\n"
        "rules = load_rules(REPO / 'configs/rules/saas.yaml')\n"
        "scores = run_rule_scores(ws, SpineChoice(as_of=as_of), rules)\n"
        "scores.sort_values('rule_score', ascending=False).head()"
    ),
    new_code_cell("scores['band'].value_counts().sort_index()"),
    new_markdown_cell("## 5. Learn from conversions\n\n"
                      "A time-split training set over weekly cut-offs, LightGBM with a tiny Optuna budget, "
                      "calibration onto the rules' 0–5 scale and a learned points model; logged to MLflow in "
                      "the workspace."),
    new_code_cell(
        "from pipelines.training.config import load_train_config\n"
        "from pipelines.training.train import train\n\n"
        "config = load_train_config(REPO / 'configs/train_demo.yaml')\n"
        "# no Optuna search here, to stay quick: `propensity train` searches with a time budget\nconfig = config.model_copy(update={'model': config.model.model_copy(update={'tune': False})})\n"
        "result = train(ws, config)\n"
        "result.metrics.query(\"split == 'test'\")"
    ),
    new_code_cell("print(result.learned_rules_path.read_text()[:800])"),
]


def main() -> None:
    notebooks = {"01-quickstart.ipynb": QUICKSTART}
    for name, cells in notebooks.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
