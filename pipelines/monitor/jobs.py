"""The I/O edge of `propensity monitor`: from a workspace to the measured cut-offs and their alerts.

What is reused, not rewritten: the training config's own spine, labels and split (``plan_rows``)
choose the reference (the champion's test cut-off) and the valid rows that calibrate the rules'
and the learned points' probabilities, exactly as `propensity compare` does; rule scores come from
``compare.evaluation.rule_scores``, the champion's input from ``features_as_trained``, the metrics
from ``compare_scores`` (through :func:`~propensity.pipelines.monitor.measure.measure_cutoff`).

The cut-offs measured are ``first, first + step, ...`` (default: one step after the reference)
whose label windows ``[as_of, as_of + horizon)`` have closed by the monitor's ``data_end`` (the
latest data, not the training config's). Their labels follow the training config (horizon,
``recurring``, qualifying outcomes), so every number means what it meant at training.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from propensity.features.spine import spine_grid
from propensity.features.store import Workspace
from propensity.pipelines.compare.core import DEFAULT_MODELS
from propensity.pipelines.compare.evaluation import KEYS, EvaluationData, rule_scores
from propensity.pipelines.monitor.alerts import Alert, cutoff_alerts
from propensity.pipelines.monitor.config import MonitorConfig
from propensity.pipelines.monitor.drift import (
    drift_profile,
    event_type_changes,
    feature_drift,
)
from propensity.pipelines.monitor.history import (
    digest,
    read_history,
    series_key,
    write_history,
)
from propensity.pipelines.monitor.measure import (
    expected_roc_auc,
    measure_cutoff,
    measure_volumes,
)
from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.training.as_trained import features_as_trained
from propensity.pipelines.training.config import TrainConfig
from propensity.pipelines.training.cutoffs import (
    DataEnd,
    label_rows,
    plan_rows,
    resolve_data_end,
)
from propensity.pipelines.training.dataset import spine_frame
from propensity.pipelines.training.fit import score_probability

__all__ = ["MonitorInputs", "MonitorResult", "latest_open", "run_monitor", "schedule"]


@dataclass(frozen=True)
class MonitorInputs:
    """What the application layer resolved: the champion (or None), its rules and learned points."""

    train_config: TrainConfig
    rules: RuleSet
    rules_path: Path
    points: RuleSet | None = None
    points_path: Path | None = None
    scorer: object | None = None  # LearnedScorer of the champion
    model_label: str | None = None  # e.g. "propensity v3"


@dataclass
class MonitorResult:
    """A series (reference + every closed cut-off measured), the alerts derived from it, and notes."""

    series: dict
    alerts: list[Alert]  # over every cut-off, oldest first
    computed: list[str]  # cut-offs measured by this run
    reused: list[str]  # cut-offs read from the history
    notes: list[str] = field(default_factory=list)
    history_path: Path | None = None
    config: MonitorConfig | None = None  # the thresholds the alerts were derived with
    open_cutoff: dict | None = None  # the latest cut-off whose labels are not in yet (volumes, drift)

    @property
    def cutoffs(self) -> list[dict]:
        return [self.series["cutoffs"][k] for k in sorted(self.series["cutoffs"])]

    @property
    def latest(self) -> dict | None:
        cutoffs = self.cutoffs
        return cutoffs[-1] if cutoffs else None

    @property
    def latest_alerts(self) -> list[Alert]:
        """The alerts of the latest closed cut-off and of the open one after it (volumes and drift
        only): what the exit code and webhooks report."""
        latest = [c["as_of"] for c in (self.latest, self.open_cutoff) if c is not None]
        return [a for a in self.alerts if a.as_of in latest]

    def to_dict(self) -> dict:
        return {"meta": self.series["meta"], "reference": self.series["reference"], "cutoffs": self.cutoffs,
                "alerts": [a.to_dict() for a in self.alerts],
                "latest_alerts": [a.to_dict() for a in self.latest_alerts],
                "open_cutoff": self.open_cutoff,
                "computed": self.computed, "reused": self.reused, "notes": self.notes}


def _iso(stamp) -> str:
    return pd.Timestamp(stamp).strftime("%Y-%m-%dT%H:%M:%S")


def schedule(first: dt.datetime, step_days: int, horizon_days: float, data_end: dt.datetime) -> list[pd.Timestamp]:
    """``first, first + step, ...`` whose label windows close by ``data_end`` (pure)."""
    out, at = [], pd.Timestamp(first)
    horizon = pd.Timedelta(days=horizon_days)
    while at + horizon <= pd.Timestamp(data_end):
        out.append(at)
        at += pd.Timedelta(days=step_days)
    return out


def latest_open(first: dt.datetime, step_days: int, horizon_days: float, data_end: dt.datetime) -> pd.Timestamp | None:
    """The last cut-off of the schedule at or before ``data_end`` when its label window is still
    open (its drift and volumes can be measured already), else None (pure)."""
    at, last = pd.Timestamp(first), None
    while at <= pd.Timestamp(data_end):
        last, at = at, at + pd.Timedelta(days=step_days)
    if last is None or last + pd.Timedelta(days=horizon_days) <= pd.Timestamp(data_end):
        return None
    return last


def _models(inputs: MonitorInputs) -> dict[str, tuple[str, str]]:
    names = ["rules"] + (["learned"] if inputs.scorer is not None else []) + (
        ["learned_points"] if inputs.points is not None else [])
    return {name: DEFAULT_MODELS[name] for name in names}


def _event_counts(data: EvaluationData, as_of: pd.Timestamp, days: int) -> dict[str, int]:
    events = data.events
    window = events.filter((events.ts >= as_of - pd.Timedelta(days=days)) & (events.ts < as_of))
    counts = window.group_by("event_type").agg(n=window.count()).execute()
    return {str(t): int(n) for t, n in zip(counts["event_type"], counts["n"], strict=True)}


def _features(data: EvaluationData, rows: pd.DataFrame, scorer, name: str) -> pd.DataFrame:
    spine = data.spine_table(rows, name)
    features = features_as_trained(data.events, spine, scorer, data.contacts, data.contact_history).execute()
    features["as_of"] = pd.to_datetime(features["as_of"]).astype("datetime64[us]")
    return rows[KEYS].merge(features, on=KEYS, how="left", validate="one_to_one")


def _profile(data: EvaluationData, train_rows: pd.DataFrame, scorer, config: MonitorConfig) -> dict:
    rows = train_rows
    if len(rows) > config.drift.reference_rows:
        rows = rows.sample(config.drift.reference_rows, random_state=config.seed)
    features = _features(data, rows.reset_index(drop=True), scorer, "_monitor_reference_spine")
    # the values training saw: the model's categories, then the rare ones it read as missing
    # (training/matrix.learnable_categories), which are not "unseen" at a later cut-off
    categorical = {c: list(dict.fromkeys([*v, *sorted(features[c].dropna().astype(str).unique())]))
                   for c, v in scorer.categories.items() if c in scorer.feature_names}
    numeric = [c for c in scorer.feature_names if c not in categorical]
    profile = drift_profile(features, numeric, categorical, bins=config.drift.bins)
    window_start = pd.Timestamp(train_rows["as_of"].max()) - pd.Timedelta(days=config.drift.event_window_days)
    profile["event_types"] = sorted(scorer.event_types)
    profile["window_start"] = _iso(window_start)
    return profile


def _drift(data: EvaluationData, profile: dict, features: pd.DataFrame, as_of: pd.Timestamp,
           config: MonitorConfig) -> dict:
    table = feature_drift(profile, features)
    counts = _event_counts(data, as_of, config.drift.event_window_days)
    appeared, vanished = event_type_changes(profile["event_types"], counts, config.drift.min_events)
    return {"features": [{k: (None if pd.isna(v) else (round(v, 6) if isinstance(v, float) else v))
                          for k, v in row.items()} for row in table.to_dict(orient="records")],
            # the largest PSI of the features that can alert (ignored ages excluded)
            "psi_max": float(watched.max()) if len(watched := table.loc[~table["feature"].map(config.drift.ignored),
                                                                          "psi"]) else None,
            "appeared": appeared, "vanished": vanished, "event_counts": counts}


def run_monitor(ws: Workspace, inputs: MonitorInputs, config: MonitorConfig | None = None, *,
                history_path: Path | None = None, recompute: bool = False,
                step: Callable[[str], None] = lambda _: None) -> MonitorResult:
    """Measure every closed cut-off not yet in the history, store it, and derive the alerts."""
    config = config or MonitorConfig()
    train_config = inputs.train_config
    history_path = history_path or ws.layout.monitor_history
    notes: list[str] = []
    step("plan the reference cut-off as training did")
    data = EvaluationData.from_workspace(ws)
    planned = plan_rows(spine_frame(data.con, train_config, data.events, data.contacts), data.outcomes,
                        train_config, resolve_data_end(data.con, train_config.data_end))
    reference_cut = pd.Timestamp(planned.rows.loc[planned.rows["split"] == "test", "as_of"].max())
    data_end = resolve_data_end(data.con, config.schedule.data_end)
    first = pd.Timestamp(config.schedule.first) if config.schedule.first else (
        reference_cut + pd.Timedelta(days=config.schedule.step_days))
    cutoffs = schedule(first, config.schedule.step_days, train_config.horizon_days, data_end.value)
    if not cutoffs:
        notes.append(f"no cut-off from {first:%Y-%m-%d} on has a closed {train_config.horizon_days:g}-day label "
                     f"window by {data_end.describe()}: nothing to measure yet")
    models = _models(inputs)
    if train_config.grid is None:
        # never silently a different question: a stored spine (a cohort, e.g. every enrolment on
        # its day 60) is not "every contact known at a weekly cut-off"
        notes.append(f"the champion was trained on the stored spine {train_config.spine!r}; the monitor's weekly "
                     "cut-offs take every contact known at each cut-off, a different population (the reference "
                     "is still the champion's own test cut-off)")
    if inputs.scorer is None:
        notes.append("no registered champion: the rules (and the learned points, when there are any) are measured, "
                     "and no model input drift")

    identity = {
        "model": inputs.model_label, "rules": digest(inputs.rules_path),
        "points": None if inputs.points_path is None else digest(inputs.points_path),
        "horizon_days": train_config.horizon_days, "recurring": train_config.recurring,
        "qualifying": train_config.qualifying_outcomes, "settings": config.measurement_key(),
        "reference": _iso(reference_cut), "models": list(models),
    }
    key = series_key(identity)
    history = read_history(history_path)
    series = history["series"].get(key) if not recompute else None
    if series is None:
        series = {"meta": {"key": key, **identity, "rules_path": str(inputs.rules_path),
                           "points_path": None if inputs.points_path is None else str(inputs.points_path),
                           "bands": [{"name": b.name, "min_score": b.min_score} for b in inputs.rules.bands],
                           "step_days": config.schedule.step_days},
                  "reference": None, "profile": None, "cutoffs": {}}
    wanted = [_iso(c) for c in cutoffs]
    todo = [c for c in cutoffs if _iso(c) not in series["cutoffs"]]
    reused = [c for c in wanted if c in series["cutoffs"]]
    need_reference = series["reference"] is None
    if todo or need_reference:
        _measure(data, inputs, config, planned, reference_cut, todo, need_reference, series, models, data_end.value,
                 step)
    series["meta"]["data_end"] = _iso(data_end.value)
    series["meta"]["updated_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    series["updated_at"] = series["meta"]["updated_at"]
    alerts = [a for k in sorted(series["cutoffs"]) for a in cutoff_alerts(series["reference"], series["cutoffs"][k],
                                                                           config)]
    opened = None
    if (at := latest_open(first, config.schedule.step_days, train_config.horizon_days, data_end.value)) is not None:
        step(f"drift and volumes of the open cut-off {at:%Y-%m-%d}")
        opened = _measure_open(data, inputs, config, series, at)
        if opened is not None:
            alerts += cutoff_alerts(series["reference"], opened, config)
    # kept for the service's gauges; replaced on every run, joins the cut-offs once it has closed
    series["open"] = opened
    history["series"][key] = series
    write_history(history_path, history)
    return MonitorResult(series=series, alerts=alerts, computed=[_iso(c) for c in todo], reused=reused, notes=notes,
                         history_path=history_path, config=config, open_cutoff=opened)


def _measure_open(data: EvaluationData, inputs: MonitorInputs, config: MonitorConfig, series: dict,
                  as_of: pd.Timestamp) -> dict | None:
    """The latest cut-off whose labels are not in yet: band volumes, rule coverage and drift (not
    stored: measured again on every run until its window closes and it joins the history)."""
    train_config = inputs.train_config
    spine = spine_grid(data.events, as_of.to_pydatetime(), as_of.to_pydatetime(), config.schedule.step_days,
                       data.contacts).select("contact_id", "as_of").execute()
    spine["as_of"] = pd.to_datetime(spine["as_of"]).astype("datetime64[us]")
    spine = spine.drop_duplicates().sort_values(KEYS).reset_index(drop=True)
    try:
        # the rows training would keep (contacts converted before the cut-off left out when
        # recurring is false); the labels of a window still open are not used
        rows = label_rows(spine, data.outcomes, train_config,
                          _data_end_of(as_of + pd.Timedelta(days=train_config.horizon_days)), explain=False)[KEYS]
    except ValueError:
        return None
    if rows.empty:
        return None
    rows = rows.reset_index(drop=True)
    spine_table = data.spine_table(rows, "_monitor_open_spine")
    scored = rule_scores(data, rows, inputs.rules, spine_table)
    frame = rows.assign(rule_score=scored["rule_score"].to_numpy())
    scores = {"rules": "rule_score"}
    estimate = None
    if inputs.scorer is not None:
        features = _features(data, rows, inputs.scorer, "_monitor_open_model_spine")
        learned = inputs.scorer.score(features)
        frame["learned_score"] = learned["learned_score"].to_numpy()
        scores["learned"] = "learned_score"
        estimate = {"learned": {"estimated_roc_auc": expected_roc_auc(learned["probability"].to_numpy(),
                                                                      frame["learned_score"].to_numpy()),
                                "predicted": float(learned["probability"].sum())}}
    if inputs.points is not None:
        frame["points_score"] = rule_scores(data, rows, inputs.points, spine_table)["rule_score"].to_numpy()
        scores["learned_points"] = "points_score"
    points = scored[[c for c in scored.columns if c.startswith("points__")]].reset_index(drop=True)
    record = {"as_of": _iso(as_of), "label_end": _iso(as_of + pd.Timedelta(days=train_config.horizon_days)),
              "open": True, **measure_volumes(frame, inputs.rules.bands, scores, points)}
    if estimate is not None:
        # no labels yet: what the champion's own probabilities say its ranking will be (and how
        # many conversions to expect), if it is still calibrated
        record["estimated"] = estimate
    if inputs.scorer is not None and series.get("profile") is not None:
        record["drift"] = _drift(data, series["profile"], features, as_of, config)
    return record


def _measure(data: EvaluationData, inputs: MonitorInputs, config: MonitorConfig, planned, reference_cut, todo,
             need_reference: bool, series: dict, models, data_end, step) -> None:
    """Score the valid rows (calibration), the reference and the new cut-offs; fill ``series``."""
    train_config = inputs.train_config
    rows = planned.rows
    valid = rows[rows["split"] == "valid"][[*KEYS, "label"]].assign(part="valid")
    reference = rows[(rows["split"] == "test") & (rows["as_of"] == reference_cut)][[*KEYS, "label"]].assign(
        part="reference")
    parts = [valid, reference] if need_reference else [valid]
    if todo:
        step(f"label {len(todo)} new cut-off(s)")
        spine = spine_grid(data.events, min(todo).to_pydatetime(), max(todo).to_pydatetime(),
                           config.schedule.step_days, data.contacts).select("contact_id", "as_of").execute()
        spine["as_of"] = pd.to_datetime(spine["as_of"]).astype("datetime64[us]")
        spine = spine[spine["as_of"].isin(todo)].drop_duplicates().sort_values(KEYS).reset_index(drop=True)
        labelled = label_rows(spine, data.outcomes, train_config,
                              _data_end_of(data_end), explain=False) if len(spine) else spine.assign(label=0)
        parts.append(labelled[[*KEYS, "label"]].assign(part="monitor"))
    frame = pd.concat(parts, ignore_index=True)
    frame["split"] = frame["part"].map({"valid": "valid"}).fillna("test")
    step(f"score {len(frame):,} rows with the rules and the learned points")
    spine_table = data.spine_table(frame, "_monitor_spine")
    scored = rule_scores(data, frame, inputs.rules, spine_table)
    frame["rule_score"] = scored["rule_score"].to_numpy()
    point_columns = [c for c in scored.columns if c.startswith("points__")]
    points = scored[point_columns].reset_index(drop=True)
    # calibrated on the training config's valid rows, as compare and train do: never on a monitored
    # cut-off, or a change of calibration would be fitted away
    frame["rule_probability"] = score_probability(frame, "rule_score")
    if inputs.points is not None:
        frame["points_score"] = rule_scores(data, frame, inputs.points, spine_table)["rule_score"].to_numpy()
        frame["points_probability"] = score_probability(frame, "points_score")
    measured = frame[frame["part"] != "valid"]
    features = None
    if inputs.scorer is not None:
        step("features as the champion was trained, and its scores")
        features = _features(data, measured[KEYS].reset_index(drop=True), inputs.scorer, "_monitor_model_spine")
        scores = inputs.scorer.score(features)
        frame.loc[measured.index, "probability"] = scores["probability"].to_numpy()
        frame.loc[measured.index, "learned_score"] = scores["learned_score"].to_numpy()
        features.index = measured.index
        if series.get("profile") is None:
            step("the drift reference: the champion's training rows")
            series["profile"] = _profile(data, rows[rows["split"] == "train"], inputs.scorer, config)

    def record(mask, as_of) -> dict:
        sub = frame[mask]
        out = {"as_of": _iso(as_of), "label_end": _iso(as_of + pd.Timedelta(days=train_config.horizon_days))}
        if sub.empty or not 0 < sub["label"].sum() < len(sub):
            return out | {"n": len(sub), "positives": int(sub["label"].sum()), "models": {}, "bands": {},
                          "rules": [], "top_k": [], "note": "a single class: nothing can be ranked"}
        out |= measure_cutoff(sub.reset_index(drop=True), inputs.rules.bands, models,
                              top_k_percent=config.top_k_percent, n_boot=config.n_boot, alpha=config.alpha,
                              seed=config.seed, rule_points=points[mask.to_numpy()].reset_index(drop=True))
        if "learned" in out["models"]:
            # the label-free estimate beside the realised ROC-AUC: how far to trust it on the open cut-off
            out["models"]["learned"]["estimated_roc_auc"] = expected_roc_auc(sub["probability"].to_numpy(),
                                                                             sub["learned_score"].to_numpy())
        if features is not None and series.get("profile") is not None:
            out["drift"] = _drift(data, series["profile"], features.loc[sub.index], pd.Timestamp(as_of), config)
        return out

    if need_reference:
        step("measure the reference cut-off")
        series["reference"] = record(frame["part"] == "reference", reference_cut)
    for cutoff in todo:
        step(f"measure {cutoff:%Y-%m-%d}")
        series["cutoffs"][_iso(cutoff)] = record((frame["part"] == "monitor") & (frame["as_of"] == cutoff), cutoff)


def _data_end_of(value) -> DataEnd:
    return DataEnd(value=pd.Timestamp(value).to_pydatetime())
