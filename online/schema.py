"""Request validation: every bad input becomes a ``RequestError`` with a message for a 400."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from contracts.errors import PlatformError
from models.stores import RatingSink
from models.user_updates import PostedRating

MAX_RECALL_SIZE = 2000
MAX_USERID = 2**31 - 1
MAX_EVENTS = 1000  # ratings in one POST /events
MAX_FUTURE_SECONDS = 300  # a rating's timestamp may be this far ahead of the server's clock
MAX_EVENT_ID = 128  # characters of a client's event id
EVENT_FIELDS = frozenset({"userid", "itemid", "rating", "timestamp", "event_id"})


class RequestError(PlatformError, ValueError):
    """A client error; the message says which field and why."""


def parse_json_body(raw: bytes) -> Any:
    """The body as JSON, or a RequestError saying what is wrong and where: its syntax with the line, column and
    character, bytes that are not UTF-8, or nesting deeper than orjson's limit (1,024 levels; Python's own
    parser would overflow its stack on 16 KB of brackets)."""
    if not raw.strip():
        raise RequestError("the body is empty: send a JSON object like {\"userid\": 12}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as failure:
        where = f" at line {failure.lineno} column {failure.colno} (char {failure.pos})" if failure.msg else ""
        reason = failure.msg or str(failure)
        if "recursion" in reason.lower():
            raise RequestError("the body nests arrays or objects deeper than 1024 levels") from None
        if "utf-8" in reason.lower():
            raise RequestError(f"the body is not UTF-8 text: {reason}") from None
        raise RequestError(f"the body is not valid JSON: {reason}{where}"[:300]) from None


@dataclass(frozen=True)
class RecommendationRequest:
    userid: int
    k: int
    recall_size: int


def _integer(value: Any, name: str, minimum: int, maximum: int) -> int:
    # bool is an int in Python; "true" is not a user id.
    if isinstance(value, bool) or not isinstance(value, int):
        # ASCII digits only: str.isdigit also accepts "²" or "١٢", which int() refuses or reads oddly.
        if isinstance(value, str) and value.strip().lstrip("+").isascii() and value.strip().lstrip("+").isdigit():
            value = int(value)
        else:
            raise RequestError(f"'{name}' must be an integer, got {value!r}"[:200])
    if not minimum <= value <= maximum:
        raise RequestError(f"'{name}' must be between {minimum} and {maximum}, got {value}")
    return value


def parse_request(body: Any, default_k: int, default_recall_size: int) -> RecommendationRequest:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object like {\"userid\": 12}")
    unknown = sorted(set(body) - {"userid", "k", "recall_size"})
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    if "userid" not in body:
        raise RequestError("'userid' is required")
    userid = _integer(body["userid"], "userid", 1, MAX_USERID)
    recall_size = _integer(body.get("recall_size", default_recall_size), "recall_size", 1, MAX_RECALL_SIZE)
    k = _integer(body.get("k", default_k), "k", 1, recall_size)
    return RecommendationRequest(userid, k, recall_size)


def _named(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"{what} must be a JSON object like {{\"itemid\": 50, \"rating\": 4.0}}")
    return body


def parse_rating(body: Any, userid: Any, sink: RatingSink, now: int, where: str = "") -> PostedRating:
    """One posted rating; ``where`` prefixes the field names of an error (``events[3].``). ``userid`` comes from
    the path (a body's own userid must then agree) or, in a bulk body, from the event."""
    event = _named(body, f"{where.rstrip('.') or 'the body'}")
    unknown = sorted(set(event) - EVENT_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(where + str(name) for name in unknown)}"[:200])
    for name in ("itemid", "rating") if userid is not None else ("userid", "itemid", "rating"):
        if name not in event:
            raise RequestError(f"'{where}{name}' is required")
    owner = _integer(event["userid"] if userid is None else userid, f"{where}userid", 1, MAX_USERID)
    if userid is not None and "userid" in event and _integer(event["userid"], f"{where}userid", 1, MAX_USERID) != owner:
        raise RequestError(f"'{where}userid' is {event['userid']!r} but the path names user {owner}")
    itemid = _integer(event["itemid"], f"{where}itemid", 1, MAX_USERID)
    if not sink.knows_item(itemid):
        raise RequestError(f"'{where}itemid' {itemid} is not in the catalogue")
    rating = event["rating"]
    if isinstance(rating, bool) or not isinstance(rating, int | float) or not math.isfinite(rating):
        raise RequestError(f"'{where}rating' must be a number, got {rating!r}"[:200])
    refusal = sink.refusal(float(rating))
    if refusal is not None:
        raise RequestError(f"'{where}rating' {rating!r} is {refusal}")
    timestamp = event.get("timestamp", now)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise RequestError(f"'{where}timestamp' must be an integer (seconds since 1970), got {timestamp!r}"[:200])
    if not 0 <= timestamp <= now + MAX_FUTURE_SECONDS:
        raise RequestError(f"'{where}timestamp' {timestamp} is more than {MAX_FUTURE_SECONDS} s ahead of the "
                           f"server's clock ({now})" if timestamp > 0 else f"'{where}timestamp' must not be negative")
    event_id = event.get("event_id")
    if event_id is None:
        event_id = uuid.uuid4().hex
    elif not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID or not event_id.isprintable():
        raise RequestError(f"'{where}event_id' must be a printable string of 1 to {MAX_EVENT_ID} characters")
    return PostedRating(event_id, owner, itemid, float(rating), timestamp)


def parse_ratings(body: Any, sink: RatingSink, now: int) -> list[PostedRating]:
    """POST /events: ``{"events": [...]}``, 1 to MAX_EVENTS of them, each with its userid; all valid or none."""
    envelope = _named(body, "the body")
    unknown = sorted(set(envelope) - {"events"})
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    events = envelope.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
        raise RequestError(f"'events' must be a list of 1 to {MAX_EVENTS} ratings")
    return [parse_rating(event, None, sink, now, f"events[{n}].") for n, event in enumerate(events)]
