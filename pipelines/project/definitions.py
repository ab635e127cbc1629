"""The rules files and model versions the workspace's commands used, and when.

``score``, ``score --model``, ``train`` (its rules, the version it registered and a promotion) and
``serve`` (at start) each record what they used: a rules file by the hash of its content (the
content is kept once per hash, so the rules of any date can be read back), a model by name,
version and the reference asked for (``champion``, a version). ``explain --since DATE`` reads what
was in use at DATE from here instead of asking for ``--rules-before`` / ``--model-before``.

It is a SQLite file (``<workspace>/history.db``), not a table of the DuckDB file: the commands that
record hold the DuckDB file read-only (a DuckDB writer excludes every other process, and the
service or a long ``score`` may be reading it), while SQLite lets several processes append. A
failure to record is reported as a warning and never fails the command it describes.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from propensity.pipelines.rules.config import RuleSet, dump_rules

__all__ = ["ModelRef", "ModelUse", "RulesUse", "model_at", "record_model", "record_rules", "rules_at", "rules_hash"]

# uses that mean "this version scored contacts from then on" (a registration alone does not)
_SCORING_USES = ("score", "serve", "promote")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rules_files (hash TEXT PRIMARY KEY, name TEXT NOT NULL, content TEXT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS definitions_used (used_at TEXT NOT NULL, command TEXT NOT NULL, kind TEXT NOT NULL, "
     "rules_hash TEXT, rules_path TEXT, model_name TEXT, model_version TEXT, model_ref TEXT, model_uri TEXT)"),
    "CREATE INDEX IF NOT EXISTS definitions_used_at ON definitions_used (kind, used_at)",
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _stamp(at: datetime) -> str:
    # ISO text with microseconds sorts as time does
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    for statement in _SCHEMA:
        con.execute(statement)
    return con


def rules_hash(rules: RuleSet) -> tuple[str, str]:
    """``(sha256 hex, content)`` of a rule set, from its canonical YAML (formatting and comments of the
    file do not change it; any change of a rule does)."""
    content = dump_rules(rules)
    return hashlib.sha256(content.encode("utf-8")).hexdigest(), content


def record_rules(path: Path, rules: RuleSet, *, command: str, source: Path | str | None = None,
                 at: datetime | None = None) -> str:
    """Record that ``command`` used ``rules`` (read from ``source``) at ``at`` (default now); its hash."""
    digest, content = rules_hash(rules)
    with closing(_open(path)) as con, con:
        con.execute("INSERT OR IGNORE INTO rules_files (hash, name, content) VALUES (?, ?, ?)",
                    (digest, rules.name, content))
        con.execute("INSERT INTO definitions_used (used_at, command, kind, rules_hash, rules_path) "
                    "VALUES (?, ?, 'rules', ?, ?)", (_stamp(at or _now()), command, digest,
                                                    None if source is None else str(source)))
    return digest


def record_model(path: Path, *, name: str, version: str | None, ref: str, uri: str | None, command: str,
                 at: datetime | None = None) -> None:
    """Record that ``command`` used version ``version`` of model ``name`` (asked for as ``ref``)."""
    with closing(_open(path)) as con, con:
        con.execute("INSERT INTO definitions_used (used_at, command, kind, model_name, model_version, model_ref, "
                    "model_uri) VALUES (?, ?, 'model', ?, ?, ?, ?)",
                    (_stamp(at or _now()), command, name, None if version is None else str(version), ref, uri))


@dataclass(frozen=True)
class ModelRef:
    """A registered version as recorded (a ModelContext has the same attributes)."""

    name: str
    version: str | None
    ref: str
    uri: str | None


@dataclass(frozen=True)
class RulesUse:
    """The rules in use at a date: the latest recorded use at or before it."""

    rules: RuleSet
    hash: str
    used_at: datetime
    command: str
    path: str | None

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return (f"{self.rules.name}{where}, sha256 {self.hash[:12]}, used by `{self.command}` at "
                f"{self.used_at:%Y-%m-%d %H:%M}")


@dataclass(frozen=True)
class ModelUse:
    """The model version in use at a date: the latest score, serve or promotion at or before it."""

    name: str
    version: str
    ref: str
    used_at: datetime
    command: str

    def describe(self) -> str:
        return f"{self.name} v{self.version} ({self.ref}), used by `{self.command}` at {self.used_at:%Y-%m-%d %H:%M}"


def rules_at(path: Path, at: datetime) -> RulesUse | None:
    """The rules last used at or before ``at``; None when nothing was recorded by then."""
    if not Path(path).is_file():
        return None
    with closing(_open(path)) as con:
        row = con.execute(
            "SELECT u.used_at, u.command, u.rules_hash, u.rules_path, f.content FROM definitions_used u "
            "JOIN rules_files f ON f.hash = u.rules_hash WHERE u.kind = 'rules' AND u.used_at <= ? "
            "ORDER BY u.used_at DESC, u.rowid DESC LIMIT 1", (_stamp(at),)).fetchone()
    if row is None:
        return None
    used_at, command, digest, source, content = row
    return RulesUse(rules=RuleSet.model_validate(yaml.safe_load(content)), hash=digest,
                    used_at=datetime.fromisoformat(used_at), command=command, path=source)


def model_at(path: Path, name: str, at: datetime) -> ModelUse | None:
    """The version of model ``name`` that last scored (score, serve, promotion) at or before ``at``."""
    if not Path(path).is_file():
        return None
    marks = ", ".join("?" for _ in _SCORING_USES)
    with closing(_open(path)) as con:
        row = con.execute(
            "SELECT used_at, command, model_version, model_ref FROM definitions_used WHERE kind = 'model' "
            f"AND model_name = ? AND model_version IS NOT NULL AND command IN ({marks}) AND used_at <= ? "
            "ORDER BY used_at DESC, rowid DESC LIMIT 1", (name, *_SCORING_USES, _stamp(at))).fetchone()
    if row is None:
        return None
    used_at, command, version, ref = row
    return ModelUse(name=name, version=version, ref=ref, used_at=datetime.fromisoformat(used_at), command=command)
