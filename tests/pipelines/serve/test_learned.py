"""The service's learned features equal the batch build's, and its learned score `propensity score`'s."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from types import SimpleNamespace

import ibis
import numpy as np
import pandas as pd
import pytest

from propensity.features.build import build_features, feature_columns
from propensity.features.config import FeatureConfig
from propensity.pipelines.serve.feature_plan import FeaturePlan
from propensity.pipelines.serve.mirror import EventMirror

START = datetime(2025, 3, 1)
TYPES = ["Page View", "trial_started", "purchase", "email_open", "noise"]  # "noise": not a feature type
NAMED = ("Page View", "email_open", "purchase", "trial_started")
CONFIG = FeatureConfig(
    windows_days=(3, 10, 40), half_lives_days=(2.0, 7.5), value_weighted_types=("purchase",),
    event_types=NAMED, active_days_windows=(5, 12), momentum_days=4,
    monetary_types=("purchase", "Page View"),  # Page View: values all 1, so frequency without amounts
)
ACCOUNTS = ["a0", "a1", "a2", None]


def random_world(seed: int, n_events: int = 1500, n_contacts: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and contacts that exercise every family: accounts from both sources, late members."""
    rng = random.Random(seed)
    events = []
    for i in range(n_events):
        kind = rng.choice(TYPES)
        events.append({
            "event_id": f"e{i}",
            "contact_id": f"c{rng.randrange(n_contacts)}",
            "event_type": kind,
            # whole days too, so that events sit exactly on window edges
            "ts": START + (timedelta(days=rng.randrange(60)) if rng.random() < 0.1
                           else timedelta(microseconds=rng.randrange(60 * 86_400_000_000))),
            "value": round(rng.uniform(0, 300), 2) if kind == "purchase" else 1.0,
            "account_id": rng.choice(ACCOUNTS),
        })
    contacts = []
    for i in range(0, n_contacts + 5, 2):  # every other contact, and some without events
        contacts.append({
            "contact_id": f"c{i}",
            "account_id": rng.choice(ACCOUNTS),
            "created_at": rng.choice([None, START + timedelta(days=rng.uniform(0, 80))]),
            "industry": rng.choice(["software", "retail", None]),
            "size": rng.choice([10.0, 250.0, None]),
        })
    frame = pd.DataFrame(events)
    frame["ts"] = frame["ts"].astype("datetime64[us]")
    people = pd.DataFrame(contacts)
    people["created_at"] = pd.to_datetime(people["created_at"]).astype("datetime64[us]")
    people["industry"] = people["industry"].astype("string")
    return frame, people


def batch_features(events: pd.DataFrame, contacts: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    con = ibis.duckdb.connect()
    ids = sorted(set(events["contact_id"]) | set(contacts["contact_id"]))
    spine = pd.DataFrame({"contact_id": ids, "as_of": pd.Series([as_of] * len(ids)).astype("datetime64[us]")})
    expr = build_features(con.create_table("events", events), con.create_table("spine", spine), CONFIG,
                          contacts=con.create_table("contacts", contacts))
    return expr.execute().set_index("contact_id").sort_index()


def mirror_of(events: pd.DataFrame, contacts: pd.DataFrame, plan: FeaturePlan) -> EventMirror:
    mirror = EventMirror(plan)
    for row in contacts.itertuples(index=False):
        created = None if pd.isna(row.created_at) else row.created_at.to_pydatetime()
        traits = {k: getattr(row, k) for k in ("industry", "size") if not pd.isna(getattr(row, k))}
        mirror.update_contact(row.contact_id, _none(row.account_id), created, traits)
    for row in events.sample(frac=1.0, random_state=0).itertuples(index=False):  # any arrival order
        mirror.add_event(row.contact_id, row.ts.to_pydatetime(), row.event_type, row.value, _none(row.account_id))
    return mirror


def _none(value):
    return None if pd.isna(value) else value


def plan_for(columns: list[str]) -> FeaturePlan:
    scorer = SimpleNamespace(feature_config=CONFIG.model_dump(mode="json"), event_types=NAMED,
                             feature_names=columns, categories={"industry": ["retail", "software"]})
    return FeaturePlan.from_scorer(scorer)


@pytest.mark.parametrize(("seed", "seconds"), [(1, 3_607), (2, 7_214), (4, 0)])  # 0: a midnight
def test_mirror_features_equal_build_features_on_random_events(seed, seconds):
    events, contacts = random_world(seed)
    as_of = START + timedelta(days=45, seconds=seconds)  # mid-history: later events are ignored
    expected = batch_features(events, contacts, as_of)
    columns = feature_columns(expected)
    plan = plan_for(columns)
    assert set(plan.attributes) == {"industry", "size"}
    got = mirror_of(events, contacts, plan).feature_frame(list(expected.index), as_of).set_index("contact_id")
    assert list(got.columns[2:]) == columns  # same names, same order
    assert (got["account_id"].fillna("-") == expected["account_id"].fillna("-")).all()
    for column in columns:
        want, have = expected[column], got[column]
        if column == "industry":
            assert (have.fillna("-").astype(str) == want.fillna("-").astype(str)).all()
            continue
        np.testing.assert_allclose(have.to_numpy("float64"), want.to_numpy("float64", na_value=np.nan),
                                   rtol=1e-9, atol=1e-9, err_msg=column)
    # the data exercise what the test claims
    assert expected["account__contacts"].nunique() > 2
    assert expected["page_view__active_days_12d"].max() > 1
    assert expected["value__max_10d"].isna().any() and expected["value__max_10d"].notna().any()
    assert (expected["all__momentum_4d"] != 0).any()
    for family in ("__count_total", "__days_since_first", "__mean_gap_days", "__trend_3d_40d",
                   "__rfm_frequency", "__rfm_recency_days", "__rfm_tenure_days", "__rfm_monetary",
                   "__value_total"):
        values = expected[[c for c in columns if c.endswith(family)]]
        assert values.notna().any().any() and values.isna().any().any() | (values == 0).any().any(), family
    assert (expected["purchase__rfm_monetary"] > 0).any() and (expected["purchase__rfm_frequency"] > 0).any()


@pytest.mark.parametrize("seed", [3])
def test_a_mirror_that_folds_old_events_gives_every_contact_the_features_of_one_that_keeps_them(seed):
    events, contacts = random_world(seed, n_events=2500)
    now = START + timedelta(days=75, seconds=4_321)  # horizon 41 days: events before day 34 (2025-04-04) fold
    columns = feature_columns(batch_features(events.head(5), contacts, now))
    plan = plan_for(columns)
    keeps = mirror_of(events, contacts, plan)
    folds = EventMirror(plan)
    for row in contacts.itertuples(index=False):
        created = None if pd.isna(row.created_at) else row.created_at.to_pydatetime()
        traits = {k: getattr(row, k) for k in ("industry", "size") if not pd.isna(getattr(row, k))}
        folds.update_contact(row.contact_id, _none(row.account_id), created, traits)
    shuffled = list(events.sample(frac=1.0, random_state=seed).itertuples(index=False))
    for i, row in enumerate(shuffled):
        folds.add_event(row.contact_id, row.ts.to_pydatetime(), row.event_type, row.value, _none(row.account_id))
        if i == len(shuffled) // 2:  # half way, a few contacts at a time; later old events fold on arrival
            while folds.fold(now, limit=3):
                pass
    while folds.fold(now, limit=3):
        pass
    cut = folds.earliest_as_of - timedelta(days=41)
    assert cut == datetime(2025, 4, 4)  # the UTC midnight at or before now - 41 days
    live = sum(len(log.ts) for log in folds._logs.values())
    assert live == int((events["ts"] >= cut).sum()) < len(events) / 2  # only the horizon's events stay
    ids = sorted(set(events["contact_id"]) | set(contacts["contact_id"]))
    for as_of in (now, now + timedelta(days=3, seconds=5), START + timedelta(days=200)):
        want = keeps.feature_frame(ids, as_of).set_index("contact_id")
        got = folds.feature_frame(ids, as_of).set_index("contact_id")
        assert (got["account_id"].fillna("-") == want["account_id"].fillna("-")).all()
        for column in columns:
            if column == "industry":
                continue
            np.testing.assert_allclose(got[column].to_numpy("float64"), want[column].to_numpy("float64"),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{column} at {as_of}")
    # and the same as the batch build, where the folded events are read one by one
    expected = batch_features(events, contacts, now)
    got = folds.feature_frame(list(expected.index), now).set_index("contact_id")
    for column in ("purchase__rfm_monetary", "page_view__count_total", "tenure_days", "account__contacts",
                   "email_open__decayed_7.5d", "purchase__days_since_first"):
        np.testing.assert_allclose(got[column].to_numpy("float64"), expected[column].to_numpy("float64"),
                                   rtol=1e-9, atol=1e-12, err_msg=column)
    with pytest.raises(ValueError, match="before 2025-05-15T00:00:00: the learned features at that time"):
        folds.feature_frame(ids[:2], now - timedelta(days=2))


def test_a_model_with_auto_or_unknown_features_is_refused_by_name():
    scorer = SimpleNamespace(feature_config=CONFIG.model_copy(update={"windows_days": "auto"}).model_dump(mode="json"),
                             event_types=NAMED, feature_names=["page_view__count_3d"], categories={})
    with pytest.raises(ValueError, match=r"leaves \['windows_days'\] on `auto`"):
        FeaturePlan.from_scorer(scorer)
    # a family this service does not compute must not read as an (always missing) trait
    scorer = SimpleNamespace(feature_config=CONFIG.model_dump(mode="json"), event_types=NAMED,
                             feature_names=["page_view__count_3d", "page_view__entropy_7d", "industry"],
                             categories={})
    with pytest.raises(ValueError, match=r"page_view__entropy_7d"):
        FeaturePlan.from_scorer(scorer)
    # the purchase-history family (features/purchase_history.py) is batch-only: refused, naming it
    history = CONFIG.model_copy(update={"purchase_history_features": True})
    scorer = SimpleNamespace(feature_config=history.model_dump(mode="json"), event_types=NAMED,
                             feature_names=["page_view__count_since_last_purchase"], categories={})
    with pytest.raises(ValueError, match=r"purchase-history features.*purchase_history_features: false"):
        FeaturePlan.from_scorer(scorer)
    # value summaries (features/value_stats.py) are not mirrored yet: said, not NaN
    with_stats = CONFIG.model_copy(update={"value_stats_types": (NAMED[0],)}).model_dump(mode="json")
    scorer = SimpleNamespace(feature_config=with_stats, event_types=NAMED, categories={},
                             feature_names=["page_view__count_3d", "page_view__value_mean"])
    with pytest.raises(ValueError, match=r"value summaries per event type .* service does not compute yet"):
        FeaturePlan.from_scorer(scorer)


def test_future_events_do_not_move_the_features():
    events, contacts = random_world(5, n_events=300, n_contacts=10)
    as_of = START + timedelta(days=30)
    plan = plan_for(feature_columns(batch_features(events.head(5), contacts, as_of)))
    mirror = mirror_of(events, contacts, plan)
    before = mirror.feature_frame(["c1", "c2"], as_of)
    mirror.add_event("c1", as_of, "trial_started", 1.0, "a0")  # ts == as_of: not before it
    mirror.add_event("c2", as_of + timedelta(days=1), "purchase", 99.0, "a1")
    pd.testing.assert_frame_equal(mirror.feature_frame(["c1", "c2"], as_of), before)


# --------------------------------------------------------------------------- end to end


def _register_champion(workspace, events: pd.DataFrame, contacts: pd.DataFrame) -> None:
    """A real LightGBM + calibration, trained on batch features, registered as `champion`."""
    import lightgbm as lgb
    import mlflow
    from mlflow.tracking import MlflowClient

    from propensity.pipelines.training.calibration import ProbabilityCalibrator, ScoreMapper
    from propensity.pipelines.training.model import prepare_matrix
    from propensity.pipelines.training.scorer import LearnedScorer
    from propensity.pipelines.training.tracking import configure_tracking, log_scorer_model

    frame = pd.concat([batch_features(events, contacts, START + timedelta(days=d)) for d in (25, 40)])
    names = feature_columns(frame)
    rng = np.random.default_rng(0)
    signal = frame["page_view__count_10d"] + frame["purchase__decayed_7.5d"] / 50 + frame["account__count_10d"] / 20
    label = (signal + rng.normal(0, 1, len(frame)) > signal.median()).astype(int).to_numpy()
    matrix, categories = prepare_matrix(frame, names)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5,
                         "seed": 0}, lgb.Dataset(matrix, label), num_boost_round=25)
    raw = booster.predict(matrix)
    calibrator = ProbabilityCalibrator(method="platt").fit(raw, label)
    mapper = ScoreMapper(method="quantile").fit(calibrator.transform(raw), None, rng.uniform(0, 5, len(raw)))
    scorer = LearnedScorer(booster=booster, feature_names=names, categories=categories, calibrator=calibrator,
                           mapper=mapper, best_iteration=booster.current_iteration(),
                           feature_config=CONFIG.model_dump(mode="json"), event_types=NAMED,
                           metadata={"bands": [["cold", 0.0], ["warm", 2.0], ["hot", 3.5]]})
    configure_tracking(workspace, None, "propensity")
    with mlflow.start_run():
        _, version = log_scorer_model(scorer, frame, "propensity")
    MlflowClient().set_registered_model_alias("propensity", "champion", version)


def _calls(events: pd.DataFrame, contacts: pd.DataFrame, clock: datetime) -> list[dict]:
    """Segment calls carrying the world: identify (traits, company, createdAt), then track."""
    calls = []
    for row in contacts.itertuples(index=False):
        traits = {k: getattr(row, k) for k in ("industry", "size") if not pd.isna(getattr(row, k))}
        if not pd.isna(row.account_id):
            traits["company_id"] = row.account_id
        if not pd.isna(row.created_at) and row.created_at <= clock:
            traits["createdAt"] = row.created_at.isoformat() + "Z"
        calls.append({"type": "identify", "userId": row.contact_id, "traits": traits})
    for row in events.itertuples(index=False):
        if row.ts > clock + timedelta(hours=20):
            continue  # the service refuses timestamps over a day ahead; a few later ones stay in
        call = {"type": "track", "userId": row.contact_id, "event": row.event_type, "messageId": row.event_id,
                "timestamp": row.ts.isoformat() + "Z", "properties": {"value": row.value}}
        if not pd.isna(row.account_id):
            call["context"] = {"groupId": row.account_id}
        calls.append(call)
    return calls


def _copy_store_to_workspace(service_url: str, workspace) -> None:
    """The service's stored events and contacts become the workspace's tables, as ingest leaves them."""
    import json

    import sqlalchemy as sa

    from propensity.features.store import Workspace

    engine = sa.create_engine(service_url)
    with engine.connect() as conn:
        events = pd.read_sql("SELECT event_id, contact_id, event_type, ts, value, account_id, properties "
                             "FROM events", conn)
        people = pd.read_sql("SELECT contact_id, account_id, created_at, traits FROM contacts", conn)
    engine.dispose()
    traits = pd.DataFrame([json.loads(t) for t in people.pop("traits")], index=people.index)
    people = people.join(traits.reindex(columns=["industry", "size"]))
    people["industry"] = people["industry"].astype("string")
    people["size"] = people["size"].astype("float64")
    for frame, column in ((events, "ts"), (people, "created_at")):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    con = Workspace(workspace).ibis_connection()
    con.create_table("events", events, overwrite=True)
    con.create_table("contacts", people, overwrite=True)
    con.disconnect()


@pytest.mark.slow
def test_served_learned_score_equals_propensity_score_with_the_champion(tmp_path):
    import httpx

    from propensity.features.store import Workspace
    from propensity.pipelines.jobs import SpineChoice, run_model_scores
    from propensity.pipelines.rules import load_rules
    from propensity.pipelines.serve.app import ServiceSettings
    from propensity.pipelines.project import Project
    from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

    workspace = tmp_path / "ws"
    events, contacts = random_world(7, n_events=700, n_contacts=30)
    _register_champion(workspace, events, contacts)
    learned = Project(workspace).model("champion", "propensity", trusted_only=True)  # as `serve` loads it
    scorer, label = learned.scorer, f"propensity@champion v{learned.version}"
    clock = START + timedelta(days=46)
    as_of = clock + timedelta(hours=5, microseconds=17)
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    settings = ServiceSettings(database_url=url, rules=load_rules(ROOT / "configs" / "rules" / "saas.yaml"),
                               write_keys=frozenset({WRITE_KEY}), model=scorer, model_label=label)
    auth = (WRITE_KEY, "")
    with running_server(settings, clock=lambda: clock) as (base, _app), httpx.Client(auth=auth, timeout=60) as http:
        answer = http.post(f"{base}/v1/batch", json={"batch": _calls(events, contacts, clock)}).json()
        assert answer["success"] and answer["stored"] > 400
        first = next(iter(answer["scores"].values()))
        assert 0 < first["probability"] < 1 and first["learned_band"] in {"cold", "warm", "hot"}
        served = {c: http.get(f"{base}/v1/contacts/{c}/score", params={"as_of": as_of.isoformat()}).json()
                  for c in answer["scores"]}
    _copy_store_to_workspace(url, workspace)
    batch = run_model_scores(Workspace(workspace), SpineChoice(as_of=as_of), "champion", "propensity",
                             pyfunc=learned.pyfunc)
    batch = batch.set_index("contact_id")
    assert set(served) <= set(batch.index) and len(served) >= 25
    for contact, body in served.items():
        assert body["probability"] == pytest.approx(batch.loc[contact, "probability"], abs=1e-9), contact
        assert body["learned_score"] == pytest.approx(batch.loc[contact, "learned_score"], abs=1e-9), contact
        assert body["learned_band"] == batch.loc[contact, "band"]
    assert len({round(b["probability"], 9) for b in served.values()}) > 5  # not one constant
    reasons = [r for b in served.values() for r in b["learned_reasons"]]
    assert reasons and all(r["points"] > 0 and r["reason"] for r in reasons)
    # a restarted service rebuilds its mirror from the store and serves the same scores
    with running_server(settings, clock=lambda: clock) as (base, _app), httpx.Client(auth=auth) as http:
        again = {c: http.get(f"{base}/v1/contacts/{c}/score", params={"as_of": as_of.isoformat()}).json()
                 for c in list(served)[:8]}
    for contact, body in again.items():
        assert body["probability"] == served[contact]["probability"]
