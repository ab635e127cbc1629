"""The learned scorer: features -> calibrated probability -> learned 0-5 score.

One object carries everything scoring needs (booster, feature list, category codes, calibrator,
score map, the feature config that built the columns), so batch scoring, the MLflow pyfunc and
the service all score identically.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.pipelines.training.calibration_maps import CalibrationMap, ScoreMap
from propensity.pipelines.training.lgbm import lgb
from propensity.pipelines.training.matrix import model_array

__all__ = ["LearnedScorer", "load_scorer"]

CALIBRATION_JSON = "calibration.json"


@dataclass
class LearnedScorer:
    """A trained propensity model ready to score feature frames."""

    booster: lgb.Booster
    feature_names: list[str]
    categories: dict[str, list]
    calibrator: object  # ProbabilityCalibrator: .transform(raw) -> probability
    mapper: object  # ScoreMapper: .transform(probability) -> 0-5
    best_iteration: int
    feature_config: dict = field(default_factory=dict)
    event_types: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    # the rules as an input (training/rule_inputs.py): the rule set (as YAML) whose ``rule__*``
    # columns the model reads, and the blend of its rule score chosen on valid (None: neither)
    rule_inputs: str | None = None
    blend: dict | None = None
    # BG/NBD expected purchases as an input (training/expected_purchases.py): ExpectedPurchases.to_dict()
    expected_purchases: dict | None = None
    # set by compile_trees(): a native predictor of the same model (not pickled, not compared)
    _compiled: object = field(default=None, repr=False, compare=False)
    # what compile_trees() asked for, pickled with the scorer: a copy sent elsewhere (Spark's
    # Python workers get the pyfunc inside the mapInPandas closure) compiles on first use there
    _compile_cache_dir: str | None = field(default=None, repr=False, compare=False)
    _compile_requested: bool = field(default=False, repr=False, compare=False)

    def compile_trees(self, cache_dir: str | Path | None = None) -> None:
        """Score with compiled trees from now on (extra ``[fast]``; see :mod:`.compiled`)."""
        from propensity.pipelines.training.compiled import compiled_predictor

        self._compiled = compiled_predictor(self.booster, self.best_iteration, cache_dir=cache_dir)
        self._compile_requested, self._compile_cache_dir = True, (str(cache_dir) if cache_dir else None)

    @property
    def uses_compiled_trees(self) -> bool:
        return self._compiled is not None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_compiled"] = None  # a handle on a loaded native library: compiled (or found cached) on first use
        state.pop("_input_rules", None)  # parsed again from rule_inputs where it is unpickled
        return state

    def raw_probability(self, features: pd.DataFrame) -> np.ndarray:
        """Uncalibrated booster output on the model's own columns."""
        missing = [c for c in self.feature_names if c not in features.columns]
        if missing:
            raise ValueError(
                f"the feature frame lacks {len(missing)} column(s) the model was trained on, e.g. "
                f"{missing[:5]}; build features with the model's feature config and event types"
            )
        # one float64 array, not prepare_matrix's DataFrame: same values, same predictions, and
        # no per-call DataFrame of categoricals nor LightGBM's own DataFrame conversion
        raw = self.raw_probability_of(model_array(features, self.feature_names, self.categories))
        if self.blends_rules:
            from propensity.pipelines.training.rule_blend import Blend, rule_score_of

            raw = Blend(**self.blend).apply(raw, rule_score_of(features, self.input_rules))
        return raw

    def columns_read(self) -> list[str]:
        """The feature columns :meth:`score` reads, in training order: those a tree splits on (any
        tree, not only up to ``best_iteration``) and, when the rule score is blended in, the rule
        columns it is recomputed from. The model's other columns can hold anything (NaN): no
        prediction reads them, so ``score --model`` does not compute them (the demo's model
        splits on 120 of its 210 features)."""
        split = self.booster.feature_importance("split", iteration=0)  # <= 0: every tree
        if len(split) != len(self.feature_names):
            return list(self.feature_names)
        # by position: the booster's columns are feature_names in order (LightGBM may rename some)
        read = {name for name, count in zip(self.feature_names, split) if count > 0}
        if self.blends_rules:
            from propensity.pipelines.training.rule_blend import rule_input_columns

            read.update(rule_input_columns(self.input_rules))
        return [name for name in self.feature_names if name in read]

    @property
    def blends_rules(self) -> bool:
        """Whether the output mixes in the rule score (computed from the frame's ``rule__*`` columns)."""
        return bool(self.blend) and float(self.blend.get("alpha", 0.0)) > 0.0

    @property
    def input_rules(self):
        """The RuleSet whose columns the model reads (None when the rules are not an input)."""
        if self.rule_inputs is None:
            return None
        cached = self.__dict__.get("_input_rules")
        if cached is not None and cached[0] is self.rule_inputs:
            return cached[1]
        import yaml

        from propensity.pipelines.rules.config import RuleSet

        # parsed once per text: every blended score reads it (a change split scores hundreds of frames)
        rules = RuleSet.model_validate(yaml.safe_load(self.rule_inputs))
        self.__dict__["_input_rules"] = (self.rule_inputs, rules)
        return rules

    def raw_probability_of(self, matrix: np.ndarray, *, num_threads: int | None = None) -> np.ndarray:
        """Uncalibrated booster output on :func:`model_array`'s matrix (compiled trees when asked for).

        The booster alone: a model that blends the rule score in (:attr:`blends_rules`) is scored
        through :meth:`raw_probability`, which has the frame to recompute the rule score from.

        ``num_threads``: LightGBM's threads (1 suits a few rows: no OpenMP pool to wake).
        """
        if self._compile_requested and self._compiled is None:
            self.compile_trees(self._compile_cache_dir)
        if self._compiled is not None:
            return self._compiled(matrix)
        threads = {"num_threads": num_threads} if num_threads else {}
        return self.booster.predict(matrix, num_iteration=self.best_iteration, **threads)

    def calibrated(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probability, learned_score)`` of raw booster outputs."""
        probability = np.clip(self.calibrator.transform(raw), 0.0, 1.0)
        return probability, np.asarray(self.mapper.transform(probability), dtype="float64")

    def score(self, features: pd.DataFrame) -> pd.DataFrame:
        """``probability`` (calibrated) and ``learned_score`` (0-5, on the rule's scale)."""
        probability, learned = self.calibrated(self.raw_probability(features))
        return pd.DataFrame({"probability": probability, "learned_score": learned}, index=features.index)

    def save(self, folder: str | Path) -> Path:
        """Write the scorer to ``folder`` (booster as LightGBM text, the rest as pickle + JSON)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "booster.txt"), num_iteration=self.best_iteration)
        with open(folder / "calibration.pkl", "wb") as handle:
            pickle.dump({"calibrator": self.calibrator, "mapper": self.mapper}, handle)
        # the same maps as plain numbers, which load_scorer reads without importing scikit-learn
        plain = _plain_maps(self.calibrator, self.mapper)
        if plain is not None:
            (folder / CALIBRATION_JSON).write_text(json.dumps(plain))
        meta = {
            "feature_names": self.feature_names,
            "categories": self.categories,
            "best_iteration": self.best_iteration,
            "feature_config": self.feature_config,
            "event_types": list(self.event_types),
            "metadata": self.metadata,
            "rule_inputs": self.rule_inputs,
            "blend": self.blend,
            "expected_purchases": self.expected_purchases,
        }
        (folder / "scorer.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder


def _plain_maps(calibrator, mapper) -> dict | None:
    """``calibration.json``'s content; None for maps that have no plain form (a calibrator pickled
    before the centred isotonic knots): such a scorer is loaded from its pickle only."""
    try:
        return {"calibrator": calibrator.as_map().to_dict(), "mapper": mapper.as_map().to_dict()}
    except ValueError:
        return None


def _calibration(folder: Path) -> dict:
    """The calibrator and score map: the plain maps of ``calibration.json`` (numpy only), or for a
    scorer saved before it, the pickled scikit-learn estimators (same numbers)."""
    if (folder / CALIBRATION_JSON).is_file():
        plain = json.loads((folder / CALIBRATION_JSON).read_text())
        return {"calibrator": CalibrationMap.from_dict(plain["calibrator"]), "mapper": ScoreMap.from_dict(plain["mapper"])}
    with open(folder / "calibration.pkl", "rb") as handle:
        return pickle.load(handle)


def load_scorer(folder: str | Path) -> LearnedScorer:
    """Read a scorer written by :meth:`LearnedScorer.save`."""
    folder = Path(folder)
    meta = json.loads((folder / "scorer.json").read_text())
    parts = _calibration(folder)
    booster = lgb.Booster(model_file=str(folder / "booster.txt"))
    return LearnedScorer(
        booster=booster,
        feature_names=meta["feature_names"],
        categories=meta["categories"],
        calibrator=parts["calibrator"],
        mapper=parts["mapper"],
        # the saved booster holds exactly best_iteration trees
        best_iteration=booster.current_iteration(),
        feature_config=meta["feature_config"],
        event_types=tuple(meta["event_types"]),
        metadata=meta["metadata"],
        rule_inputs=meta.get("rule_inputs"),  # absent in scorers saved before the rules were an input
        blend=meta.get("blend"),
        expected_purchases=meta.get("expected_purchases"),  # absent before the family existed
    )
