"""What a registered model version carries: the files it was trained with.

Written by ``propensity train`` as MLflow run artifacts under ``context/`` and copied into the
workspace under ``models/<model name>/v<version>/``; read back by
:class:`propensity.pipelines.project.Project` so `compare`, `tune` and `explain` rebuild what the
model was trained on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import yaml

from propensity.features.layout import LEARNED_RULES_FILE, WorkspaceLayout
from propensity.pipelines.training.card import model_card
from propensity.pipelines.training.config import TrainConfig

__all__ = ["CARD_FILE", "CONTEXT_FILES", "context_folder", "write_context"]

CARD_FILE = "card.md"  # the model card (training/card.py)

CONTEXT_FILES = {
    "train": "train.yaml",
    "rules": "rules.yaml",
    "features": "features.yaml",
    "learned_rules": LEARNED_RULES_FILE,  # the name the workspace gives the latest learned points
}


def context_folder(workspace_path: Path, model_name: str, version: str) -> Path:
    """Where a workspace keeps a registered version's context files."""
    return WorkspaceLayout(Path(workspace_path)).model_context(model_name, version)


def write_context(config: TrainConfig, result, folder: Path) -> Path:
    """The files a model version carries: its train config (``data_end`` pinned to the value used,
    paths relative to the folder), rules, feature config and learned points, and its card.

    With them `score`, `explain`, `compare` and `tune` rebuild what the model was trained on
    instead of whatever the workspace's configs say today.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config.rules, folder / CONTEXT_FILES["rules"])
    # the config as resolved for this training (`auto` windows and half-lives replaced by what was
    # chosen from the data): resolving `auto` again later, on other data or without the training's
    # horizon, would build other features than the model was trained on
    features = yaml.safe_dump(result.summary["feature_config"], sort_keys=False)
    choices = (result.summary.get("feature_choices") or "").replace("\n", " ")
    header = "# The feature config this model version was trained with, `auto` resolved"
    header += f": {choices}\n" if choices else ".\n"
    (folder / CONTEXT_FILES["features"]).write_text(header + features, encoding="utf-8")
    shutil.copyfile(result.learned_rules_path, folder / CONTEXT_FILES["learned_rules"])
    train = config.model_dump(mode="json")
    train |= {"rules": CONTEXT_FILES["rules"], "features": CONTEXT_FILES["features"],
              "data_end": pd.Timestamp(result.summary["data_end"]).isoformat()}
    header = ("# The training config this model version was trained with: data_end is the value used,\n"
              "# paths are relative to this folder (written by `propensity train`).\n")
    (folder / CONTEXT_FILES["train"]).write_text(header + yaml.safe_dump(train, sort_keys=False), encoding="utf-8")
    # for people, not read back: the test figures and how the calibration holds on the test period
    (folder / CARD_FILE).write_text(model_card(result.summary, result.metrics), encoding="utf-8")
    return folder
