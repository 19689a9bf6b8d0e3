"""The Flask app factory: routes parse, call the request path, and map errors. Nothing else.

    POST /ml/rec                          {"userid": 12, "k": 50, "recall_size": 200}
    GET  /users/<userid>/recommendations  ?k=50&recall_size=200
    GET  /health    liveness          GET /ready    everything loaded, with versions
    GET  /metrics   Prometheus text   POST /admin/reload   load the current batch and models, then swap

Each route is a small function over the one ``ServiceContext`` of its app (settings, bundle holder,
metrics), registered by ``create_app``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from contracts.errors import DependencyError, StoreUnavailableError
from contracts.settings import ServingSettings
from models.request_path import Recommendation, recommend
from online.bundle import BundleHolder
from online.metrics import ServiceMetrics
from online.schema import RequestError, parse_json_body, parse_request

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
EXTENSION = "recsys"

routes = Blueprint("recommendations", __name__)


@dataclass(frozen=True)
class ServiceContext:
    settings: ServingSettings
    holder: BundleHolder
    metrics: ServiceMetrics


def service() -> ServiceContext:
    return current_app.extensions[EXTENSION]


def response_body(result: Recommendation, request_id: str, seconds: float) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "userid": result.userid,
        # The reference design's clients read item_list[].itemid / .score; the rest is added, not renamed.
        "item_list": [{"itemid": item.itemid, "score": item.score, "rank_score": item.rank_score,
                       "sources": list(item.sources)} for item in result.items],
        "fallback": result.fallback,
        "degraded": list(result.degraded),
        "versions": result.versions,
        "took_ms": round(seconds * 1000.0, 3),
    }


def error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def answer(body: Any) -> Response:
    """One recommendation request, from its parsed body to the response."""
    started = time.perf_counter()
    context = service()
    bundle = context.holder.retry_if_empty()  # taken once: the whole request uses this bundle
    if bundle is None:
        return error(503, f"not ready: {context.holder.error}", store="bundle")
    parsed = parse_request(body, context.settings.default_k, context.settings.recall_size)
    result = recommend(bundle, parsed.userid, parsed.k, parsed.recall_size, context.metrics.timed)
    if result.fallback:
        context.metrics.fallbacks.labels(result.fallback).inc()
    for store in result.degraded:
        context.metrics.degraded.labels(store).inc()
    with context.metrics.timed("serialisation"):
        return jsonify(response_body(result, uuid.uuid4().hex, time.perf_counter() - started))


@routes.post("/ml/rec")
def ml_rec() -> Response:
    # No Content-Type is read as JSON: the reference design's own client sends none. A wrong one is refused.
    if request.content_type and not request.is_json:
        return error(415, "send a JSON body with Content-Type: application/json, e.g. {\"userid\": 12}")
    return answer(parse_json_body(request.get_data(cache=False)))


@routes.get("/users/<userid>/recommendations")
def user_recommendations(userid: str) -> Response:
    body: dict[str, Any] = {"userid": userid}
    for name in ("k", "recall_size"):
        if name in request.args:
            body[name] = request.args[name]
    return answer(body)


@routes.get("/health")
def health() -> Response:
    return jsonify({"status": "alive"})


@routes.get("/ready")
def ready() -> Response:
    context = service()
    bundle = context.holder.retry_if_empty()
    if bundle is None:
        return error(503, f"not ready: {context.holder.error}", store="bundle")
    down = bundle.unavailable()
    if down:
        return error(503, "not ready: " + "; ".join(down.values()), store=",".join(down), versions=bundle.versions)
    return jsonify({"status": "ready", "profile": context.settings.profile, "versions": bundle.versions,
                    "dependencies": sorted(bundle.dependencies)})


@routes.get("/metrics")
def prometheus() -> Response:
    return Response(service().metrics.exposition(), mimetype="text/plain; version=0.0.4")


@routes.post("/admin/reload")
def reload() -> Response:
    try:
        bundle = service().holder.reload()
    except DependencyError as failure:
        return error(503, f"reload failed, still serving the previous versions: {failure}", store="bundle")
    return jsonify({"status": "reloaded", "versions": bundle.versions})


@routes.app_errorhandler(RequestError)
def bad_request(failure: RequestError) -> Response:
    return error(400, str(failure))


@routes.app_errorhandler(StoreUnavailableError)
def store_down(failure: StoreUnavailableError) -> Response:
    return error(503, str(failure), store=failure.store)


@routes.app_errorhandler(HTTPException)
def http_error(failure: HTTPException) -> Response:
    return error(failure.code or 500, failure.description or failure.name)


@routes.app_errorhandler(Exception)
def unexpected(failure: Exception) -> Response:
    log.exception("unexpected error on %s", request.path)
    return error(500, "internal error (logged on the server)")


@routes.after_app_request
def count(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    service().metrics.requests.labels(endpoint, str(response.status_code)).inc()
    return response


class FastJSONProvider(DefaultJSONProvider):
    """Responses encoded by orjson (~10x faster than the standard encoder on a 50-item list). Everything
    else (request parsing, which takes any integer so an out-of-range id gets its own 400, and what orjson
    cannot encode, such as integers beyond 64 bits) stays with the standard encoder."""

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self._prepare_response_obj(args, kwargs)
        try:
            data = orjson.dumps(body, default=self.default)
        except TypeError:
            data = self.dumps(body).encode()
        return self._app.response_class(data, mimetype=self.mimetype)


def create_app(settings: ServingSettings | None = None, holder: BundleHolder | None = None) -> Flask:
    settings = settings or ServingSettings()
    holder = holder or BundleHolder(settings)
    if holder.current is None:
        holder.try_load()
    app = Flask(__name__)
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION] = ServiceContext(settings, holder, ServiceMetrics())
    app.register_blueprint(routes)
    return app
