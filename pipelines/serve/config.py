"""The service's settings: a YAML file (``configs/serve.yaml``) validated once, plus the environment.

Write keys are credentials, so they come only from the environment (``PROPENSITY_WRITE_KEYS``,
comma-separated, or the variable the config names), never from a file in the repository.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    top_reasons: int = Field(default=3, ge=1)


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """Read and validate a serve YAML file (None: the defaults)."""
    if path is None:
        return ServeConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ServeConfigError(f"{path}: serve config not found") from None
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ServeConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ServeConfigError(f"{path}: invalid serve config: {problems}") from None


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
