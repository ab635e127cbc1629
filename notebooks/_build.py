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

from propensity.features.store import Workspace
from propensity.pipelines.shipped import shipped_config  # the configs installed with the package

pd.set_option("display.width", 140)
pd.set_option("display.max_columns", 12)
# A throwaway workspace: the DuckDB file, the MLflow store and every output go here.
ws = Workspace(Path(tempfile.mkdtemp(prefix="propensity-nb-")))
ws"""

QUICKSTART = [
    new_markdown_cell(
        "# 01 · Quick start through the Python API\n\n"
        "The whole walkthrough (raw events → features → rule scores → a learned model → rule vs learned → "
        "why a contact scored what it did) in a dozen calls on `propensity.Project`, the same layer every "
        "`propensity` command runs through. A small synthetic SaaS world: 3,000 contacts, 180 days."
    ),
    new_code_cell(
        "import tempfile\n\n"
        "import pandas as pd\n\n"
        "import propensity\n"
        "from propensity.pipelines.shipped import shipped_config  # the configs installed with the package\n"
        "from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world\n\n"
        "pd.set_option('display.width', 140)\n"
        "pd.set_option('display.max_columns', 12)\n"
        "# a throwaway workspace: the DuckDB file, the MLflow store and every output go here\n"
        "project = propensity.Project(tempfile.mkdtemp(prefix='propensity-nb-'))\n"
        "world = generate_world(WorldConfig(contacts=3_000, days=180, seed=1))\n"
        "files = write_world(world, project.path / 'data', fmt='parquet')\n"
        "world.events.head()"
    ),
    new_markdown_cell("## 1. Ingest, features, rule scores\n\n"
                      "Ingest validates and deduplicates (rejects are kept with their reason); features use only "
                      "events strictly before the cut-off; the rule scores' `points__*` columns add up to `points`."),
    new_code_cell(
        "reports = {kind: project.ingest(kind, files[kind]) for kind in ('contacts', 'events', 'outcomes')}\n"
        "run = project.features('2025-06-01')\n"
        "scores, rules = project.score('2025-06-01')  # no rules of its own yet: the shipped SaaS rules\n"
        "pd.DataFrame({k: {'loaded': r.loaded, 'rejected': r.rejected} for k, r in reports.items()})"
    ),
    new_code_cell("scores.sort_values('rule_score', ascending=False).head()"),
    new_markdown_cell("## 2. Learn from conversions\n\n"
                      "A time-split training set over weekly cut-offs, LightGBM, calibration onto the rules' 0–5 "
                      "scale and a learned points model, registered in the workspace's MLflow store with the "
                      "configs it was trained with."),
    new_code_cell(
        "config, _ = project.train_config(shipped_config('train_demo.yaml'))\n"
        "# no Optuna search, to stay quick; a small world has fewer than the 500 positives LightGBM waits for\n"
        "config = config.model_copy(update={'model': config.model.model_copy(update={'tune': False}),\n"
        "                                   'points_only_below': 100})\n"
        "result = project.train(config)\n"
        "print(result.registry.reason)\n"
        "result.metrics.query(\"split == 'test'\")"
    ),
    new_markdown_cell("## 3. Rule vs learned, and why\n\n"
                      "`compare` and `explain` take the model's own context: the test cut-off, rules and learned "
                      "points it was trained with."),
    new_code_cell(
        "comparison = project.compare(result.model_version)\n"
        "comparison.summary[['model', 'roc_auc', 'roc_auc_low', 'roc_auc_high', 'pr_auc', 'ece']]"
    ),
    new_code_cell(
        "contact = scores.sort_values('rule_score').iloc[-1]['contact_id']\n"
        "explained, model, rules_used = project.explain(contact, model=result.model_version)\n"
        "print(f'{contact}: learned {explained.learned_score:.2f}, rules {explained.rule_score:.2f} '\n"
        "      f'({rules_used.describe(\"rules\")})')\n"
        "explained.learned.head(8)"
    ),
]

# Shared by 02 and 03: a small world, ingested and trained once, so each notebook stands alone.
WORLD_AND_MODEL = """\
from propensity.features.store import ingest_file
from propensity.pipelines.synthetic import WorldConfig, generate_world, write_world
from propensity.pipelines.training.config import load_train_config
from propensity.pipelines.training.train import train

world = generate_world(WorldConfig(contacts=3_000, days=180, seed=2))
files = write_world(world, ws.path / 'data', fmt='parquet')
for kind in ('contacts', 'events', 'outcomes'):
    ingest_file(ws, kind, files[kind])
config = load_train_config(shipped_config('train_demo.yaml'))
# no Optuna search here, to stay quick: `propensity train` searches with a time budget
config = config.model_copy(update={'model': config.model.model_copy(update={'tune': False}),
                                   # a small world has fewer than the default 500 positives needed
                                   # before LightGBM is trained (below it: the points model only)
                                   'points_only_below': 100})
result = train(ws, config)
result.metrics.query("split == 'test'")"""

RULE_VS_LEARNED = [
    new_markdown_cell(
        "# 02 · Rule vs learned, on the same held-out cut-off\n\n"
        "What `propensity compare` does, from Python: the hand-weighted rules, the learned model and the "
        "learned points are scored on the training config's test cut-off (never seen in training or "
        "calibration) and compared in the units a sales team uses."
    ),
    new_code_cell(SETUP),
    new_markdown_cell("## 1. A small world and a trained model"),
    new_code_cell(WORLD_AND_MODEL),
    new_markdown_cell("## 2. Compare\n\nROC-AUC and PR-AUC with bootstrap 95% intervals; the gap to "
                      "the rules gets its own paired interval."),
    new_code_cell(
        "from propensity.pipelines.compare import CompareConfig, compare_models\n\n"
        "comparison = compare_models(ws, config, CompareConfig(top_k_percent=(5, 10, 20), n_boot=200),\n"
        "                            scorer=result.scorer)\n"
        "comparison.summary"
    ),
    new_code_cell("comparison.gaps"),
    new_markdown_cell("## 3. What a sales team sees: the top k% and the bands"),
    new_code_cell("comparison.top_k"),
    new_code_cell("comparison.bands"),
    new_markdown_cell("## 4. Who moves: rule band → learned band"),
    new_code_cell(
        "moves = comparison.transitions['rules->learned']\n"
        "pd.DataFrame(moves['counts'], index=pd.Index(moves['bands'], name='rule band'),\n             columns=pd.Index(moves['bands'], name='learned band'))"
    ),
    new_markdown_cell("## 5. The report\n\nOne self-contained HTML file (plots embedded) and the numbers as JSON."),
    new_code_cell(
        "from propensity.pipelines.compare import write_report\n\n"
        "paths = write_report(comparison, ws.path / 'reports')\n"
        "paths"
    ),
]

EXPLAIN_AND_TUNE = [
    new_markdown_cell(
        "# 03 · Explain every score, then tune the hand weights from it\n\n"
        "What `propensity explain` and `propensity tune` do, from Python: SHAP values of the learned "
        "model, grouped as a rep reads them and carried onto the 0–5 scale (they sum exactly to score − "
        "baseline), beside the rule score's own points; then a proposal of new rule points from those "
        "contributions, backtested on the held-out cut-off."
    ),
    new_code_cell(SETUP),
    new_markdown_cell("## 1. A small world and a trained model"),
    new_code_cell(WORLD_AND_MODEL),
    new_markdown_cell("## 2. Why does this contact score what it scores?"),
    new_code_cell(
        "from propensity.pipelines.explain.jobs import explain_one\n"
        "from propensity.pipelines.rules.config import load_rules\n\n"
        "rules = load_rules(shipped_config('rules/saas.yaml'))\n"
        "as_of = datetime(2025, 6, 1)\n"
        "top = result.test_scores.sort_values('learned_score', ascending=False).iloc[0]\n"
        "report = explain_one(ws, top['contact_id'], as_of, result.scorer, rules)\n"
        "print(f'learned {report.learned_score:.2f} = baseline {report.baseline:.2f} + '\n"
        "      f'{report.learned[\"points\"].sum():+.2f}; rules {report.rule_score:.2f}')\n"
        "report.learned[['facts', 'points']].head(8)"
    ),
    new_code_cell("report.comparison.head(8)"),
    new_markdown_cell("## 3. Globally: what drives the learned score"),
    new_code_cell(
        "from propensity.features.spine import spine_from_frame\n"
        "from propensity.pipelines.explain import explain_contacts, global_importance, plot_importance, top_reasons\n"
        "from propensity.pipelines.explain.jobs import model_features\n\n"
        "con = ws.ibis_connection()\n"
        "sample = result.test_scores[['contact_id', 'as_of']].head(1_000)\n"
        "features = model_features(con, spine_from_frame(con, sample), result.scorer)\n"
        "explanation = explain_contacts(result.scorer, features, method='pred_contrib')\n"
        "importance = global_importance(explanation)\n"
        "plot_importance(importance, top=10);"
    ),
    new_code_cell("top_reasons(explanation, n=3).head()"),
    new_markdown_cell("## 4. Tune: new points for the existing rules\n\n"
                      "Fitted on train/valid rows from the model's SHAP values (not the labels), judged on "
                      "the test cut-off; offered only where it beats the current rules there."),
    new_code_cell(
        "from propensity.pipelines.tune.jobs import tune_rules\n\n"
        "tuned = tune_rules(ws, config, rules, result.scorer, fit_rows=5_000)\n"
        "print(tuned.reason)\n"
        "tuned.backtest"
    ),
    new_code_cell("print(tuned.diff[:1500])"),
]


def main() -> None:
    notebooks = {"01-quickstart.ipynb": QUICKSTART, "02-rule-vs-learned.ipynb": RULE_VS_LEARNED,
                 "03-explain-and-tune.ipynb": EXPLAIN_AND_TUNE}
    for name, cells in notebooks.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
