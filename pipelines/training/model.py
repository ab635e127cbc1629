"""The learned model: LightGBM, tuned by Optuna, early-stopped on the validation split.

Everything is seeded and single-process-deterministic: the same data, config and seed give the
same trials, the same booster and bit-identical predictions. Categorical attributes are pandas
``category`` columns with categories fixed on the training split (:func:`prepare_matrix`), so a
category's code never shifts between training, validation and scoring.

The trial count decides how long the search runs, not the clock (the time limit is a safety net
that says when it cut): trials are made cheap instead, each fitting a seeded sample of the train
rows for a capped number of rounds, and the chosen parameters are refitted once on every train
row. When the search saw every row and its best trial stopped early, the best trial's booster is
kept: with deterministic training a refit would rebuild exactly the same trees. Probabilities from :meth:`FittedModel.predict_raw` are uncalibrated;
calibration is fitted separately on the validation split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from propensity.pipelines.training.lgbm import lgb

if TYPE_CHECKING:  # pragma: no cover
    import optuna  # imported where the search runs: scoring and explaining need none of it (~0.5 s)

from propensity.pipelines.training.config import ModelSection

# the input matrix has its own module; its names stay importable from here, where callers found them
from propensity.pipelines.training.matrix import (
    binning_values,
    category_codes,
    model_array,
    prepare_matrix,
)

__all__ = [
    "DEFAULT_PARAMS",
    "FittedModel",
    "ModelConfig",
    "SearchSpace",
    "category_codes",
    "feature_importance",
    "fit_lightgbm",
    "model_array",
    "prepare_matrix",
]

# LightGBM metric name -> whether higher is better
_METRICS = {"auc": True, "average_precision": True, "binary_logloss": False}

DEFAULT_PARAMS: Mapping[str, float | int] = MappingProxyType({
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "lambda_l2": 1.0,
    "max_depth": -1,
})
"""The fixed parameters used when ``tune=False``, and the first trial of every search."""


@dataclass(frozen=True)
class SearchSpace:
    """The Optuna search space over LightGBM parameters.

    Attributes
    ----------
    learning_rate : tuple of float
        ``(low, high)``, sampled on a log scale. Default ``(0.01, 0.2)``.
    num_leaves : tuple of int
        ``(low, high)``, log scale. Default ``(8, 128)``.
    min_child_samples : tuple of int
        ``(low, high)``, log scale. Default ``(10, 200)``.
    feature_fraction : tuple of float
        ``(low, high)``, uniform. Default ``(0.5, 1.0)``.
    bagging_fraction : tuple of float
        ``(low, high)``, uniform, with ``bagging_freq=1`` fixed. Default ``(0.5, 1.0)``.
    lambda_l2 : tuple of float
        ``(low, high)``, log scale. Default ``(1e-3, 10.0)``.
    max_depth : tuple of int
        Choices (categorical); ``-1`` means no depth limit, leaving ``num_leaves`` in charge.
        Default ``(-1, 3, 4, 5, 6, 8, 10, 12)``.
    """

    learning_rate: tuple[float, float] = (0.01, 0.2)
    num_leaves: tuple[int, int] = (8, 128)
    min_child_samples: tuple[int, int] = (10, 200)
    feature_fraction: tuple[float, float] = (0.5, 1.0)
    bagging_fraction: tuple[float, float] = (0.5, 1.0)
    lambda_l2: tuple[float, float] = (1e-3, 10.0)
    max_depth: tuple[int, ...] = (-1, 3, 4, 5, 6, 8, 10, 12)

    def __post_init__(self) -> None:
        for name in ("learning_rate", "num_leaves", "min_child_samples", "feature_fraction",
                     "bagging_fraction", "lambda_l2"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"search_space.{name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        for name in ("feature_fraction", "bagging_fraction"):
            if getattr(self, name)[1] > 1:
                raise ValueError(f"search_space.{name} must lie in (0, 1]")
        if not self.max_depth or any(d != -1 and d < 1 for d in self.max_depth):
            raise ValueError("search_space.max_depth must list -1 (no limit) and/or depths >= 1")

    def suggest(self, trial: optuna.Trial) -> dict[str, float | int]:
        """Sample one parameter set for ``trial``."""
        return {
            "learning_rate": trial.suggest_float("learning_rate", *self.learning_rate, log=True),
            "num_leaves": trial.suggest_int("num_leaves", *self.num_leaves, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", *self.min_child_samples, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", *self.feature_fraction),
            "bagging_fraction": trial.suggest_float("bagging_fraction", *self.bagging_fraction),
            "lambda_l2": trial.suggest_float("lambda_l2", *self.lambda_l2, log=True),
            "max_depth": trial.suggest_categorical("max_depth", list(self.max_depth)),
        }

    def contains(self, params: Mapping[str, float | int]) -> bool:
        """Whether ``params`` (such as :data:`DEFAULT_PARAMS`) lie inside this space."""
        ranged = all(getattr(self, k)[0] <= params[k] <= getattr(self, k)[1]
                     for k in params if k != "max_depth")
        return ranged and params["max_depth"] in self.max_depth


_SECTION = ModelSection.model_fields


@dataclass(frozen=True)
class ModelConfig:
    """How the LightGBM model is fitted and tuned.

    Attributes
    ----------
    n_trials : int
        Optuna trials (the first one is :data:`DEFAULT_PARAMS`): the budget that decides, so that
        the same data, config and seed give the same model on a loaded machine as on an idle one.
    timeout_seconds : float
        A safety net, not a budget (default an hour): when the wall clock passes it, the search
        stops and a fit still running stops at its best iteration so far (Optuna only checks its
        own timeout between trials); :attr:`FittedModel.hit_time_budget` then says the result was
        cut short and depends on load. At least one fit always completes.
    seed : int
        Seeds the sampler and every LightGBM random stream.
    early_stopping_rounds : int
        Rounds without improvement of ``metric`` on the validation split before stopping.
    max_estimators : int
        Boosting rounds at most (of the final fit).
    search_rows : int or None
        Train rows each search trial fits on: a seeded sample stratified by label when the
        training split is larger (None: every row). Cheap trials keep ``n_trials`` affordable.
    search_max_estimators : int
        Boosting rounds at most per search trial. When the search sampled rows, or its best trial
        ran into this cap, the chosen parameters are refitted once on every train row (up to
        ``max_estimators``, early-stopped); otherwise the best trial's booster is kept as is.
    search_space : SearchSpace
        The parameters searched (see :class:`SearchSpace` for the default ranges).
    metric : str
        ``"auc"`` (default), ``"average_precision"`` or ``"binary_logloss"``, on the validation
        split; used for early stopping and as the tuning objective.
    n_jobs : int
        LightGBM threads. Trials run one after the other, which keeps the search reproducible.
    tune : bool
        ``False`` fits :data:`DEFAULT_PARAMS` once, still early-stopped.
    """

    # the defaults are the training config's own (one place: ModelSection), not a second copy
    n_trials: int = _SECTION["n_trials"].default
    timeout_seconds: float = _SECTION["timeout_seconds"].default
    seed: int = _SECTION["seed"].default
    early_stopping_rounds: int = _SECTION["early_stopping_rounds"].default
    max_estimators: int = _SECTION["max_estimators"].default
    search_rows: int | None = _SECTION["search_rows"].default
    search_max_estimators: int = _SECTION["search_max_estimators"].default
    search_space: SearchSpace = field(default_factory=SearchSpace)
    metric: str = "auc"
    n_jobs: int = 2
    tune: bool = _SECTION["tune"].default

    @classmethod
    def from_section(cls, section: ModelSection, **overrides) -> ModelConfig:
        """The fit settings of a training config's ``model:`` section (``overrides`` win)."""
        return cls(**(section.model_dump() | overrides))

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError("n_trials must be at least 1")
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if self.early_stopping_rounds < 1 or self.max_estimators < 1 or self.search_max_estimators < 1:
            raise ValueError("early_stopping_rounds, max_estimators and search_max_estimators must be at least 1")
        if self.search_rows is not None and self.search_rows < 1:
            raise ValueError("search_rows must be at least 1 (or None: every train row)")
        if self.n_jobs < 1:
            raise ValueError("n_jobs must be at least 1")
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {self.metric!r}")


@dataclass
class FittedModel:
    """A fitted booster and what is needed to score new rows the same way.

    Attributes
    ----------
    booster : lightgbm.Booster
        The chosen booster (the best trial's, when tuned).
    feature_names : list of str
        Feature columns, in training order.
    categories : dict of str to list
        The fixed categories of each categorical feature (from :func:`prepare_matrix`).
    params : dict
        The LightGBM parameters the booster was trained with.
    best_iteration : int
        Boosting rounds used for prediction (chosen by early stopping).
    valid_auc : float
        ROC-AUC of the raw predictions on the validation split.
    trials : pandas.DataFrame
        Optuna's ``trials_dataframe()``; empty when ``tune=False``.
    fit_seconds : float
        Wall-clock time of the whole fit, search included.
    hit_time_budget : bool
        Whether ``timeout_seconds`` cut the search or a fit short (the result then depends on load).
    search_rows : int
        Train rows the search trials fitted on (all of them unless ``search_rows`` sampled).
    refitted : bool
        Whether the chosen parameters were refitted on every train row after the search.
    """

    booster: lgb.Booster
    feature_names: list[str]
    categories: dict[str, list]
    params: dict
    best_iteration: int
    valid_auc: float
    trials: pd.DataFrame
    fit_seconds: float
    hit_time_budget: bool = False
    search_rows: int = 0
    refitted: bool = False

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated probability of the positive class for each row of ``X``.

        Parameters
        ----------
        X : pandas.DataFrame
            Rows holding at least :attr:`feature_names`, raw or already prepared; they are
            (re)prepared with the stored categories, so unseen categories become missing.

        Returns
        -------
        numpy.ndarray
            One probability per row, from the booster at :attr:`best_iteration`.
        """
        matrix, _ = prepare_matrix(X, self.feature_names, self.categories)
        return self.booster.predict(matrix, num_iteration=self.best_iteration)


def fit_lightgbm(
    X_train: pd.DataFrame,
    y_train: Sequence[int] | np.ndarray | pd.Series,
    X_valid: pd.DataFrame,
    y_valid: Sequence[int] | np.ndarray | pd.Series,
    config: ModelConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    weight_train: Sequence[float] | np.ndarray | pd.Series | None = None,
) -> FittedModel:
    """Fit a binary LightGBM classifier, tuned on and early-stopped by the validation split.

    Parameters
    ----------
    X_train, X_valid : pandas.DataFrame
        Matrices from :func:`prepare_matrix` (the validation one prepared with the training
        categories); same columns in the same order.
    y_train, y_valid : array-like of {0, 1}
        Labels; each split needs both classes.
    config : ModelConfig, optional
        Defaults to ``ModelConfig()``.
    progress : callable, optional
        Called as ``progress(done, total)`` after each trial (``(1, 1)`` when not tuning).
    weight_train : array-like of float, optional
        Row weights of the training split (e.g. ``1 / rate`` on down-sampled negatives, see
        ``propensity.pipelines.training.sampling``); validation is never weighted.

    Returns
    -------
    FittedModel
        The best booster, its parameters and the search record.
    """
    config = config or ModelConfig()
    started = time.perf_counter()
    deadline = started + config.timeout_seconds
    categorical = _check_matrices(X_train, X_valid)
    labels_train = _binary_labels(y_train, len(X_train), "y_train")
    labels_valid = _binary_labels(y_valid, len(X_valid), "y_valid")
    dataset_params = {"feature_pre_filter": False, "seed": config.seed, "num_threads": config.n_jobs, "verbose": -1}
    weights = None if weight_train is None else np.asarray(weight_train, dtype="float64")
    binned_train, binned_valid = binning_values(X_train), binning_values(X_valid)

    def datasets(rows: np.ndarray | None) -> tuple[lgb.Dataset, lgb.Dataset]:
        X, y = (binned_train, labels_train) if rows is None else (binned_train.iloc[rows], labels_train[rows])
        w = weights if weights is None or rows is None else weights[rows]
        train = lgb.Dataset(X, y, weight=w, categorical_feature=categorical or "auto", params=dataset_params,
                            free_raw_data=False)
        valid = lgb.Dataset(binned_valid, labels_valid, categorical_feature=categorical or "auto",
                            params=dataset_params, reference=train, free_raw_data=False)
        return train, valid

    full = datasets(None)

    def fit_once(tuned: Mapping[str, float | int], data=full, rounds: int = config.max_estimators,
                 ) -> tuple[lgb.Booster, dict, bool]:
        params = _base_params(config) | dict(tuned)
        budget = _TimeBudget(deadline, higher_is_better=_METRICS[config.metric])
        booster = lgb.train(
            params, data[0], num_boost_round=rounds,
            valid_sets=[data[1]], valid_names=["valid"],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False),
                       budget],
        )
        return booster, params, budget.hit

    refitted = False
    sample = _search_sample(labels_train, config) if config.tune else None
    search_rows = len(labels_train) if sample is None else len(sample)
    if config.tune:
        search_data = full if sample is None else datasets(sample)
        search_rounds = min(config.search_max_estimators, config.max_estimators)
        booster, params, trials, hit_budget = _search(
            lambda tuned: fit_once(tuned, search_data, search_rounds), config, deadline, progress)
        ran_into_cap = search_rounds < config.max_estimators and booster.current_iteration() >= search_rounds
        if (sample is not None or ran_into_cap) and not hit_budget:
            # the search ranked parameters cheaply; the model is fitted once on every train row
            booster, params, refit_hit = fit_once({k: params[k] for k in DEFAULT_PARAMS})
            hit_budget, refitted = refit_hit, True
    else:
        booster, params, hit_budget = fit_once(DEFAULT_PARAMS)
        trials = pd.DataFrame()
        if progress is not None:
            progress(1, 1)
    from sklearn.metrics import roc_auc_score

    best_iteration = booster.best_iteration or booster.current_iteration()
    valid_auc = float(roc_auc_score(labels_valid, booster.predict(X_valid, num_iteration=best_iteration)))
    return FittedModel(
        booster=booster,
        feature_names=list(X_train.columns),
        categories={name: list(X_train[name].cat.categories) for name in categorical},
        params=params,
        best_iteration=int(best_iteration),
        valid_auc=valid_auc,
        trials=trials,
        fit_seconds=time.perf_counter() - started,
        hit_time_budget=hit_budget,
        search_rows=search_rows,
        refitted=refitted,
    )


def _search_sample(labels: np.ndarray, config: ModelConfig) -> np.ndarray | None:
    """Row positions of the train rows the search trials fit on (None: every row).

    Stratified by label and seeded, so the sample (hence the search) is the same on every run.
    """
    if config.search_rows is None or len(labels) <= config.search_rows:
        return None
    rng = np.random.default_rng(config.seed)
    share = config.search_rows / len(labels)
    kept = [rng.choice(rows, size=max(1, round(share * len(rows))), replace=False)
            for rows in (np.flatnonzero(labels == value) for value in (0, 1))]
    return np.sort(np.concatenate(kept))


def feature_importance(model: FittedModel) -> pd.DataFrame:
    """Gain and split importance of each feature at the model's best iteration.

    Parameters
    ----------
    model : FittedModel

    Returns
    -------
    pandas.DataFrame
        Columns ``feature``, ``gain`` (total gain of the splits on it), ``split`` (how many
        splits use it), sorted by gain, largest first.
    """
    booster, iteration = model.booster, model.best_iteration
    table = pd.DataFrame({
        "feature": booster.feature_name(),
        "gain": booster.feature_importance("gain", iteration=iteration).astype("float64"),
        "split": booster.feature_importance("split", iteration=iteration).astype("int64"),
    })
    return table.sort_values("gain", ascending=False, kind="stable").reset_index(drop=True)


class _TimeBudget:
    """LightGBM callback: stop at the best iteration so far once the deadline has passed."""

    order = 40  # after lgb.early_stopping (30), which sees the iteration first

    def __init__(self, deadline: float, *, higher_is_better: bool) -> None:
        self.deadline = deadline
        self.sign = 1.0 if higher_is_better else -1.0
        self.best_score = -math.inf
        self.best_iteration = 0
        self.best_results: list = []
        self.hit = False

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        results = env.evaluation_result_list or []
        if results and self.sign * results[0][2] > self.best_score:
            self.best_score = self.sign * results[0][2]
            self.best_iteration = env.iteration
            self.best_results = list(results)
        if time.perf_counter() >= self.deadline:
            self.hit = True
            raise lgb.callback.EarlyStopException(self.best_iteration, self.best_results)


class _BestSoFar:
    """The best trial's booster, kept so that the winner does not need a refit."""

    def __init__(self, higher_is_better: bool) -> None:
        self.sign = 1.0 if higher_is_better else -1.0
        self.score = -math.inf
        self.booster: lgb.Booster | None = None
        self.params: dict = {}

    def offer(self, score: float, booster: lgb.Booster, params: dict) -> None:
        if self.sign * score > self.score:  # ties keep the earlier trial, as optuna does
            self.score, self.booster, self.params = self.sign * score, booster, params


def _search(
    fit_once: Callable[[Mapping[str, float | int]], tuple[lgb.Booster, dict, bool]],
    config: ModelConfig,
    deadline: float,
    progress: Callable[[int, int], None] | None,
) -> tuple[lgb.Booster, dict, pd.DataFrame, bool]:
    import optuna

    higher = _METRICS[config.metric]
    best = _BestSoFar(higher)
    hit = False

    def objective(trial: optuna.Trial) -> float:
        nonlocal hit
        booster, params, trial_hit = fit_once(config.search_space.suggest(trial))
        score = float(booster.best_score["valid"][config.metric])
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        trial.set_user_attr("stopped_by_time_budget", trial_hit)
        hit = hit or trial_hit
        best.offer(score, booster, params)
        return score

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal hit
        if progress is not None:
            progress(len(study.trials), config.n_trials)
        if time.perf_counter() >= deadline:
            hit = hit or len(study.trials) < config.n_trials
            study.stop()

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize" if higher else "minimize",
            sampler=optuna.samplers.TPESampler(seed=config.seed),
        )
        if config.search_space.contains(DEFAULT_PARAMS):
            study.enqueue_trial(dict(DEFAULT_PARAMS))
        # our own deadline (not optuna's timeout), so that at least one trial always runs
        study.optimize(objective, n_trials=config.n_trials, callbacks=[after_trial], gc_after_trial=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if best.booster is None:  # cannot happen: the first trial always runs, or optimize raised
        raise RuntimeError("the search finished without a single completed trial")
    return best.booster, best.params, study.trials_dataframe(), hit


def _base_params(config: ModelConfig) -> dict[str, Any]:
    return {
        "objective": "binary",
        "metric": config.metric,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.n_jobs,
        "verbose": -1,
        "feature_pre_filter": False,
    }


def _check_matrices(X_train: pd.DataFrame, X_valid: pd.DataFrame) -> list[str]:
    """The categorical columns, after checking that both matrices are prepared alike."""
    if list(X_train.columns) != list(X_valid.columns):
        raise ValueError("X_train and X_valid must have the same columns in the same order")
    if len(X_train) == 0 or len(X_valid) == 0:
        raise ValueError("X_train and X_valid need at least one row each")
    categorical = []
    for name in X_train.columns:
        train_dtype, valid_dtype = X_train[name].dtype, X_valid[name].dtype
        if isinstance(train_dtype, pd.CategoricalDtype):
            if not (isinstance(valid_dtype, pd.CategoricalDtype)
                    and list(train_dtype.categories) == list(valid_dtype.categories)):
                raise ValueError(
                    f"feature {name!r} has other categories in X_valid than in X_train: prepare X_valid "
                    "with prepare_matrix(..., categories=<the ones learned on train>)"
                )
            categorical.append(name)
        elif not (pd.api.types.is_float_dtype(train_dtype) and pd.api.types.is_float_dtype(valid_dtype)):
            raise ValueError(
                f"feature {name!r} is {train_dtype} / {valid_dtype}: the model takes float64 or category "
                "columns, use prepare_matrix"
            )
    return categorical


def _binary_labels(y: Sequence[int] | np.ndarray | pd.Series, n_rows: int, name: str) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != n_rows:
        raise ValueError(f"{name} must be one label per row ({n_rows}), got shape {labels.shape}")
    if pd.isna(labels).any() or not np.isin(labels, [0, 1]).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    labels = labels.astype("int64")
    if labels.min() == labels.max():
        raise ValueError(f"{name} holds only label {labels[0]}: both classes are needed")
    return labels
