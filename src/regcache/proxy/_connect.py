"""The CONNECT front end: a drop-in for an HTTPS proxy that caches registries.

Nodes point ``HTTPS_PROXY`` at regcache. ``CONNECT`` to a configured registry
is intercepted: regcache answers 200, terminates TLS with a leaf minted for
the host named in the CONNECT request (clients send the same name as SNI), and
serves the registry API from the same engine and cache as the mirror. A
target listed in ``[proxy] tunnel`` is passed through as bytes; anything else
is refused (never an open proxy). Plain requests serve ``/ca.crt``,
``/setup.sh`` and absolute-form ``http://registry/v2/...`` requests.

Upstream credentials: a registry's configured credentials are used when it
has them. For one without, regcache answers for the registry: the client's
own Basic credentials (which Docker, containerd and containers/image send
when a registry asks for Basic auth) become the credentials regcache uses
upstream, and a client that sent none is asked for them when the upstream
refuses it. This keeps the token dance in one place and gives access
confirmations a stable principal (a client's token would change every few
minutes, so nothing confirmed for it could be served in an outage).
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import logging
import re
from urllib.parse import urlsplit

import attrs
import h11
import trio

from regcache._streams import PrefixedStream
from regcache.config import Config, host_pattern_matches
from regcache.core import ErrorCode, RegcacheError, RemoteProtocolError, error_body
from regcache.core._connect import (
    Intercept,
    Login,
    Refuse,
    Tunnel,
    classify_connect,
    parse_connect_target,
)
from regcache.engine import Engine

from ._mirror import MirrorApp
from ._server import SERVER_NAME, Handler, Reply, Request, serve_http
from ._tls import ServerContexts
from ._users import ClientUsers

log = logging.getLogger("regcache.proxy")

#: How long a client may take to complete the TLS handshake after CONNECT.
HANDSHAKE_TIMEOUT = 15.0

#: How long connecting to a tunnel target may take.
TUNNEL_CONNECT_TIMEOUT = 10.0

#: Bytes copied per read in a plain tunnel.
TUNNEL_CHUNK = 64 * 1024

#: NO_PROXY that /setup.sh writes: loopback, the private ranges and the
#: Kubernetes service domains, so cluster traffic never reaches regcache.
SETUP_NO_PROXY = (
    "localhost,127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,.svc,.cluster.local"
)

# A Host header fit to be pasted into a shell script run as root: a host
# name or IP literal and an optional port, nothing else.
_SAFE_HOST = re.compile(r"\A(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?\Z")


@attrs.define
class ConnectProxy:
    """The CONNECT listener's handler, over the same engine as the mirror."""

    engine: Engine
    config: Config
    contexts: ServerContexts
    app: MirrorApp = attrs.field(init=False)
    users: ClientUsers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.app = MirrorApp(self.engine, client_credentials=True)
        self.users = ClientUsers(self.config.proxy.users)

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve one client connection to the proxy port."""
        peer = str(stream.socket.getpeername()[0])
        await serve_http(stream, self.handle_plain, client=peer, on_connect=self._on_connect)

    # -- plain requests ----------------------------------------------------

    async def handle_plain(self, request: Request) -> Reply:
        """``/ca.crt``, ``/setup.sh`` and absolute-form registry requests."""
        if request.target.startswith(("http://", "https://")):
            return await self._absolute_form(request)
        path = request.target.split("?", 1)[0]
        if path == "/ca.crt" and request.method in ("GET", "HEAD"):
            return Reply(
                200, (("Content-Type", "application/x-pem-file"),), self.contexts.authority.cert_pem
            )
        if path == "/setup.sh" and request.method in ("GET", "HEAD"):
            return Reply(200, (("Content-Type", "text/x-shellscript"),), self.setup_script(request))
        return _text_reply(404, "regcache's proxy port serves /ca.crt, /setup.sh and CONNECT\n")

    def setup_script(self, request: Request) -> bytes:
        """The node setup script, carrying the address the node reached us at."""
        host = request.header("host") or ""
        if not _SAFE_HOST.match(host):
            listen = self.config.proxy.listen
            host = f"{listen.host or '127.0.0.1'}:{listen.port}" if listen else "127.0.0.1:3128"
        template = importlib.resources.files("regcache.proxy").joinpath("data/setup.sh").read_text()
        no_proxy = SETUP_NO_PROXY
        bare_host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not _is_ip(bare_host.strip("[]")):
            no_proxy += f",{bare_host}"
        ca_pem = self.contexts.authority.cert_pem.decode().strip()
        return (
            template.replace("@PROXY_URL@", f"http://{host}")
            .replace("@NO_PROXY@", no_proxy)
            .replace("@CA_PEM@", ca_pem)
            .encode()
        )

    async def _absolute_form(self, request: Request) -> Reply:
        if not await self.users.check(request.header("proxy-authorization")):
            return _proxy_auth_reply()
        parts = urlsplit(request.target)
        if parts.scheme != "http" or not parts.hostname:
            return _text_reply(400, "only plain-HTTP registries are proxied in absolute form\n")
        port = parts.port or 80
        decision = classify_connect(
            parts.hostname, port, self.engine.registry_map, tunnel_allowed=False
        )
        if not isinstance(decision, Intercept):
            log.warning("refused absolute-form request for %s", parts.netloc)
            return _text_reply(403, getattr(decision, "reason", "refused\n"))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        inner = attrs.evolve(request, target=target, host=f"{parts.hostname}:{port}")
        return await self.app.handle(inner)

    # -- CONNECT -----------------------------------------------------------

    async def _on_connect(
        self, conn: h11.Connection, stream: trio.abc.Stream, request: Request
    ) -> None:
        if not await self.users.check(request.header("proxy-authorization")):
            await _answer(conn, stream, _proxy_auth_reply())
            return
        try:
            host, port = parse_connect_target(request.target)
        except RemoteProtocolError as exc:
            await _answer(conn, stream, _text_reply(400, exc.message + "\n"))
            return
        tunnel_allowed = any(
            host_pattern_matches(pattern, host, port) for pattern in self.config.proxy.tunnel
        )
        decision = classify_connect(
            host,
            port,
            self.engine.registry_map,
            tunnel_allowed=tunnel_allowed,
            token_hosts=self.engine.token_hosts(),
        )
        if isinstance(decision, Refuse):
            log.warning("%s: refused CONNECT %s:%d", request.client, host, port)
            await _answer(conn, stream, _text_reply(403, decision.reason))
        elif isinstance(decision, Tunnel):
            await self._tunnel(conn, stream, request, decision)
        elif isinstance(decision, Login):
            await self._intercept(conn, stream, request, decision, self._answer_login)
        else:
            await self._intercept(conn, stream, request, decision, self.app.handle)

    async def _answer_login(self, request: Request) -> Reply:
        """Any GET on an intercepted token realm host is a login (see core Login)."""
        if request.method != "GET":
            return _text_reply(405, "this host only answers registry logins (GET)\n")
        body = self.app.logins.issue(request.header("authorization"))
        return Reply(200, (("Content-Type", "application/json"),), body)

    async def _intercept(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        request: Request,
        target: Intercept | Login,
        handler: Handler,
    ) -> None:
        try:
            context = self.contexts.context_for(target.host)
        except RegcacheError as exc:
            await _answer(conn, stream, _text_reply(502, f"cannot mint a certificate: {exc}\n"))
            return
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])))
        leftover, _ = conn.trailing_data
        tls = trio.SSLStream(
            PrefixedStream(stream, bytes(leftover)),
            context,
            server_side=True,
            https_compatible=True,
        )
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as exc:
            # A client that does not trust our CA ends up here; say so.
            log.warning(
                "%s: TLS handshake for %s failed (does the client trust regcache's CA?): %s",
                request.client,
                target.host,
                exc.__cause__ or exc,
            )
            return
        log.debug("%s: intercepting %s for %s", request.client, target.host, target.registry)
        authority = f"{target.host}:{target.port}"
        await serve_http(tls, handler, client=request.client, host=authority)

    async def _tunnel(
        self, conn: h11.Connection, stream: trio.abc.Stream, request: Request, target: Tunnel
    ) -> None:
        try:
            with trio.fail_after(TUNNEL_CONNECT_TIMEOUT):
                upstream = await trio.open_tcp_stream(target.host, target.port)
        except (OSError, trio.TooSlowError) as exc:
            await _answer(conn, stream, _text_reply(502, f"cannot reach {request.target}: {exc}\n"))
            return
        log.info("%s: tunnel to %s:%d", request.client, target.host, target.port)
        async with upstream:
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])))
            leftover, _ = conn.trailing_data
            if leftover:
                await upstream.send_all(bytes(leftover))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, stream, upstream, nursery.cancel_scope)
                nursery.start_soon(_pump, upstream, stream, nursery.cancel_scope)


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(TUNNEL_CHUNK):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        done.cancel()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _text_reply(status: int, text: str) -> Reply:
    return Reply(status, (("Content-Type", "text/plain; charset=utf-8"),), text.encode())


def _proxy_auth_reply() -> Reply:
    return Reply(
        407,
        (("Proxy-Authenticate", 'Basic realm="regcache"'), ("Content-Type", "application/json")),
        error_body(ErrorCode.UNAUTHORIZED, "regcache's proxy requires a user name and password"),
    )


async def _answer(conn: h11.Connection, stream: trio.abc.Stream, reply: Reply) -> None:
    """Answer a CONNECT with a final (non-2xx) reply and close."""
    assert isinstance(reply.body, bytes)
    headers = [
        *reply.headers,
        ("Content-Length", str(len(reply.body))),
        ("Connection", "close"),
        ("Server", SERVER_NAME),
    ]
    data = conn.send(h11.Response(status_code=reply.status, headers=headers))
    data += conn.send(h11.Data(data=reply.body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)
