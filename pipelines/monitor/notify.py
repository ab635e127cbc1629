"""Alerts out as signed webhooks: queued in the activation outbox (``activation.outbox``), which
the service's background task or `propensity outbox deliver` sends, signed, with retries and
dead letters, like trigger firings.

One message per alert; its idempotency key is the series and the alert's key, so a weekly run
that sees the same alert again (or a re-run) queues nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from propensity.pipelines.activation.outbox import utcnow
from propensity.pipelines.activation.tables import (
    create_activation_tables,
    insert_ignore,
    outbox,
)
from propensity.pipelines.monitor.alerts import Alert
from propensity.pipelines.monitor.history import digest

__all__ = ["KIND", "alert_payload", "queue_alerts"]

KIND = "monitor_alert"


def alert_payload(alert: Alert, meta: Mapping) -> dict:
    """The webhook body: the alert (reason, action, what to do) and which champion and rules."""
    return {"type": KIND, "alert": alert.to_dict(), "model": meta.get("model"), "rules": meta.get("rules_path"),
            "series": meta.get("key")}


def queue_alerts(engine: sa.Engine, alerts: Iterable[Alert], meta: Mapping) -> int:
    """Queue each alert not queued before, in one transaction; returns how many were new."""
    import json

    create_activation_tables(engine)
    now, new = utcnow(), 0
    with engine.begin() as conn:
        for alert in alerts:
            key = f"monitor:{digest([meta.get('key'), alert.key])}"
            body = json.dumps(alert_payload(alert, meta), separators=(",", ":"), sort_keys=True, allow_nan=False)
            new += insert_ignore(conn, outbox, {
                "idempotency_key": key, "kind": KIND, "trigger": f"monitor:{alert.kind}", "contact_id": None,
                "payload": body, "created_at": now, "next_attempt_at": now, "attempts": 0})
    return new
