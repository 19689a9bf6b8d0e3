"""Request validation: every bad input becomes a ``RequestError`` with a message for a 400."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from contracts.errors import PlatformError

MAX_RECALL_SIZE = 2000
MAX_USERID = 2**31 - 1


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
