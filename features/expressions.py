"""Small Ibis helpers the feature families share."""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

__all__ = ["when"]


def when(condition: ir.BooleanValue, value: ir.Value) -> ir.Value:
    """``value`` where ``condition`` holds, else NULL of its type (what an aggregate skips)."""
    return ibis.ifelse(condition, value, ibis.null(value.type()))
