"""The configs shipped inside the package (``propensity.configs``), read as package data.

A wheel installs them under ``site-packages/propensity/configs``; an editable install reads the
repository's ``configs/`` folder. Commands default to these files only when the workspace has no
copy of its own (``propensity init`` writes one), and ``copy_shipped_configs`` makes editable copies.
"""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

__all__ = ["ShippedConfigError", "copy_shipped_configs", "shipped_config", "shipped_configs_dir"]


class ShippedConfigError(ValueError):
    """A shipped config that does not exist, or a copy that would overwrite the user's file."""


def shipped_configs_dir() -> Path:
    """The folder holding the shipped YAML (a real folder: the package is never zipped)."""
    folder = Path(str(files("propensity.configs")))
    if not folder.is_dir():
        raise ShippedConfigError(f"the shipped configs are not a folder on disk ({folder})")
    return folder


def shipped_config(relative: str) -> Path:
    """``relative`` (e.g. ``"rules/saas.yaml"``) inside the shipped configs; it must exist."""
    path = shipped_configs_dir() / relative
    if not path.is_file():
        known = ", ".join(str(p.relative_to(shipped_configs_dir())) for p in _yaml_files())
        raise ShippedConfigError(f"no shipped config {relative!r}; the shipped ones are: {known}")
    return path


def _yaml_files() -> list[Path]:
    return sorted(shipped_configs_dir().rglob("*.yaml"))


def copy_shipped_configs(dest: Path, *, overwrite: bool = False) -> list[Path]:
    """Copy every shipped YAML under ``dest`` keeping the folders; returns the files written.

    Refuses (before writing anything) when a file would be replaced and ``overwrite`` is off.
    """
    dest = Path(dest)
    pairs = [(src, dest / src.relative_to(shipped_configs_dir())) for src in _yaml_files()]
    existing = [target for _, target in pairs if target.exists()]
    if existing and not overwrite:
        raise ShippedConfigError(
            f"{len(existing)} file(s) already exist under {dest} (e.g. {existing[0]}); "
            "pass --force to overwrite them"
        )
    for src, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return [target for _, target in pairs]
