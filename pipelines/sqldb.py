"""SQL helpers shared by the service and activation stores (SQLAlchemy 2 Core, SQLite or PostgreSQL).

Both ``propensity.pipelines.serve.db`` and ``propensity.pipelines.activation.tables`` keep tables in
the same database; what they share about the dialects lives here so that neither imports the other.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["add_column", "create_missing_indexes", "dialect_insert"]


def create_missing_indexes(engine: sa.Engine, meta: sa.MetaData) -> None:
    """The declared indexes of ``meta``'s tables that an older table lacks (``create_all`` only
    indexes the tables it creates)."""
    inspector = sa.inspect(engine)
    for table in meta.sorted_tables:
        existing = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in existing:
                index.create(engine, checkfirst=True)


def add_column(conn: sa.Connection, table: sa.Table, name: str) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for ``table.c[name]`` as declared (its server default too)."""
    column = table.c[name]
    kind = column.type.compile(dialect=conn.dialect)
    default = ""
    if column.server_default is not None:
        default = f" DEFAULT {column.server_default.arg}"
    null = "" if column.nullable else " NOT NULL"
    conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}{default}{null}')


def dialect_insert(dialect_name: str, table: sa.Table):
    """The dialect's INSERT (with ``ON CONFLICT``) for ``table``: SQLite or PostgreSQL only."""
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise ValueError(f"the service supports SQLite and PostgreSQL, not {dialect_name}")
    return insert(table)
