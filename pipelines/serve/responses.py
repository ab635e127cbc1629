"""What every route of the service shares: JSON bodies, Segment's error body, the HTTP Basic key."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import orjson
from fastapi.responses import Response

__all__ = ["JSONResponse", "basic_user", "error_response", "known_key", "read_key_ok"]


class JSONResponse(Response):
    """A JSON body serialised by orjson (~5x faster than the stdlib's on a score body; the same JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """Segment's error body (the SDKs read ``code`` and ``message``), with ``extra`` fields."""
    return JSONResponse({"success": False, "code": code, "message": message, **extra}, status_code=status)


def known_key(key: Any, keys: frozenset[str]) -> bool:
    """Whether ``key`` is one of ``keys``, in time that does not depend on how much of it matched.

    Every key is compared (no early exit), so the answer's timing does not tell which key is close.
    """
    if not isinstance(key, str):
        return False
    given = key.encode("utf-8", "surrogatepass")
    found = False
    for known in keys:
        found |= hmac.compare_digest(given, known.encode("utf-8"))
    return found


def basic_user(header: str | None) -> str | None:
    """The user of an HTTP Basic ``Authorization`` header (the key), or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0]


def read_key_ok(authorization: str | None, read_keys: frozenset[str] | None, write_keys: frozenset[str]) -> bool:
    """Whether the request's HTTP Basic user may read scores (the read keys, or the write keys without any)."""
    return known_key(basic_user(authorization), read_keys or write_keys)
