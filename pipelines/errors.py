"""Errors shared by every layer of ``pipelines`` (kept at the bottom, so no layer imports upwards for them)."""

from __future__ import annotations

# one class for "the workspace lacks or refuses something": defined with the store, which raises it first
from propensity.features.store import WorkspaceError

__all__ = ["WorkspaceError"]
