"""Reading a YAML config file into its pydantic model, with errors that name the file and key.

Every config (rules, compare, serve, triggers, ...) is read the same way; only the model, the
error class and the words differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["describe_errors", "load_yaml_config"]

Model = TypeVar("Model", bound=BaseModel)


def describe_errors(exc: ValidationError) -> str:
    """``key.path: message; ...`` for every problem pydantic found."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
    )


def load_yaml_config(
    path: str | Path,
    model: type[Model],
    error: type[Exception],
    *,
    not_found: str,
    invalid: str,
    empty_ok: bool = False,
) -> Model:
    """Read ``path`` as YAML and validate it as ``model``.

    Raises ``error`` with ``"{path}: {not_found}"`` when the file is missing, ``"{path}: not valid
    YAML: ..."``, ``"{path}: expected a mapping at the top level"``, or ``"{path}: {invalid}:
    key: message; ..."`` naming every offending key (unknown keys are errors in our models).
    An empty file is the model's defaults when ``empty_ok``.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {not_found}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if raw is None and empty_ok:
        raw = {}
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path}: {invalid}: {describe_errors(exc)}") from None
