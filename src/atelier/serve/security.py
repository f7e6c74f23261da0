"""The service's gate, as ASGI middlewares that run before any route: the Host allowlist, the anti-CSRF check on
writes, the request body limit and ``nosniff``; and the one JSON error shape they and the routes answer with.

Contracts (outermost first, as ``create_app`` stacks them):

- ``NoSniff``: every response says ``X-Content-Type-Options: nosniff``, the gate's own refusals included.
- ``HostAllowlist``: a request whose ``Host`` header (port ignored, IPv6 brackets removed, lower case) is not one of
  ``ServeOptions.accepted_hosts()`` answers 400. A page on another site that re-points its own name at this machine
  (DNS rebinding) sends its own name as Host, so it never reaches a route.
- ``WriteGuard``: every request other than GET, HEAD and OPTIONS must carry ``X-Atelier-Request: 1`` and, when it has
  an ``Origin`` header, come from the service's own scheme://host; otherwise 403. An HTML form on another site cannot
  set a custom header, and a cross-site ``fetch`` with one needs a CORS preflight, which this service never approves
  (it sends no CORS headers at all).
- ``BodyLimit``: a request body over the limit answers 413 before the app parses it.
- ``error_response``: ``{"error": "<one line>"}``; every 503 carries ``Retry-After``.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi.responses import JSONResponse

WRITE_HEADER = "X-Atelier-Request"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
DEFAULT_RETRY_AFTER = 5  # seconds, for a 503 that has no better estimate
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def error_response(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    """The service's one error shape. A 503 always says when to come back (``Retry-After``)."""
    headers = dict(headers or {})
    if status == 503 and not any(k.lower() == "retry-after" for k in headers):
        headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _header(scope: dict, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


def split_host(value: str) -> Optional[tuple[str, str]]:
    """``(name, port)`` of a Host header value (``example.org:8000``, ``[::1]:8000``, ``::1``); None if malformed.
    The name comes lower case, without brackets or a trailing dot; the port is "" when absent."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        port = rest[1:]
    elif v.count(":") > 1:  # an IPv6 address without brackets (no port can be told apart)
        name, port = v, ""
    else:
        name, _, port = v.partition(":")
        if port and not port.isdigit():
            return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/@?#\\ \t"):
        return None
    return name, port


class NoSniff:
    """Every response says ``X-Content-Type-Options: nosniff``, so a browser never runs a result or an error as
    something other than its declared type."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-content-type-options"]
                message = {**message, "headers": headers + [(b"x-content-type-options", b"nosniff")]}
            await send(message)

        return await self.app(scope, receive, send_with_header)


async def _refuse(scope: dict, receive: Any, send: Any, status: int, message: str) -> None:
    # Connection: close, so a body the client is still sending is never taken for the next request.
    await error_response(status, message, {"Connection": "close"})(scope, receive, send)


class HostAllowlist:
    """400 for a request whose Host is not one the service answers to (``hosts`` None: any host)."""

    def __init__(self, app: Any, hosts: Optional[frozenset]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.hosts is None:
            return await self.app(scope, receive, send)
        values = _header(scope, b"host")
        if len(values) != 1:
            return await _refuse(scope, receive, send, 400, "the request needs exactly one Host header")
        parsed = split_host(values[0])
        if parsed is None:
            return await _refuse(scope, receive, send, 400, f"malformed Host header {values[0][:80]!r}")
        if parsed[0] not in self.hosts:
            return await _refuse(scope, receive, send, 400, f"this service does not answer to the host name "
                                 f"{parsed[0][:80]!r}; use the address its operator gave you")
        return await self.app(scope, receive, send)


def _origin(scheme: str, name: str, port: str) -> str:
    shown = f"[{name}]" if ":" in name else name
    return f"{scheme}://{shown}" + (f":{port}" if port and port != _DEFAULT_PORTS.get(scheme) else "")


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether an ``Origin`` header names the request's own scheme and host (default ports made explicit-free)."""
    o_scheme, sep, rest = origin.strip().lower().partition("://")
    mine = split_host(host)
    theirs = split_host(rest) if sep and "/" not in rest else None
    if mine is None or theirs is None:
        return False  # "null" (a sandboxed frame, a file:// page) and anything malformed are foreign
    return _origin(o_scheme, *theirs) == _origin(scheme.lower(), *mine)


class WriteGuard:
    """403 for a write (any method but GET, HEAD and OPTIONS) without ``X-Atelier-Request: 1``, or whose ``Origin``
    is another site's."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        if _header(scope, WRITE_HEADER.lower().encode()) != ["1"]:
            return await _refuse(scope, receive, send, 403, f"writes need the header {WRITE_HEADER}: 1 (the "
                                 "service's page sends it; with curl add -H 'X-Atelier-Request: 1'); it keeps other "
                                 "web sites from sending requests here")
        origins, hosts = _header(scope, b"origin"), _header(scope, b"host")
        if origins and not (len(origins) == 1 and len(hosts) == 1
                            and same_origin(origins[0], scope.get("scheme", "http"), hosts[0])):
            return await _refuse(scope, receive, send, 403, f"the request comes from another site (Origin "
                                 f"{origins[0][:80]!r}); this service takes writes only from its own page")
        return await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before the app parses it.

    A declared Content-Length is checked before a byte is read. A body without one (chunked) is read into memory up
    to the limit and replayed to the app, so the multipart parser never sees more than ``limit`` bytes.
    """

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await error_response(400, "malformed Content-Length header")(scope, receive, send)
            if int(declared) > self.limit:
                return await self._too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            total += len(message.get("body", b""))
            if total > self.limit:
                return await self._too_large(scope, receive, send)
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return chunks.pop(0) if chunks else await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        await _refuse(scope, receive, send, 413, f"request body is larger than this service accepts "
                                                 f"({self.limit:,} bytes in all); send smaller images")
