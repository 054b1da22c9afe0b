"""What stands between the explorer's API and the rest of the world.

- Host check: only the names the server was bound to are served, so a web page on another site cannot reach
  the API through DNS rebinding.
- Cross-site check: a browser's request from a page on another origin (its `Origin` or `Sec-Fetch-Site`
  header says so) is refused before any work is done.
- Token: a server bound beyond loopback asks for a token (a header, a `?token=` link, then a cookie).
- Body limits: the body is read here, whole, before the app sees it: a declared or actual size over the limit,
  chunked bodies, and bodies that take longer than `body_seconds` are refused.
- Model work runs in worker threads, a few at a time; past a short queue the answer is 503 with Retry-After,
  so small requests stay fast while big ones run.
- Connections (`GuardedH11`, the server's protocol): a request's headers must arrive within `HEADER_SECONDS` of
  the connection opening (or of the previous response), and one client holds at most `PER_CLIENT` connections, so
  idle or slow connections cannot take the server's every slot, token or not.
- The access log never shows a token.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from fastapi import HTTPException

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_COOKIE = "vaekit_token"


PAGES = ("/", "/docs")  # what a link from another site may open: pages that read nothing and change nothing


def page_visit(scope: dict, headers: dict[str, str]) -> bool:
    """A top-level navigation to one of the PAGES (a link followed from another site): safe to serve, as any page of
    the web is; the page's own API calls are same-origin, and cross-site API calls stay refused."""
    return scope.get("method") in ("GET", "HEAD") and scope.get("path") in PAGES and \
        headers.get("sec-fetch-mode") == "navigate" and headers.get("sec-fetch-dest", "document") == "document"


def host_name(value: str) -> str:
    """'[::1]:8000' -> '::1', 'localhost:80' -> 'localhost'; '' for anything malformed."""
    try:
        host = urlsplit(f"//{value}").hostname if value else None
    except ValueError:  # '[x', a bad port
        return ""
    return (host or "").lower()


def origin_netloc(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:
        return None


class Guard:
    """ASGI middleware with the checks above, in that order, before the app sees a request."""

    def __init__(self, app: Callable, hosts: Sequence[str] = LOOPBACK, token: str | None = None,
                 max_body: int = 2 << 20, body_seconds: float = 30.0):
        self.app, self.hosts, self.token = app, {h.lower().strip("[]") for h in hosts}, token
        self.max_body, self.body_seconds = max_body, body_seconds

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            return await answer(send, *refusal)
        try:
            body = await self.read_body(receive)
        except TimeoutError:
            return await answer(send, 408, f"the request body took longer than {self.body_seconds:g} s")
        if body is None:  # the client left, or sent more than it declared
            return await answer(send, 413, f"request body larger than {self.max_body} bytes")
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # the app waits for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, self.with_cookie(scope, send))

    async def read_body(self, receive: Callable) -> bytes | None:
        """The whole body, read within `body_seconds` and at most `max_body` bytes (None past that)."""
        chunks, size = [], 0
        with anyio.fail_after(self.body_seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    return None
                if not message.get("more_body", False):
                    return b"".join(chunks)

    def refusal(self, scope: dict, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, reason) for a request that must not reach the app, or None."""
        host = host_name(headers.get("host", ""))
        if "*" not in self.hosts and host not in self.hosts:
            return 400, f"host {host[:100]!r} is not served here (DNS rebinding?); use one of {sorted(self.hosts)}"
        origin = headers.get("origin")
        if origin is not None and origin_netloc(origin) != headers.get("host", "").lower():
            return 403, "cross-origin requests are refused"
        site = headers.get("sec-fetch-site", "same-origin")
        if site not in ("same-origin", "none") and not page_visit(scope, headers):
            return 403, "cross-site requests are refused"
        if self.token is not None and not self.authorised(scope, headers):
            return 401, "this server needs its token: open the link it printed, or send 'Authorization: Bearer ...'"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, f"request body larger than {self.max_body} bytes"
        if length is None and "chunked" in headers.get("transfer-encoding", ""):
            return 411, "chunked request bodies are not accepted; send Content-Length"
        return None

    def authorised(self, scope: dict, headers: dict[str, str]) -> bool:
        given = [headers.get("authorization", "").removeprefix("Bearer ").strip(),
                 *parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", []),
                 *(part.split("=", 1)[1] for part in headers.get("cookie", "").replace(" ", "").split(";")
                   if part.startswith(f"{TOKEN_COOKIE}="))]
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given if g)

    def with_cookie(self, scope: dict, send: Callable) -> Callable:
        """A page opened with ?token= gets the token as a cookie, so its own requests carry it."""
        if self.token is None or b"token=" not in scope.get("query_string", b""):
            return send

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return send_with_cookie


async def answer(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Workers:
    """Model work off the event loop: at most `threads` jobs at once, at most `queue` more waiting."""

    def __init__(self, threads: int = 2, queue: int = 8):
        self.limiter = anyio.CapacityLimiter(threads)
        self.queue, self.waiting = queue, 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.waiting >= self.limiter.total_tokens + self.queue:
            raise HTTPException(503, "busy: too many requests for the models at once; retry shortly",
                                headers={"Retry-After": "1"})
        self.waiting += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            self.waiting -= 1


HEADER_SECONDS = 10.0  # a request's headers must be complete this long after the connection (or last response)
PER_CLIENT = 32  # connections one address may hold at once (a browser opens about 6)


def guarded_protocol(header_seconds: float = HEADER_SECONDS):
    """uvicorn's h11 protocol with a deadline for each request's headers and a bound on connections per client
    (uvicorn itself times out only idle keep-alive connections, and counts never-used ones against its limit). A
    client past its bound loses its oldest connection that is not serving a request, so a page's new request
    gets through while the client's idle connections make way; with every one busy, the new one is closed."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        clients: dict[str, list[GuardedH11]] = {}  # each address's open connections, oldest first

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.address, self.deadline = self.client[0] if self.client else "", None
            mine = GuardedH11.clients.setdefault(self.address, [])
            mine.append(self)
            live = [c for c in mine if not c.transport.is_closing()]
            if len(live) > PER_CLIENT:
                idle = next((c for c in live[:-1] if c.waiting()), self)
                idle.transport.close()
                if idle is self:
                    return
            self.start_deadline()

        def connection_lost(self, exc) -> None:
            mine = GuardedH11.clients.get(self.address, [])
            if self in mine:
                mine.remove(self)
            if not mine:
                GuardedH11.clients.pop(self.address, None)
            self.stop_deadline()
            super().connection_lost(exc)

        def waiting(self) -> bool:
            """No request in progress: waiting for the first one's headers, or the next one's."""
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            if self.waiting() and self.deadline is None:
                self.start_deadline()
            super().data_received(data)
            if not self.waiting():  # a request's headers are in: the app has it now
                self.stop_deadline()

        def start_deadline(self) -> None:
            self.deadline = self.loop.call_later(header_seconds, self.too_slow)

        def stop_deadline(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def too_slow(self) -> None:
            self.deadline = None
            if self.waiting() and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11


class HideTokens:
    """A logging filter for uvicorn's access log: the value of a query parameter the guard reads as `token` (its
    name percent-decoded, as parse_qs decodes it: `%74oken` too) becomes `(hidden)` in a logged URL."""

    def filter(self, record) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(hide_token(a) if isinstance(a, str) else a for a in record.args)
        return True


def hide_token(text: str) -> str:
    """`text` with every token value in a query string hidden."""
    from urllib.parse import unquote_plus

    path, sep, query = text.partition("?")
    if not sep:
        return text
    hidden = [f"{part.partition('=')[0]}=(hidden)" if unquote_plus(part.partition("=")[0]).strip() == "token"
              else part for part in query.split("&")]
    return f"{path}?{'&'.join(hidden)}"
