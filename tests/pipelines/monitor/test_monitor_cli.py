"""`propensity monitor` end to end on the session's trained world: the CLI, its exit code and JSON,
the history read back on the next run, the page in a real browser, the service's gauges, and the
alerts as signed webhooks through the real outbox."""

import json
import re

import httpx
import pytest

from propensity.pipelines.activation.outbox import (
    WebhookSender,
    deliver_due,
    verify_signature,
)
from propensity.pipelines.cli import main
from propensity.pipelines.monitor.alerts import Alert
from propensity.pipelines.monitor.notify import KIND, queue_alerts
from propensity.pipelines.monitor.plots import PLOT_IDS
from propensity.pipelines.rules import load_rules
from propensity.pipelines.serve.app import ServiceSettings
from propensity.pipelines.serve.db import database_url, make_engine
from tests.browser import IMAGES, OPENING, VERDICT, open_in_chromium
from tests.pipelines.activation.conftest import Receiver
from tests.pipelines.serve.support import ROOT, WRITE_KEY, running_server

pytestmark = pytest.mark.slow  # end to end with a browser and a live service, like compare's


@pytest.fixture(scope="module")
def monitor_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("monitor")
    args = ["-w", str(world.ws.path), "monitor", "--config", str(world.config_path), "--model-name", world.model_name,
            "--model", world.version, "--out-dir", str(out)]
    first = main([*args, "--recompute"])
    data = json.loads((out / "monitor.json").read_text())
    second = main(args)
    again = json.loads((out / "monitor.json").read_text())
    return out, (first, data), (second, again)


def test_every_closed_cutoff_after_the_test_cutoff_is_measured_for_the_three_models(monitor_run, world):
    _, (code, data), _ = monitor_run
    assert code == (1 if data["latest_alerts"] else 0)
    assert data["meta"]["models"] == ["rules", "learned", "learned_points"]
    assert data["cutoffs"], data["notes"]
    reference = data["reference"]["as_of"]
    for cutoff in data["cutoffs"]:
        assert cutoff["as_of"] > reference and cutoff["label_end"] <= data["meta"]["data_end"]
        for model in data["meta"]["models"]:
            row = cutoff["models"][model]
            assert row["roc_auc_low"] <= row["roc_auc"] <= row["roc_auc_high"]
            assert row["pr_auc_low"] <= row["pr_auc"] <= row["pr_auc_high"]
            assert 0 <= row["ece"] <= 1
            bands = cutoff["bands"][model]
            assert sum(b["contacts"] for b in bands) == cutoff["n"]
            assert sum(b["conversions"] for b in bands) == cutoff["positives"]
        assert cutoff["drift"]["features"] and cutoff["drift"]["psi_max"] >= 0
    assert data["verdict"][0].startswith(f"{len(data['cutoffs'])} cut-off(s) measured")


def test_the_second_run_reads_the_closed_cutoffs_from_the_history(monitor_run):
    _, (_, data), (code, again) = monitor_run
    assert again["computed"] == [] and again["reused"] == [c["as_of"] for c in data["cutoffs"]]
    assert again["cutoffs"] == data["cutoffs"] and code == (1 if again["latest_alerts"] else 0)


def test_the_page_opens_in_chromium_with_the_verdict_first_and_every_plot(monitor_run):
    out, (_, data), _ = monitor_run
    problems, seen = open_in_chromium(out / "monitor.html", {"images": IMAGES, "opening": OPENING, "said": VERDICT})
    images, opening, said = seen["images"], seen["opening"], seen["said"]
    assert problems == []
    assert [i["id"] for i in images] == list(PLOT_IDS) and all(i["ok"] for i in images)
    assert opening == "plain-verdict" and said == data["verdict"]


def test_the_service_shows_the_latest_cutoff_as_prometheus_gauges(monitor_run, world, tmp_path):
    _, (_, data), _ = monitor_run
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}",
                               rules=load_rules(ROOT / "configs/rules/saas.yaml"), write_keys=frozenset({WRITE_KEY}),
                               monitor_history=world.ws.layout.monitor_history)
    with running_server(settings) as (base, _):
        text = httpx.get(f"{base}/metrics", auth=(WRITE_KEY, "")).text
    latest = data["cutoffs"][-1]
    assert "propensity_monitor_history_ok 1.0" in text
    for model, row in latest["models"].items():
        found = re.search(rf'propensity_monitor_roc_auc{{model="{model}"}} (\S+)', text)
        assert found and float(found.group(1)) == pytest.approx(row["roc_auc"], rel=1e-9)
    alerts = sum(float(v) for v in re.findall(r"^propensity_monitor_alerts\{.*\} (\S+)$", text, re.MULTILINE))
    assert alerts == len(data["latest_alerts"])


def test_a_service_without_a_history_says_so_instead_of_failing_the_scrape(tmp_path):
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'serve.db'}",
                               rules=load_rules(ROOT / "configs/rules/saas.yaml"), write_keys=frozenset({WRITE_KEY}),
                               monitor_history=tmp_path / "nothing.json")
    with running_server(settings) as (base, _):
        response = httpx.get(f"{base}/metrics", auth=(WRITE_KEY, ""))
    assert response.status_code == 200 and "propensity_monitor_history_ok 0.0" in response.text


def test_alerts_go_out_once_as_signed_webhooks_through_the_outbox(tmp_path):
    engine = make_engine(database_url(tmp_path, env={}))
    alerts = [Alert("rule", "demo:coverage", "2025-05-17T00:00:00", "The rule 'demo' ...", "rules review"),
              Alert("drift", "features", "2025-05-17T00:00:00", "3 features drifted", "train", {"features": ["x"]})]
    meta = {"key": "series-1", "model": "propensity v3", "rules_path": "rules.yaml"}
    assert queue_alerts(engine, alerts, meta) == 2
    assert queue_alerts(engine, alerts, meta) == 0  # the weekly run that sees them again queues nothing
    receiver = Receiver().start()
    try:
        with WebhookSender(receiver.url, "s3cret") as sender:
            report = deliver_due(engine, sender)
    finally:
        receiver.stop()
        engine.dispose()
    assert report.delivered == 2
    bodies = [r.json() for r in receiver.received]
    assert {b["alert"]["subject"] for b in bodies} == {"demo:coverage", "features"}
    assert all(b["type"] == KIND and b["model"] == "propensity v3" for b in bodies)
    assert {b["alert"]["action"] for b in bodies} == {"rules review", "train"}
    for request in receiver.received:
        assert verify_signature("s3cret", request.headers["x-propensity-signature"], request.body)


def test_notify_queues_the_latest_alerts_in_the_service_database(monitor_run, world, tmp_path, monkeypatch):
    out = tmp_path / "page"
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    # a team that wants every small drift reported: thresholds apply to the stored numbers at once
    # (the same series, nothing measured again), and this world is sure to alert
    settings = tmp_path / "monitor.yaml"
    settings.write_text("drift: {psi_threshold: 0.0001, ignore: []}\n")
    args = ["-w", str(world.ws.path), "monitor", "--config", str(world.config_path), "--model-name", world.model_name,
            "--model", world.version, "--out-dir", str(out), "--monitor-config", str(settings), "--notify"]
    assert main(args) == 1
    data = json.loads((out / "monitor.json").read_text())
    assert data["computed"] == [] and data["latest_alerts"]
    engine = make_engine(url)
    try:
        from propensity.pipelines.activation.outbox import list_messages

        rows = list_messages(engine, limit=1000)
    finally:
        engine.dispose()
    assert len(rows) == len(data["latest_alerts"])
    assert all(row["kind"] == KIND for row in rows)
    assert {json.loads(row["payload"])["alert"]["key"] for row in rows} == {a["key"] for a in data["latest_alerts"]}
