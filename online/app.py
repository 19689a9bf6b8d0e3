"""The Flask app factory: routes parse, call the request path, and map errors. Nothing else.

    POST /ml/rec                          {"userid": 12, "k": 50, "recall_size": 200}
    GET  /users/<userid>/recommendations  ?k=50&recall_size=200
    GET  /health    liveness          GET /ready    everything loaded, with versions
    GET  /metrics   Prometheus text

Write routes (a bearer token from ``--api-token``; without one they answer 404):

    POST /users/<userid>/events           {"itemid": 50, "rating": 4.0, "timestamp": 1700000000, "event_id": "..."}
    POST /events                          {"events": [{"userid": 12, "itemid": 50, "rating": 4.0}, ...]}
    POST /admin/reload                    load the current batch and models, then swap (every worker)

Each route is a small function over the one ``ServiceContext`` of its app (settings, bundle holder,
metrics), registered by ``create_app``.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from contracts.errors import DependencyError, StoreUnavailableError
from contracts.settings import ServingSettings
from models.request_path import Recommendation, recommend
from models.stores import AcceptedRating, RatingSink, ServingBundle
from online.bundle import BundleHolder
from online.metrics import ServiceMetrics
from online.schema import MAX_EVENTS, RequestError, parse_json_body, parse_rating, parse_ratings, parse_request

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_EVENTS_BODY_BYTES = MAX_EVENTS * 256  # POST /events: up to MAX_EVENTS ratings
EXTENSION = "recsys"

routes = Blueprint("recommendations", __name__)


@dataclass(frozen=True)
class ServiceContext:
    settings: ServingSettings
    holder: BundleHolder
    metrics: ServiceMetrics
    # Makes every worker of the server load the current versions (gunicorn: a graceful restart of its
    # workers); None where this process is the whole server.
    reload_workers: Callable[[], None] | None = None


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


def json_body(example: str) -> Any:
    """The request's JSON body. No Content-Type is read as JSON (the reference design's own client sends
    none); a wrong one is refused with a 415."""
    if request.content_type and not request.is_json:
        raise UnsupportedBodyError(f"send a JSON body with Content-Type: application/json, e.g. {example}")
    return parse_json_body(request.get_data(cache=False))


class UnsupportedBodyError(RequestError):
    """A body that is not declared as JSON (415)."""


@routes.post("/ml/rec")
def ml_rec() -> Response:
    return answer(json_body('{"userid": 12}'))


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


def requires_token(view: Callable[..., Response]) -> Callable[..., Response]:
    """The write routes: off (404) without a configured token, 401 without a bearer token, 403 with another."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Response:
        token = service().settings.api_token
        if not token:
            return error(404, "not found: the write routes are off until the service is given an API token "
                              "(--api-token or RECSYS_API_TOKEN)")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            response = error(401, "this route needs the header 'Authorization: Bearer <the service's API token>'")
            response.headers["WWW-Authenticate"] = 'Bearer realm="recsys"'
            return response
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return error(403, "that bearer token is not this service's API token")
        return view(*args, **kwargs)

    return guarded


def rating_sink() -> tuple[ServingBundle, RatingSink]:
    context = service()
    bundle = context.holder.retry_if_empty()
    if bundle is None:
        raise StoreUnavailableError("bundle", f"not ready: {context.holder.error}")
    if bundle.ratings is None:
        raise StoreUnavailableError("event_log", f"the {context.settings.profile} profile takes no posted ratings yet")
    return bundle, bundle.ratings


def accepted_body(accepted: AcceptedRating) -> dict[str, Any]:
    rating = accepted.rating
    return {"event_id": rating.event_id, "userid": rating.userid, "itemid": rating.itemid, "rating": rating.rating,
            "timestamp": rating.timestamp, "sequence": accepted.sequence, "applied": True,
            "duplicate": accepted.duplicate}


@routes.post("/users/<userid>/events")
@requires_token
def user_events(userid: str) -> Response:
    """One rating: 202 once it is in the event log (fsync'd) and applied to the user's state."""
    body = json_body('{"itemid": 50, "rating": 4.0}')
    bundle, sink = rating_sink()
    [accepted] = sink.accept([parse_rating(body, userid, sink, int(time.time()))])
    response = jsonify({**accepted_body(accepted), "versions": bundle.versions})
    response.status_code = 202
    return response


@routes.post("/events")
@requires_token
def events() -> Response:
    """Up to MAX_EVENTS ratings of any users: all accepted, or none (a 400 naming the first bad field)."""
    request.max_content_length = MAX_EVENTS_BODY_BYTES
    body = json_body('{"events": [{"userid": 12, "itemid": 50, "rating": 4.0}]}')
    bundle, sink = rating_sink()
    accepted = sink.accept(parse_ratings(body, sink, int(time.time())))
    response = jsonify({"accepted": len(accepted), "duplicates": sum(a.duplicate for a in accepted),
                        "events": [accepted_body(a) for a in accepted], "versions": bundle.versions})
    response.status_code = 202
    return response


@routes.post("/admin/reload")
@requires_token
def reload() -> Response:
    """Loads the current versions here (a failure leaves the previous ones serving), then has every other
    worker do the same."""
    context = service()
    try:
        bundle = context.holder.reload()
    except DependencyError as failure:
        return error(503, f"reload failed, still serving the previous versions: {failure}", store="bundle")
    if context.reload_workers is not None:
        context.reload_workers()
        workers = "all: the server replaces every worker, each loading these versions"
    else:
        workers = ("this worker only: this app was not started by python -m online.serve, so it cannot reach the "
                   "others; reload them with the server's own signal (gunicorn: kill -HUP <master pid>)")
    return jsonify({"status": "reloaded", "versions": bundle.versions, "workers": workers})


@routes.app_errorhandler(RequestError)
def bad_request(failure: RequestError) -> Response:
    return error(415 if isinstance(failure, UnsupportedBodyError) else 400, str(failure))


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


def create_app(settings: ServingSettings | None = None, holder: BundleHolder | None = None,
               reload_workers: Callable[[], None] | None = None) -> Flask:
    settings = settings or ServingSettings()
    holder = holder or BundleHolder(settings)
    if holder.current is None:
        holder.try_load()
    app = Flask(__name__)
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION] = ServiceContext(settings, holder, ServiceMetrics(), reload_workers)
    app.register_blueprint(routes)
    return app
