"""Every file and folder a workspace holds, named once.

``Workspace(path).layout`` gives them; code that writes or reads one of them asks the layout
instead of joining the name itself, so a file cannot be written under one name and looked for
under another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DB_FILE", "LEARNED_RULES_FILE", "WorkspaceLayout"]

DB_FILE = "propensity.duckdb"
LEARNED_RULES_FILE = "rules.learned.yaml"


@dataclass(frozen=True)
class WorkspaceLayout:
    """The workspace folder's contents (nothing here creates them)."""

    root: Path

    @property
    def database(self) -> Path:
        """The DuckDB file: events, contacts, outcomes, rejects and feature tables."""
        return self.root / DB_FILE

    @property
    def rejects(self) -> Path:
        """``<kind>-<source stem>.csv``: the rows ingest refused, with their reason."""
        return self.root / "rejects"

    @property
    def configs(self) -> Path:
        """The workspace's own configs (``propensity init``): train.yaml, rules.yaml, features.yaml."""
        return self.root / "configs"

    @property
    def mlflow_db(self) -> Path:
        """The default MLflow tracking store and model registry (SQLite)."""
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        """The default MLflow artifact root (one folder per experiment)."""
        return self.root / "mlartifacts"

    @property
    def models(self) -> Path:
        """The latest training's learned points, and one folder of context files per registered version."""
        return self.root / "models"

    @property
    def learned_rules(self) -> Path:
        """The latest training's learned points (a rules file)."""
        return self.models / LEARNED_RULES_FILE

    def model_context(self, model_name: str, version: str | int) -> Path:
        """The files a registered version was trained with (train, rules, features, learned points)."""
        return self.models / model_name / f"v{version}"

    @property
    def scores(self) -> Path:
        """Score files written by ``propensity score`` without ``--out``."""
        return self.root / "scores"

    @property
    def features(self) -> Path:
        """Feature files written by ``propensity features`` without ``--out``."""
        return self.root / "features"

    @property
    def reports(self) -> Path:
        """The compare report (compare.html, compare.json)."""
        return self.root / "reports"

    @property
    def monitor(self) -> Path:
        """`propensity monitor`'s history and page (monitor.html, monitor.json)."""
        return self.root / "monitor"

    @property
    def monitor_history(self) -> Path:
        """Every closed cut-off `propensity monitor` measured, per champion and rules (JSON); a
        weekly run appends the new cut-offs to it instead of measuring the closed ones again."""
        return self.monitor / "history.json"

    @property
    def cache(self) -> Path:
        """What is kept only to be quicker next time; deleting it changes no result."""
        return self.root / "cache"

    @property
    def query_cache(self) -> Path:
        """Registered models' feature queries as compiled SQL, one JSON file per key
        (``pipelines/training/as_trained_sql.py``); deleting it only costs the next compile."""
        return self.cache / "queries"

    @property
    def history_db(self) -> Path:
        """The rules files and model versions each command used, with the time (SQLite:
        ``pipelines/project/definitions.py``); the contacts' attribute history is in the DuckDB file."""
        return self.root / "history.db"

    @property
    def serve_db(self) -> Path:
        """The service's SQLite store (unless ``$DATABASE_URL`` names another database)."""
        return self.root / "serve.db"

    @property
    def crm(self) -> Path:
        """CRM push and pull state: what was pulled up to when, and the requests spent per day."""
        return self.root / "crm"

    @property
    def crm_pull_state(self) -> Path:
        """``ingest ... --from hubspot|salesforce``: per CRM and kind, the newest modification pulled."""
        return self.crm / "pull-state.json"

    def crm_request_log(self, crm: str) -> Path:
        """The requests sent to ``crm`` in the last day (pyrate-limiter's SQLite bucket): the daily limit
        counts across runs."""
        return self.crm / f"{crm}-requests.sqlite"
