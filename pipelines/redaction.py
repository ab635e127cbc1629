"""One redaction for every error text that may carry a credential (push, the outbox, their logs).

A receiver's error page may echo what it was sent: the URL (a Customer.io webhook URL is itself a
token), the ``Authorization`` header (credentials base64-encoded, or the ``user:password`` of a
URL's userinfo, which httpx turns into that header), or a key. :func:`redact` replaces every known
secret and any URL userinfo (``scheme://user:password@``) *first*, and only then cuts the text to
its length limit: cut first, a secret crossing the cut would no longer match and its prefix
would be shown.
"""

from __future__ import annotations

import base64
import collections
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable

__all__ = ["MASK", "basic_secrets", "guard_http_log", "redact", "release_http_log", "url_secrets"]

MASK = "***"
_TOKEN_CHARS = 8  # the shortest path segment or query value taken for a token

# scheme://userinfo@ : userinfo is anything up to the first "@" before the host (RFC 3986 lets
# it hold ":" and percent-escapes, not "/", "?", "#" or whitespace)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]+@")


def basic_secrets(user: str, password: str) -> tuple[str, ...]:
    """The forms HTTP Basic credentials take in a request: the password (the user when there is
    none, as a Segment write key), ``user:password``, and its base64 (the ``Authorization`` header)."""
    pair = f"{user}:{password}"
    encoded = base64.b64encode(pair.encode()).decode()
    return tuple(s for s in (password, user if not password else "", pair if password else "", encoded) if s)


def url_secrets(url: str, *, whole: bool = True) -> tuple[str, ...]:
    """The secrets a URL may carry: its userinfo (each form :func:`basic_secrets` lists, raw and
    percent-decoded) and, with ``whole``, the URL itself, its path and query, and each path
    segment or query value of 8 characters or more (the token of a webhook URL lives there, and
    an error page may echo just that)."""
    parts = urllib.parse.urlsplit(url)
    out: list[str] = []
    if whole:
        out += [url, parts.path if len(parts.path) > 1 else "", parts.query]
        # a token is one path segment or query value; an error page may echo it alone. Shorter
        # pieces ("hooks", "v1") are words, not tokens, and masking them would garble the text.
        pieces = [*parts.path.split("/"), *(v for _, v in urllib.parse.parse_qsl(parts.query))]
        out += [p for p in pieces if len(p) >= _TOKEN_CHARS]
        if parts.username is not None or parts.password is not None:
            # the URL as sent: httpx moves the userinfo into the Authorization header
            out.append(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])))
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        for u, p in {(user, password), (urllib.parse.unquote(user), urllib.parse.unquote(password))}:
            out += basic_secrets(u, p)
    return tuple(dict.fromkeys(s for s in out if s))


def redact(text: str, secrets: Iterable[str | None] = (), *, limit: int | None = None) -> str:
    """``text`` with every secret and any URL userinfo masked, then cut to ``limit`` characters.

    Longest secrets first, so a secret that contains another is masked whole.
    """
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text


class _HttpxLogRedaction(logging.Filter):
    """Masks the registered secrets in httpx's own log records.

    httpx logs every request as ``HTTP Request: POST <url> ...`` at INFO, the full URL included
    (a webhook token, ``user:password@``). A filter on its logger, added when the first sender
    needs it (never at import), is the one place that sees those records.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with self.lock:
            secrets = list(self.secrets)
        masked = redact(message, secrets)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_HTTPX_LOG = _HttpxLogRedaction()


def guard_http_log(secrets: Iterable[str], loggers: Iterable[str] = ("httpx",)) -> tuple[str, ...]:
    """Mask ``secrets`` in httpx's log (and in ``loggers``: a logger's filter sees only its own
    records, not its children's) from now on; returns them for :func:`release_http_log`."""
    secrets = tuple(s for s in secrets if s)
    with _HTTPX_LOG.lock:
        _HTTPX_LOG.secrets.update(secrets)
    for name in {"httpx", *loggers}:
        logger = logging.getLogger(name)
        if _HTTPX_LOG not in logger.filters:
            logger.addFilter(_HTTPX_LOG)
    return secrets


def release_http_log(secrets: Iterable[str]) -> None:
    """Stop masking ``secrets`` (once per :func:`guard_http_log`); URL userinfo stays masked."""
    with _HTTPX_LOG.lock:
        _HTTPX_LOG.secrets.subtract(secrets)
        for secret in [s for s, n in _HTTPX_LOG.secrets.items() if n <= 0]:
            del _HTTPX_LOG.secrets[secret]
