"""Ibis' DuckDB backend through the workspace imports no other dialect's compiler, and every
compiler is still there when asked for (features/ibis_import.py)."""

import json
import subprocess
import sys
import textwrap


def test_the_workspace_connection_imports_only_the_duckdb_compiler_and_the_others_still_resolve(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from propensity.features.store import Workspace

        ws = Workspace({str(tmp_path / "ws")!r})
        con = ws.ibis_connection()
        rows = con.raw_sql("SELECT count(*) FROM events").fetchall()
        loaded = sorted(m.rsplit(".", 1)[1] for m in sys.modules
                        if m.startswith("ibis.backends.sql.compilers.") and m.count(".") == 4)
        import ibis
        import ibis.backends.sql.compilers as sc
        from ibis.backends.sql.compilers import PostgresCompiler, TrinoCompiler
        from ibis.backends.sql.compilers.postgres import PostgresCompiler as direct
        t = ibis.table({{"a": "int64"}}, name="t")
        print(json.dumps({{"rows": rows[0][0], "loaded": loaded, "same": PostgresCompiler is direct,
                          "trino": TrinoCompiler.__name__, "all": len(sc.__all__),
                          "postgres_sql": ibis.to_sql(t.filter(t.a > 1), dialect="postgres")}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["rows"] == 0
    dialects = set(facts["loaded"]) - {"base", "_compat"}  # the shared modules, not dialects
    assert dialects == {"duckdb"}, facts["loaded"]
    assert facts["same"] and facts["trino"] == "TrinoCompiler" and facts["all"] == 20
    assert '"t0"."a" > 1' in facts["postgres_sql"]


def test_an_unknown_dialect_is_still_refused():
    import ibis

    from propensity.features.ibis_import import lazy_compilers

    lazy_compilers()
    t = ibis.table({"a": "int64"}, name="t")
    try:
        ibis.to_sql(t, dialect="no_such_dialect")
    except ValueError as exc:
        assert "no_such_dialect" in str(exc)
    else:
        raise AssertionError("an unknown dialect compiled")
