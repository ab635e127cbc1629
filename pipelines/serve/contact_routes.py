"""Reading one contact: the lookup the score and explain routes share, and ``GET .../explain``.

``GET /v1/contacts/{id}/explain[?as_of=ISO&positive_only=bool]`` answers what ``propensity
explain CONTACT`` answers, from the service's memory instead of the workspace: the learned
score's feature row is the one the service predicts on (the event mirror, and the rule state for
a model that reads the rules' columns), explained by
:func:`propensity.pipelines.explain.explain_contacts` with LightGBM's ``pred_contrib`` (SHAP per
group, carried onto 0-5 so the groups sum to ``learned_score - baseline``); the rule side is the
rule state's points per rule through :func:`propensity.pipelines.explain.rule_breakdown`; both
assembled by :func:`propensity.pipelines.explain.jobs.contact_report`, the CLI's own assembly.
Nothing is read from the database for a contact in the score cache.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import Response

from propensity.pipelines.rules.config import RuleSet
from propensity.pipelines.serve.ingest import parse_timestamp
from propensity.pipelines.serve.mirror import MirrorHorizonError
from propensity.pipelines.serve.responses import (
    JSONResponse,
    error_response,
    read_key_ok,
)
from propensity.pipelines.serve.state import ScoreView

__all__ = ["ContactLookupError", "explain_body", "explain_router", "find_contact", "rule_scored_row", "rules_body"]

log = logging.getLogger(__name__)


class ContactLookupError(Exception):
    """A read of one contact that cannot be answered; carries its HTTP error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def find_contact(writer: Any, contact_id: str, as_of: str | None) -> tuple[ScoreView, Any]:
    """The contact's rule view and entry now, or at a later ``as_of`` (text from the query).

    Raises
    ------
    ContactLookupError
        400: ``as_of`` cannot be read, or is before the state's time; 404: an unknown contact.
    """
    when = None
    if as_of is not None:
        when = parse_timestamp(as_of)
        if when is None:
            raise ContactLookupError(error_response(
                400, "invalid_request", f"query, field 'as_of': cannot parse {as_of!r} as a timestamp"))
    try:
        found = writer.current(contact_id, when)
    except ValueError as exc:  # as_of before the state's time
        raise ContactLookupError(error_response(400, "invalid_request", f"query, field 'as_of': {exc}")) from None
    if found is None:
        raise ContactLookupError(error_response(404, "not_found", f"no events or traits for contact {contact_id!r}"))
    return found


def rule_scored_row(view: ScoreView) -> pd.DataFrame:
    """The rule view as the one row of ``score_contacts`` that ``rule_breakdown`` reads
    (``points__{rule}``: the capped points of each activity and fit criterion, ``points``, ``rule_score``)."""
    row = {f"points__{name}": [float(points)] for name, points in view.parts.items()}
    return pd.DataFrame({**row, "points": [float(view.points)], "rule_score": [float(view.rule_score)]})


def rules_body(view: ScoreView, rules: RuleSet) -> dict[str, Any]:
    """The rule score's own breakdown (``propensity explain``'s ``rules`` part), unrounded."""
    from propensity.pipelines.explain import rule_breakdown

    breakdown = rule_breakdown(rule_scored_row(view), rules)
    return {"name": rules.name, "rule_score": view.rule_score, "points": view.points, "band": view.band,
            "breakdown": breakdown.to_dict(orient="records")}


def explain_body(learned: Any, view: ScoreView, state: Any, rules: RuleSet, *, top: int,
                 positive_only: bool, model: Mapping[str, Any]) -> dict[str, Any]:
    """The explain answer for the contact of ``view`` at its instant (``state``: its rule state there).

    ``learned``: the service's :class:`propensity.pipelines.serve.learned.LearnedScores`. The body
    is ``propensity explain --json``'s (:meth:`ContactReport.to_dict`, numbers as computed), plus
    ``top_reasons`` (``explain --all``'s ``reason_k`` columns), the rules' band and the model.
    """
    from propensity.pipelines.explain import reason_items
    from propensity.pipelines.explain.jobs import contact_report

    explanation = learned.explain(view.contact_id, view.as_of, {view.contact_id: state})
    report = contact_report(view.contact_id, view.as_of, explanation, rule_scored_row(view), rules)
    body = report.to_dict(digits=None)
    body["rules"]["band"] = view.band
    body["top_reasons"] = reason_items(explanation, top, positive_only=positive_only)
    body["top_reasons_positive_only"] = positive_only
    body["model"] = dict(model)
    return body


def explain_router(settings: Any, runtime: Mapping[str, Any]) -> APIRouter:
    """``GET /v1/contacts/{id}/explain`` for a service built from ``settings`` (its writer in ``runtime``)."""
    router = APIRouter()
    top = settings.config.top_reasons
    model = {"label": settings.model_label or None, "name": settings.model_name or None,
             "version": settings.model_version or None}

    @router.get("/v1/contacts/{contact_id}/explain")
    def contact_explain(contact_id: str, request: Request, as_of: str | None = None,
                        positive_only: bool = False) -> Response:
        """Why a contact has its learned score now (or at a later ``as_of``): SHAP per group in 0-5
        points (they sum to ``learned_score - baseline``), the top reasons, and the rule breakdown."""
        if not read_key_ok(request.headers.get("authorization"), settings.read_keys, settings.write_keys):
            return error_response(401, "unauthorized", "missing or unknown read key (HTTP Basic user)")
        writer = runtime["writer"]
        try:
            view, entry = find_contact(writer, contact_id, as_of)
        except ContactLookupError as exc:
            return exc.response
        if writer.learned is None:  # say so, with what can be answered honestly: the rules' own points
            return error_response(
                409, "no_model", "this service scores with rules only (no registered model is loaded: see "
                "`propensity serve --model`), so there is no learned score to explain; `rules` is the rule "
                "score's breakdown", contact_id=contact_id, as_of=view.as_of.isoformat(),
                rules=rules_body(view, settings.rules))
        try:
            body = explain_body(writer.learned, view, entry.state, settings.rules, top=top,
                                positive_only=positive_only, model=model)
        except MirrorHorizonError as exc:  # an as_of older than the model's longest window
            return error_response(400, "invalid_request", f"query, field 'as_of': {exc}")
        return JSONResponse(body)

    return router

