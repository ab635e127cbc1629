"""Wiring for `propensity tune`: training set + learned model -> proposed rules + backtest. No printing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from propensity.features.config import FeatureConfig
from propensity.features.store import Workspace
from propensity.pipelines.explain.explain import explain_contacts
from propensity.pipelines.rules.config import RuleSet, dump_rules
from propensity.pipelines.rules.score import (
    activity_points,
    cap_values,
    contacts_aligned,
    score_frame,
)
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.dataset import TrainingSet, assemble_training_set
from propensity.pipelines.tune.backtest import (
    backtest_table,
    band_volumes,
    gap_closed,
    rules_diff,
)
from propensity.pipelines.tune.candidates import candidate_rules
from propensity.pipelines.tune.gate import decide_offer
from propensity.pipelines.tune.propose import (
    Proposal,
    TuneConfig,
    criterion_matches,
    propose_rules,
)

__all__ = [
    "TuneData",
    "TuneResult",
    "check_proposal_path",
    "evaluate_proposal",
    "prepare_tune_data",
    "proposed_raw_points",
    "tune_rules",
    "write_proposal",
]

KEYS = ["contact_id", "as_of"]


@dataclass(frozen=True)
class TuneResult:
    """A proposal, its backtest on the test split, and whether it is offered."""

    proposal: Proposal
    current_rules: RuleSet
    backtest: pd.DataFrame  # model x metric on test
    volumes: pd.DataFrame  # rows at or above each band edge / threshold on test
    offered: bool
    reason: str
    gap_closed: float
    diff: str
    fit_rows: int
    test_rows: int
    scores: pd.DataFrame  # keys, split, label, current, proposed, learned scores (all rows)
    backtest_valid: pd.DataFrame | None = None  # the same on valid (the learned model early-stopped there)
    gain: float = float("nan")  # proposed - current test ROC-AUC
    gain_interval: tuple[float, float] = (float("nan"), float("nan"))  # its paired bootstrap interval
    walk_forward: pd.DataFrame = field(default_factory=pd.DataFrame)  # per earlier cut-off: current, proposed, gain
    horizon_days: float | None = None  # the label window judged on (the report says whose conversions)

    def summary(self) -> dict:
        """JSON-ready figures."""
        table = self.backtest.set_index("model")
        return {
            "offered": self.offered, "reason": self.reason, "gap_closed": self.gap_closed,
            "gain": self.gain, "gain_interval": list(self.gain_interval),
            "walk_forward": self.walk_forward.assign(as_of=self.walk_forward["as_of"].astype(str)).to_dict(orient="records")
            if len(self.walk_forward) else [],
            "fit_rows": self.fit_rows, "test_rows": self.test_rows,
            "test": {m: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for m, row in table.iterrows()},
            "valid": None if self.backtest_valid is None else {
                m: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
                for m, row in self.backtest_valid.set_index("model").iterrows()},
            "volumes": self.volumes.to_dict(orient="records"),
            "k_points_per_logodds": self.proposal.k_points_per_logodds,
            "changes": self.proposal.changes.to_dict(orient="records"),
            "out_of_reach": self.proposal.out_of_reach.to_dict(orient="records"),
        }


def proposed_raw_points(unit_raw: pd.DataFrame, proposal: Proposal) -> pd.DataFrame:
    """Uncapped raw points of every proposed activity, from the candidates' unit columns.

    ``points x weight x unit raw`` is exactly what the engine sums for the same shape (the
    per-event amount is linear in ``points x weight``); the cap is applied by ``score_frame``.
    """
    out = unit_raw[KEYS].copy()
    for activity in proposal.rules.activities:
        column, _ = proposal.shapes[activity.name]
        out[f"points__{activity.name}"] = activity.points * activity.weight * unit_raw[column].to_numpy(dtype="float64")
    return out


def _attributes(ts: TrainingSet, frame: pd.DataFrame) -> pd.DataFrame | None:
    if ts.contacts is None:
        return None
    # each row's attribute version when the training set read the attribute history, else the latest
    return contacts_aligned(ts.contacts, frame).reset_index(drop=True)


@dataclass(frozen=True)
class TuneData:
    """Everything a proposal is fitted and judged on (reusable to try several :class:`TuneConfig`)."""

    training: TrainingSet
    unit_raw: pd.DataFrame  # keys + one uncapped per-unit column per candidate, aligned with training.frame
    candidates: list
    fitted: np.ndarray  # positions of the train/valid rows the SHAP values were computed on
    explanation: object  # ScoreExplanation of the fitted rows
    learned: pd.DataFrame  # probability, learned_score of every row


def prepare_tune_data(
    ws: Workspace,
    config: TrainConfig,
    rules: RuleSet,
    scorer,
    tune_config: TuneConfig = TuneConfig(),
    *,
    fit_rows: int = 40_000,
    seed: int = 0,
    step: Callable[[str], None] = lambda _: None,
) -> TuneData:
    """The training set of ``config``, candidate rule columns and SHAP values of train/valid rows.

    The training set is assembled as ``propensity train`` does (same grid, labels and splits),
    with the features built as ``scorer`` was trained.
    """
    con = ws.ibis_connection()
    has_contacts = bool(ws.counts().get("contacts", 0))
    feature_config = FeatureConfig.of_model(scorer.feature_config).model_copy(
        update={"event_types": tuple(scorer.event_types)})
    step("assemble the training set")
    events = con.table("events")
    ts = assemble_training_set(
        con, config, rules, feature_config, events=events,
        contacts=con.table("contacts") if has_contacts else None, outcomes=ws.table("outcomes"),
    )
    frame = ts.frame
    if not (frame["split"] == "test").any():
        raise ValueError("the training config leaves no test rows: the proposal could not be judged")

    step("compute candidate rule shapes")
    candidates = candidate_rules(
        rules, tuple(scorer.event_types), half_lives=tune_config.half_lives, new_expiries=tune_config.new_expiries,
        value_weighted=tuple(feature_config.value_weighted_types), reshape=tune_config.reshape,
        new_rules=tune_config.new_rules, reshape_expiries=tune_config.reshape_expiries,
    )
    unit_rules = rules.model_copy(update={"activities": tuple(c.activity for c in candidates), "fit": ()})
    spine = con.create_table("_tune_spine", frame[KEYS], temp=True, overwrite=True)
    unit = activity_points(events, spine, unit_rules).execute()
    unit["as_of"] = pd.to_datetime(unit["as_of"]).astype("datetime64[us]")
    unit = frame[KEYS].merge(unit, on=KEYS, how="left", validate="one_to_one")
    unit.columns = [c.removeprefix("points__") for c in unit.columns]

    step("SHAP values of the learned model")
    fitted = np.flatnonzero(frame["split"].isin(["train", "valid"]).to_numpy())
    if len(fitted) > fit_rows:
        fitted = np.sort(np.random.default_rng(seed).choice(fitted, fit_rows, replace=False))
    explanation = explain_contacts(scorer, frame.iloc[fitted].reset_index(drop=True), method="pred_contrib",
                                   with_facts=False)
    learned = scorer.score(frame[scorer.feature_names])
    return TuneData(training=ts, unit_raw=unit, candidates=candidates, fitted=fitted, explanation=explanation,
                    learned=learned)


def evaluate_proposal(
    data: TuneData, rules: RuleSet, tune_config: TuneConfig = TuneConfig(), *, top_fraction: float = 0.1
) -> TuneResult:
    """Propose rules from ``data`` (train/valid SHAP values) and backtest them on the test rows.

    The proposal is offered only when the paired bootstrap interval of its test ROC-AUC gain
    lies above zero and it does not lose on most earlier cut-offs (:mod:`propensity.pipelines.tune.gate`).
    """
    ts, frame, fitted = data.training, data.training.frame, data.fitted
    fit_frame = frame.iloc[fitted].reset_index(drop=True)
    # propose_rules itself keeps to tune_config.reshape and .new_rules, whatever the candidates
    proposal = propose_rules(
        rules, data.explanation.logodds, data.explanation.groups.kinds,
        data.unit_raw.iloc[fitted].reset_index(drop=True), data.candidates, _attributes(ts, fit_frame),
        fit_frame["points"].to_numpy(dtype="float64"), tune_config,
    )
    proposed = score_frame(proposed_raw_points(data.unit_raw, proposal), ts.contacts, proposal.rules)
    scores = frame[[*KEYS, "split", "label"]].assign(
        current=frame["rule_score"].to_numpy(), current_points=frame["points"].to_numpy(),
        proposed=proposed["rule_score"].to_numpy(), proposed_points=proposed["points"].to_numpy(),
        learned=data.learned["learned_score"].to_numpy(), probability=data.learned["probability"].to_numpy(),
    )
    valid = scores[scores["split"] == "valid"]
    valid_table = backtest_table(valid["label"].to_numpy(), {
        "current rules": valid["current"].to_numpy(), "proposed rules": valid["proposed"].to_numpy(),
        "learned model": valid["probability"].to_numpy()}, top_fraction=top_fraction)
    test = scores[scores["split"] == "test"]
    # the learned model is ranked by its probability: its 0-5 map can tie distinct probabilities
    table = backtest_table(test["label"].to_numpy(), {
        "current rules": test["current"].to_numpy(), "proposed rules": test["proposed"].to_numpy(),
        "learned model": test["probability"].to_numpy()}, top_fraction=top_fraction)
    volumes = band_volumes(rules, {"current rules": test["current"].to_numpy(),
                                   "proposed rules": test["proposed"].to_numpy(),
                                   "learned model": test["learned"].to_numpy()},
                           {"current rules": test["current_points"].to_numpy(),
                            "proposed rules": test["proposed_points"].to_numpy()})
    auc = table.set_index("model")["roc_auc"]
    closed = gap_closed(auc["current rules"], auc["proposed rules"], auc["learned model"])
    decision = decide_offer(scores, n_boot=tune_config.n_boot, alpha=tune_config.alpha, seed=tune_config.seed)
    reason = (f"{decision.reason} (test ROC-AUC {auc['proposed rules']:.4f} vs current {auc['current rules']:.4f}, "
              f"learned {auc['learned model']:.4f})")
    proposal = _with_test_evidence(proposal, data, np.flatnonzero((scores["split"] == "test").to_numpy()))
    return TuneResult(
        proposal=proposal, current_rules=rules, backtest=table, volumes=volumes, offered=decision.offered,
        reason=reason, gap_closed=closed, diff=rules_diff(rules, proposal.rules), fit_rows=len(fitted),
        test_rows=len(test), scores=scores, backtest_valid=valid_table, gain=decision.gain,
        gain_interval=decision.interval, walk_forward=decision.walk_forward,
    )


def _with_test_evidence(proposal: Proposal, data: TuneData, test_rows: np.ndarray) -> Proposal:
    """Each change's note ends with the test ROC-AUC of its rule alone (its own points, as scored)."""
    frame = data.training.frame
    labels = frame["label"].to_numpy(dtype="int64")[test_rows]
    if not 0 < labels.sum() < len(labels):
        return proposal
    raw = proposed_raw_points(data.unit_raw.iloc[test_rows].reset_index(drop=True), proposal)
    attributes = _attributes(data.training, frame.iloc[test_rows].reset_index(drop=True))
    alone = {}
    for activity in proposal.rules.activities:
        values = raw[f"points__{activity.name}"].to_numpy(dtype="float64")
        alone[activity.name] = cap_values(values, activity.cap) if activity.cap is not None else values
    for criterion in proposal.rules.fit:
        column = (attributes[criterion.attribute] if attributes is not None and criterion.attribute in attributes
                  else pd.Series([None] * len(labels)))
        alone[criterion.name] = criterion.points * criterion_matches(criterion, column.reset_index(drop=True))
    from sklearn.metrics import roc_auc_score

    changes = proposal.changes.copy()
    aucs = [float(roc_auc_score(labels, alone[r])) if r in alone and np.ptp(alone[r]) > 0 else float("nan")
            for r in changes["rule"]]
    changes["test_auc_alone"] = aucs
    changes["note"] = [note + ("; no test row scores differently by this rule alone" if np.isnan(a)
                               else f"; test AUC of this rule alone {a:.2f}")
                       for note, a in zip(changes["note"], aucs)]
    return replace(proposal, changes=changes)


def tune_rules(
    ws: Workspace,
    config: TrainConfig,
    rules: RuleSet,
    scorer,
    tune_config: TuneConfig = TuneConfig(),
    *,
    fit_rows: int = 40_000,
    seed: int = 0,
    top_fraction: float = 0.1,
    step: Callable[[str], None] = lambda _: None,
) -> TuneResult:
    """Propose rules from ``scorer``'s SHAP values and backtest them on the test split.

    :func:`prepare_tune_data` then :func:`evaluate_proposal`. The proposal is fitted on (a
    sample of at most ``fit_rows``) train and valid rows and uses the learned model's SHAP
    values, not the labels; it is judged on the test rows.
    """
    data = prepare_tune_data(ws, config, rules, scorer, tune_config, fit_rows=fit_rows, seed=seed, step=step)
    step("propose rules and backtest on the test split")
    result = evaluate_proposal(data, rules, tune_config, top_fraction=top_fraction)
    return replace(result, horizon_days=config.horizon_days)


def check_proposal_path(out: Path, live: Path | None = None) -> None:
    """Refuse a destination that is the live rules file, or any existing rules file that is not a proposal."""
    out = Path(out)
    if live is not None and out.resolve() == Path(live).resolve():
        raise ValueError(f"--out {out} is the live rules file; the proposal never overwrites it")
    if out.exists():
        from propensity.pipelines.rules.config import RulesConfigError, load_rules

        try:
            existing = load_rules(out)
        except RulesConfigError:
            existing = None
        if existing is not None and not existing.name.endswith("_proposed"):
            raise ValueError(f"{out} holds live rules ({existing.name!r}); write the proposal to another file")


def write_proposal(result: TuneResult, out: Path, *, live: Path | None = None, force: bool = False) -> Path | None:
    """Write ``rules.proposed.yaml`` (and its diff, ``.diff``, and its report with the evidence,
    ``.md``, next to it) when offered or forced.

    Never writes over the live rules (see :func:`check_proposal_path`).
    """
    if not (result.offered or force):
        return None
    out = Path(out)
    check_proposal_path(out, live)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_rules(result.proposal.rules), encoding="utf-8")
    out.with_suffix(".diff").write_text(result.diff, encoding="utf-8")
    from propensity.pipelines.tune.report import proposal_report

    out.with_suffix(".md").write_text(proposal_report(result), encoding="utf-8")
    return out
