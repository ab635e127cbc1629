"""The service's settings: a YAML file (``configs/serve.yaml``) validated once, plus the environment.

Write keys are credentials, so they come only from the environment (``PROPENSITY_WRITE_KEYS``,
comma-separated, or the variable the config names), never from a file in the repository.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from propensity.pipelines.config_files import load_yaml_config

__all__ = ["ServeConfig", "ServeConfigError", "load_serve_config", "read_keys", "write_keys"]


class ServeConfigError(ValueError):
    """A serve config that cannot be read or does not validate, or missing write keys."""


class ServeConfig(BaseModel):
    """Tuning of ``propensity serve``; every field has a working default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    write_keys_env: str = "PROPENSITY_WRITE_KEYS"
    # keys for GET /v1/contacts/{id}/score; unset: the write keys. Set it when write keys are
    # public (analytics.js in a browser), so that they cannot read scores.
    read_keys_env: str = "PROPENSITY_READ_KEYS"
    # Segment's own limits are 32 KB per call and 500 KB per batch request
    max_body_bytes: int = Field(default=512_000, gt=0)
    # events one group commit takes from the queue at most
    max_batch_events: int = Field(default=5_000, gt=0)
    # after the first request of a commit, wait this long for more (0: commit at once)
    commit_delay_ms: float = Field(default=0.0, ge=0, le=100)
    # how often decayed scores are recomputed for drop triggers, and the outbox is delivered
    sweep_seconds: float = Field(default=60.0, gt=0)
    deliver_seconds: float = Field(default=5.0, gt=0)
    # contacts whose score state is kept in memory (least recently used evicted, then read back
    # from the database on their next event): about 3 KB each, so 100,000 is ~300 MB at most
    cache_contacts: int = Field(default=100_000, ge=1)
    # the sweep looks only at contacts that may have reached a band or trigger level (or whose
    # event counts or expires); a decaying stored score is also brought up to date at least this often
    score_refresh_hours: float = Field(default=24.0, gt=0)
    # contacts per sweep chunk at most (read and computed by the sweep's thread, stored by the
    # writer between event commits)
    sweep_chunk: int = Field(default=200, ge=1)
    # about the most one sweep chunk costs (its CPU time plus the writer's time storing it): the
    # next one holds as many contacts as the last one's pace fits in this (a 200-contact chunk
    # took up to ~0.7 s on a loaded machine, and event commits waited behind it)
    sweep_slice_ms: float = Field(default=10.0, gt=0, le=1000)
    # the share of the time a sweep with a backlog may take: after each chunk it pauses three
    # times as long as the chunk cost (0.25), so requests are served while it runs
    sweep_duty: float = Field(default=0.25, gt=0, le=1)
    top_reasons: int = Field(default=3, ge=1)
    # `propensity serve` only (not an app built in a test): the heap at start is frozen out of
    # Python's garbage collector, automatic full collections are off, and every this many
    # seconds one full collection of what is new since then runs, then that is frozen too.
    # Full collections over the whole heap (the score cache, the event mirror) took 120-400 ms
    # each, about once a second under load: the service's p99 (docs/SERVICE.md).
    gc_collect_seconds: float = Field(default=10.0, gt=0)
    # deepest JSON nesting a request body may have (a Segment call needs 3 or 4 levels)
    max_json_depth: int = Field(default=32, ge=4, le=256)
    # /metrics: "keyed" (a read key, or a write key without read keys, as the HTTP Basic user;
    # Prometheus' basic_auth), "open" (no key: only on a private network), or "off"
    metrics: Literal["keyed", "open", "off"] = "keyed"
    # /docs, /redoc and /openapi.json; off by default: the docs page pulls Swagger UI from a CDN
    docs: bool = False
    # a registered model is loaded by unpickling its artifacts: only from this workspace's own
    # MLflow artifact folder, unless this says the model's source is trusted (docs/SERVICE.md)
    allow_external_model: bool = False
    # the learned score's change split (GET .../score, trigger messages) reaches this many days
    # back: the event mirror keeps that much more of the events one by one (docs/SERVICE.md)
    learned_split_days: int = Field(default=7, ge=0, le=366)


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """Read and validate a serve YAML file (None: the defaults)."""
    if path is None:
        return ServeConfig()
    return load_yaml_config(path, ServeConfig, ServeConfigError, not_found='serve config not found',
                            invalid='invalid serve config', empty_ok=True)


def write_keys(config: ServeConfig, env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The accepted write keys from the environment; at least one is required."""
    env = os.environ if env is None else env
    keys = frozenset(k.strip() for k in env.get(config.write_keys_env, "").split(",") if k.strip())
    if not keys:
        raise ServeConfigError(
            f"no write keys: set {config.write_keys_env}=key1,key2 (clients send a key as the "
            "HTTP Basic user, as Segment SDKs do)"
        )
    return keys


def read_keys(config: ServeConfig, env: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """The keys that may read scores, or None when the write keys do."""
    env = os.environ if env is None else env
    keys = frozenset(k.strip() for k in env.get(config.read_keys_env, "").split(",") if k.strip())
    return keys or None
