"""The HTTP service: Segment-shaped ingest, scores, health and metrics (FastAPI).

``POST /v1/track | /v1/identify | /v1/batch`` take the Segment HTTP API's bodies and auth (the
write key as the HTTP Basic user), so Segment SDKs and CDP destinations can send here
unchanged. A request is answered 200 only after its events are committed (see
:mod:`propensity.pipelines.serve.worker`); 400 names the field that failed (or a body that is not
strict JSON, or nested deeper than ``max_json_depth``), 401 an unknown write key (checked before
the body is parsed), 413 a body over the limit, 422 rows the database refuses for good (a retry
would fail the same way), 503 a commit that failed for a reason that may pass (the client should
retry; ``messageId`` makes that safe). A request in a group commit that fails is committed
again on its own, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.serve import db
from propensity.pipelines.serve.config import ServeConfig
from propensity.pipelines.serve.contact_routes import (
    ContactLookupError,
    explain_router,
    find_contact,
)
from propensity.pipelines.serve.ingest import (
    PayloadError,
    parse_payload,
)
from propensity.pipelines.serve.learned import LearnedScores, LearnedView
from propensity.pipelines.serve.learned_change import HOLD_SECONDS, learned_split_json
from propensity.pipelines.serve.metrics import CONTENT_TYPE, ServiceMetrics
from propensity.pipelines.serve.mirror import MirrorHorizonError
from propensity.pipelines.serve.responses import (
    JSONResponse,
    basic_user,
    error_response,
    known_key,
    read_key_ok,
)
from propensity.pipelines.serve.rule_inputs import rules_difference
from propensity.pipelines.serve.state import RuleScorer, ScoreView
from propensity.pipelines.serve.worker import Writer, is_permanent, utcnow

__all__ = ["ServiceSettings", "create_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service needs, resolved and validated at the edge (the CLI, a test)."""

    database_url: str
    rules: RuleSet
    write_keys: frozenset[str]
    config: ServeConfig = ServeConfig()
    triggers: Any = None  # propensity.pipelines.activation.triggers.TriggersConfig, or None
    read_keys: frozenset[str] | None = None  # None: the write keys may read scores
    # the registered model (a propensity.pipelines.training.scorer.LearnedScorer) and what it is; None: rules only
    model: Any = None
    model_label: str = ""
    model_name: str = ""  # the registered model's name and version (shown by GET .../explain)
    model_version: str = ""
    # `propensity monitor`'s history file: its latest cut-off as gauges on /metrics (None: none)
    monitor_history: Any = None
    # own the process's garbage collector (config gc_collect_seconds); the CLI sets it, a test
    # that builds the app inside pytest does not
    tune_gc: bool = False

    def __post_init__(self) -> None:
        # a model that reads the rules' columns is served only with the rules it was trained with
        # (its rule__* inputs come from the service's rule state: propensity.pipelines.serve.rule_inputs)
        trained = getattr(self.model, "input_rules", None) if self.model is not None else None
        if trained is not None:
            difference = rules_difference(trained, self.rules, blends=bool(self.model.blends_rules))
            if difference is not None:
                raise ValueError(f"{self.model_label or 'the model'} was trained with rules {trained.name!r}, "
                                 f"which differ from the served rules {self.rules.name!r}: {difference}")
        # a band the triggers do not know would fail every commit at the first crossing
        if self.triggers is not None and any(t.kind == "band_entered" for t in self.triggers.triggers):
            rule_bands = tuple(b.name for b in self.rules.bands)
            if tuple(self.triggers.bands) != rule_bands:
                raise ValueError(
                    f"the triggers' bands {list(self.triggers.bands)} differ from the bands of rules "
                    f"{self.rules.name!r} {list(rule_bands)}: list the rules' bands, lowest first"
                )


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (Python's json reads them): stored, they would be invalid JSON
    raise ValueError(f"{name} is not valid JSON (send a number or null)")


def _parse_json(raw: bytes) -> Any:
    """The body as JSON; ValueError (with the reason) for anything that is not strict JSON.

    orjson first (several times faster on a Segment call); a body it refuses is read again by the
    stdlib, whose answer (a value, or the error named here) is the one this service always gave:
    orjson also refuses some valid JSON (integers over 64 bits, nesting over 1,024).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def _depth(value: Any, limit: int) -> int | None:
    """The nesting depth of a parsed JSON value if it is over ``limit``, else None.

    Walked with an explicit stack: a recursive walk (or ``json.dumps`` later) of a deep value
    would raise RecursionError.
    """
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return level
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item if isinstance(v, dict | list))
    return None


def _reason(exc: BaseException) -> str:
    # the driver's first line (e.g. "value too long for type character varying(256)"), not the SQL
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:200]}"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _HttpError(413, "too_large", f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _HttpError(413, "too_large", f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _HttpError(400, "invalid_request", f"body: not valid gzip ({exc})") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise _HttpError(413, "too_large", f"body is over the {limit}-byte limit once decompressed")
    return body


def _view_json(view: ScoreView, rules: RuleSet, top: int) -> dict[str, Any]:
    descriptions = {r.name: r.description for r in (*rules.activities, *rules.fit)}
    reasons = [{**r, "description": descriptions.get(r["rule"])} for r in view.top_reasons(top)]
    return {
        "contact_id": view.contact_id,
        "as_of": view.as_of.isoformat(),
        "rule_score": view.rule_score,
        "band": view.band,
        "points": view.points,
        "above": view.above,
        "top_reasons": reasons,
        "points_by_rule": view.parts,
    }


def create_app(settings: ServiceSettings, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """Build the service; the database, writer and background tasks start with the app."""
    metrics = ServiceMetrics()
    scorer = RuleScorer(settings.rules)
    runtime: dict[str, Any] = {}
    top = settings.config.top_reasons

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        engine = db.make_engine(settings.database_url)
        db.create_tables(engine)
        trigger_engine = None
        if settings.triggers is not None:
            from propensity.pipelines.activation.tables import create_activation_tables
            from propensity.pipelines.activation.triggers import TriggerEngine

            create_activation_tables(engine)
            # with a model, a firing's message waits for its learned split (added after the commit)
            trigger_engine = TriggerEngine(settings.triggers,
                                           hold_seconds=HOLD_SECONDS if settings.model is not None else 0.0)
        learned = None
        if settings.model is not None:
            learned = LearnedScores(settings.model, settings.model_label, scorer,
                                    split_days=settings.config.learned_split_days)
            # every stored event, once: later commits append to this mirror (propensity.pipelines.serve.learned)
            loaded = await asyncio.to_thread(learned.load, engine, clock())
            log.info("learned model %s: %d stored events mirrored", settings.model_label, loaded)
        writer = Writer(engine, scorer, metrics, triggers=trigger_engine,
                        max_batch_events=settings.config.max_batch_events,
                        commit_delay=settings.config.commit_delay_ms / 1000, clock=clock, learned=learned,
                        cache_contacts=settings.config.cache_contacts,
                        refresh_seconds=settings.config.score_refresh_hours * 3600,
                        sweep_chunk=settings.config.sweep_chunk, sweep_duty=settings.config.sweep_duty,
                        sweep_slice_seconds=settings.config.sweep_slice_ms / 1000)
        writer.start()
        runtime.update(engine=engine, writer=writer)
        tasks = [asyncio.create_task(_sweep_loop(writer, settings.config.sweep_seconds))]
        if settings.tune_gc:
            tasks.append(asyncio.create_task(_gc_loop(settings.config.gc_collect_seconds)))
        if settings.triggers is not None:
            tasks.append(asyncio.create_task(_deliver_loop(engine, settings, metrics)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(writer.stop)
            engine.dispose()

    # the API docs page loads Swagger UI from a CDN and the schema lists every route: both are
    # off unless the config turns them on (docs: true)
    docs = settings.config.docs
    app = FastAPI(title="propensity", summary="Real-time propensity scores", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.metrics = metrics
    app.state.runtime = runtime

    async def ingest(kind: str, request: Request) -> Response:
        started = time.perf_counter()
        try:
            # the key is checked before the body is parsed: an unknown caller learns nothing of
            # how its body fails, and costs no more than reading it
            key = basic_user(request.headers.get("authorization"))
            if key is not None and not known_key(key, settings.write_keys):
                raise _HttpError(401, "unauthorized", "unknown write key")
            raw = await _read_body(request, settings.config.max_body_bytes)
            try:
                body = _parse_json(raw)
            except ValueError as exc:
                if key is None:  # the key may only be in a body we cannot read
                    raise _HttpError(401, "unauthorized", "missing or unknown write key (HTTP Basic user)") from None
                raise _HttpError(400, "invalid_request", f"body: not valid JSON ({exc})") from None
            if key is None:  # Segment also accepts the key in the body
                key = body.get("writeKey") if isinstance(body, dict) else None
                if not known_key(key, settings.write_keys):
                    raise _HttpError(401, "unauthorized", "missing or unknown write key (HTTP Basic user)")
            too_deep = _depth(body, settings.config.max_json_depth)
            if too_deep is not None:
                raise _HttpError(400, "invalid_request", f"body: JSON nested deeper than "
                                 f"{settings.config.max_json_depth} levels (max_json_depth)")
            now = clock()
            try:
                rows = parse_payload(body, kind, received_at=now, now=now)
            except PayloadError as exc:
                raise _HttpError(400, "invalid_request", str(exc)) from None
            if not rows:
                metrics.requests.labels(kind, "200").inc()
                return JSONResponse({"success": True, "stored": 0, "duplicates": 0, "scores": {}})
            try:
                result = await asyncio.wrap_future(runtime["writer"].submit(rows))
            except Exception as exc:  # the commit failed; nothing of this request is stored
                if is_permanent(exc):  # the writer retried these rows alone: they are the problem
                    raise _HttpError(422, "unprocessable", f"could not store the events: {_reason(exc)}") from None
                raise _HttpError(503, "unavailable", f"could not store the events: {type(exc).__name__}") from None
        except _HttpError as exc:
            metrics.requests.labels(kind, str(exc.status)).inc()
            return error_response(exc.status, exc.code, exc.message)
        metrics.latency.observe(time.perf_counter() - started)
        metrics.requests.labels(kind, "200").inc()
        with_model = runtime["writer"].learned is not None
        scores = {c: {"rule_score": v.rule_score, "band": v.band, "points": v.points,
                      **(_learned_json(result.learned.get(c)) if with_model else {})}
                  for c, v in result.scores.items()}
        return JSONResponse({"success": True, "stored": result.stored,
                             "duplicates": result.duplicates, "scores": scores})

    @app.post("/v1/track")
    async def track(request: Request) -> Response:
        """Segment ``track``: one event."""
        return await ingest("track", request)

    @app.post("/v1/identify")
    async def identify(request: Request) -> Response:
        """Segment ``identify``: contact traits (used by fit criteria)."""
        return await ingest("identify", request)

    @app.post("/v1/batch")
    async def batch(request: Request) -> Response:
        """Segment ``batch``: ``{"batch": [call, ...]}``, stored all or nothing."""
        return await ingest("batch", request)

    @app.get("/v1/contacts/{contact_id}/score")
    def contact_score(contact_id: str, request: Request, as_of: str | None = None,
                      learned_split: bool = True) -> Response:
        """A contact's rule score now (or at a later ``as_of``), its band, top reasons and last change
        (with a model, ``learned_split=false`` leaves the learned split out: it is most of the cost)."""
        if not read_key_ok(request.headers.get("authorization"), settings.read_keys, settings.write_keys):
            return error_response(401, "unauthorized", "missing or unknown read key (HTTP Basic user)")
        try:
            view, entry = find_contact(runtime["writer"], contact_id, as_of)
        except ContactLookupError as exc:
            return exc.response
        body = _view_json(view, settings.rules, top)
        body["events"] = entry.state.events
        body["last_change"] = {
            "at": entry.changed_at.isoformat() if entry.changed_at else None,
            "before": entry.previous_score,
            "after": entry.score,
            # new events per type, decay and expiry, attributes (None before a contact's second score)
            "split": entry.last_split,
        }
        learned = runtime["writer"].learned
        # at the rule view's own instant, so both scores describe the same as_of
        try:
            states = {contact_id: entry.state}  # at view.as_of: a model may read the rules' points
            found_learned = learned.score([contact_id], view.as_of, states).get(contact_id) if learned else None
        except MirrorHorizonError as exc:  # an as_of older than the model's longest window, with a model
            return error_response(400, "invalid_request", f"query, field 'as_of': {exc}")
        body.update(_learned_json(found_learned))
        body["model"] = learned.label if learned is not None else None
        body["learned_reasons"] = None
        if learned is not None:
            try:
                body["learned_reasons"] = learned.reasons(contact_id, view.as_of, top, states)
            except Exception:  # the score stands without its explanation
                log.exception("learned reasons for %s failed", contact_id)
            if learned_split:
                body["last_change"].update(learned_split_json(learned, runtime["engine"], contact_id, entry.last_split))
            else:
                body["last_change"].update(learned_split=None, learned_split_note="not asked for (learned_split=false)")
        return JSONResponse(body)

    app.include_router(explain_router(settings, runtime))

    @app.get("/healthz")
    def healthz() -> Response:
        """200 when the database answers and the writer runs."""
        writer = runtime.get("writer")
        if writer is None or not writer.alive:
            return JSONResponse({"status": "error", "error": "the writer is not running"}, status_code=503)
        try:
            with runtime["engine"].connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # report, do not raise: this is the health check
            return JSONResponse({"status": "error", "error": type(exc).__name__}, status_code=503)
        body = {"status": "ok", "database": runtime["engine"].dialect.name, "queue_depth": writer.queue_depth}
        if writer.learned is not None:
            body["model"] = writer.learned.label
        return JSONResponse(body)

    if settings.config.metrics != "off":
        if settings.monitor_history is not None:
            from propensity.pipelines.monitor.gauges import MonitorCollector

            metrics.registry.register(MonitorCollector(settings.monitor_history))

        @app.get("/metrics", include_in_schema=False)
        def prometheus(request: Request) -> Response:
            """Prometheus text exposition; with ``metrics: keyed``, a read key as the HTTP Basic user."""
            if settings.config.metrics == "keyed" and not read_key_ok(
                    request.headers.get("authorization"), settings.read_keys, settings.write_keys):
                return error_response(401, "unauthorized", "missing or unknown read key (HTTP Basic user); "
                              "or set metrics: open in the serve config")
            return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


def _learned_json(view: LearnedView | None) -> dict[str, Any]:
    """The learned fields of a score body; null without a registered model."""
    if view is None:
        return {"probability": None, "learned_score": None, "learned_band": None}
    return {"probability": view.probability, "learned_score": view.learned_score, "learned_band": view.learned_band}


async def _gc_loop(every: float) -> None:
    """Python's full collections, bounded: each scans only what is new since the last one.

    CPython's automatic full collection walks every tracked object, and this process keeps
    hundreds of thousands alive on purpose (the score cache, the event mirror, the model): each
    took 120-400 ms of held GIL, so no request was answered meanwhile. Here the heap is frozen
    (``gc.freeze``: moved where the collector never looks) once started, automatic full
    collections are turned off (young collections still run), and every ``every`` seconds one
    full collection finds the cycles among what is new, then freezes the survivors. The cost:
    a cycle formed later among frozen objects is not collected (the service's long-lived
    objects, cache entries and mirror logs, hold no cycles; they are freed by reference count).
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1_000_000_000)  # the third: full collections only from here
    while True:
        await asyncio.sleep(every)
        gc.collect()
        gc.freeze()


async def _sweep_loop(writer: Writer, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.wrap_future(writer.request_sweep())
        except Exception:  # logged by the writer; try again next round
            pass


async def _deliver_loop(engine: Any, settings: ServiceSettings, metrics: ServiceMetrics) -> None:
    from propensity.pipelines.activation.outbox import WebhookSender, deliver_due

    delivery = settings.triggers.delivery
    try:
        sender = WebhookSender.from_env(delivery.url_env, delivery.secret_env, timeout=delivery.timeout_seconds)
    except ValueError as exc:
        log.warning("trigger firings stay in the outbox (send them with `propensity outbox deliver`): %s", exc)
        return
    with sender:
        while True:
            await asyncio.sleep(settings.config.deliver_seconds)
            try:
                report = await asyncio.to_thread(deliver_due, engine, sender, policy=delivery.policy())
            except Exception:
                log.exception("outbox delivery failed")
                continue
            for outcome in ("delivered", "retrying", "dead"):
                metrics.deliveries.labels(outcome).inc(getattr(report, outcome))
