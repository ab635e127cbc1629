"""How many times an engine's plan reads its source tables: Parquet scans in a query plan.

Spark does not materialise a subquery that an expression uses twice (Ibis writes it once, as a
CTE; Spark inlines it), so every shared part of the feature expression is computed, and its
files read, once per use. DuckDB materialises such CTEs instead. Counting the scans in each
engine's plan shows which expression shapes make Spark read the events again; a plan-shape test
(``tests/spark/test_plan_shape.py``) keeps the count bounded and ``benchmarks/plan_scans.py``
prints it.

Only plans are built here: nothing is executed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field

import ibis

__all__ = ["PlanScans", "duckdb_plan_scans", "spark_plan_scans"]

# `FileScan parquet [cols] ... Location: InMemoryFileIndex(1 paths)[file:/.../events.parquet]`
_METADATA_LENGTH = "spark.sql.maxMetadataStringLength"
_SPARK_SCAN = re.compile(r"(?:FileScan|Scan) parquet [^\n]*?Location: [^\[\n]*\[([^\],\n]*)")


@dataclass(frozen=True)
class PlanScans:
    """Source scans in one physical plan."""

    engine: str
    scans: int
    by_source: dict[str, int] = field(default_factory=dict)
    reused: int = 0  # Spark: ReusedExchange nodes; DuckDB: CTE scans (reads of a materialised CTE)
    materialised: int = 0  # DuckDB: CTEs computed once and read several times
    plan: str = ""

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.by_source.items()))
        extra = f"; reused exchanges {self.reused}" if self.engine == "spark" else (
            f"; materialised CTEs {self.materialised}, CTE scans {self.reused}"
        )
        return f"{self.engine}: {self.scans} Parquet scans ({parts}){extra}"


def _source_name(location: str) -> str:
    """``file:/tmp/x/events.parquet`` -> ``events``; a folder of part files keeps its name."""
    name = location.rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".parquet")


def spark_plan_scans(con: ibis.BaseBackend, expr: ibis.Table) -> PlanScans:
    """The Parquet scans of ``expr``'s physical plan on Ibis' PySpark backend ``con``.

    The plan is the one Spark builds before running (with adaptive execution, the initial plan:
    exchanges that Spark may reuse at run time show as separate subtrees, so the count is an
    upper bound on the files read).
    """
    # A view registers the expression's in-memory tables (spines) with Spark first.
    name = f"_propensity_plan_{uuid.uuid4().hex[:8]}"
    view = con.create_view(name, expr, overwrite=True)
    conf = con._session.conf
    # Spark cuts the file locations in a plan's text to 100 characters by default.
    cut = conf.get(_METADATA_LENGTH, None)
    conf.set(_METADATA_LENGTH, "100000")
    try:
        frame = con._session.table(view.get_name())
        plan = frame._jdf.queryExecution().executedPlan().toString()
    finally:
        con.drop_view(name, force=True)
        if cut is None:
            conf.unset(_METADATA_LENGTH)
        else:
            conf.set(_METADATA_LENGTH, cut)
    sources = Counter(_source_name(m) for m in _SPARK_SCAN.findall(plan))
    return PlanScans(
        engine="spark",
        scans=sum(sources.values()),
        by_source=dict(sources),
        reused=plan.count("ReusedExchange"),
        plan=plan,
    )


def duckdb_plan_scans(con: ibis.BaseBackend, expr: ibis.Table, sources: dict[str, set[str]]) -> PlanScans:
    """The ``READ_PARQUET`` scans of ``expr``'s DuckDB plan (``EXPLAIN (FORMAT json)``).

    DuckDB's plan does not name the file a scan reads, so ``sources`` maps a source name to
    its column names and a scan is given to the first source (in the mapping's order) holding
    every column it reads: list the narrower table first (contacts before events, whose columns
    ``contact_id`` and ``account_id`` both have).
    """
    rows = con.con.execute(f"EXPLAIN (FORMAT json) {con.compile(expr)}").fetchall()
    text = rows[0][1]
    counts: Counter[str] = Counter()
    nodes: Counter[str] = Counter()

    def walk(node: dict) -> None:
        nodes[node.get("name", "")] += 1
        info = node.get("extra_info") or {}
        if node.get("name") == "READ_PARQUET" or info.get("Function") == "READ_PARQUET":
            columns = info.get("Projections") or []
            columns = {columns} if isinstance(columns, str) else set(columns)
            owner = next((s for s, cols in sources.items() if columns <= cols), "?")
            counts[owner] += 1
        for child in node.get("children", []):
            walk(child)

    for root in json.loads(text):
        walk(root)
    return PlanScans(
        engine="duckdb",
        scans=sum(counts.values()),
        by_source=dict(counts),
        reused=nodes["CTE_SCAN"],
        materialised=nodes["CTE"],
        plan=text,
    )
