"""The application layer: a workspace, and the answer to "which config, rules and model?".

Every entry point (the CLI, the notebooks, a user's own code through ``propensity.Project``) asks
here, so the rule is written once: what the user gave, else the context of the model being used
(the train config, rules, features and learned points it was trained with, carried by the
registered version), else the workspace's own copies (what ``propensity init`` wrote), else the
configs shipped with the package. Each answer says where it came from, so a command can say which
file it used instead of silently using another.
"""

from __future__ import annotations

from propensity.pipelines.project.activation import ActivationOperations
from propensity.pipelines.project.operations import ModelOperations
from propensity.pipelines.project.resolve import (
    ModelContext,
    Resolved,
    pd_datetime,
    spine_choice,
)

__all__ = ["ModelContext", "Project", "Resolved", "pd_datetime", "spine_choice"]


class Project(ModelOperations, ActivationOperations):
    """One workspace and everything resolved against it.

    Parameters
    ----------
    workspace : Workspace, str or Path, optional
        The workspace folder; default ``$PROPENSITY_WORKSPACE``, else ``./propensity-workspace``.

    Examples
    --------
    >>> project = Project("propensity-workspace")          # doctest: +SKIP
    >>> model = project.model("champion")                   # doctest: +SKIP
    >>> config, where = project.train_config(model=model)   # doctest: +SKIP
    """
