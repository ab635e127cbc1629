"""Errors shared by every layer of ``pipelines`` (kept at the bottom, so no layer imports upwards for them)."""

from __future__ import annotations

__all__ = ["WorkspaceError"]


class WorkspaceError(ValueError):
    """The workspace lacks something a step needs (the message says what to run first)."""
