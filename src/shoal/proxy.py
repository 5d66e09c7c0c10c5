"""``shoal proxy``: an HTTPS proxy (CONNECT) that answers for Azure's own hostnames with Shoal.

A client that honours ``HTTPS_PROXY`` and trusts Shoal's CA keeps Azure's default endpoints and still talks to
Shoal: ``az`` without ``az cloud register``, the Azure SDKs with their default authority and base URL, Packer,
Terraform's azurerm provider.

- ``CONNECT management.azure.com:443`` (and ``management.core.windows.net``, ``login.microsoftonline.com``,
  ``{account}.{region}.batch.azure.com``): ``200``, then TLS is terminated here with a certificate for that
  name issued by Shoal's local CA (one per name, chosen by SNI, kept in ``<state>/tls/hosts``), and the
  decrypted bytes go, untouched, over a second TLS connection to Shoal's own HTTPS listener. The ``Host`` header
  still names the Azure host; the API answers under that name (``api/azure_hosts.py``).
- ``CONNECT`` to Shoal's own address (URLs Shoal made before a client came through the proxy): a plain tunnel.
- Any other host: ``403`` and no connection is made, unless the operator allows pass-through
  (``--proxy-passthrough``), in which case it is tunnelled as plain TCP.
- Anything but ``CONNECT``: ``405``; this is not a plain-HTTP forward proxy.

The proxy knows no Azure API: it pipes bytes. It imports only the local CA (``auth/tls.py``) and ``core``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from shoal.auth.tls import host_certificate
from shoal.core import azure_hosts

log = logging.getLogger("shoal.proxy")

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
CHUNK = 64 * 1024


@dataclass
class ProxyConfig:
    tls_dir: Path  # the state directory's ``tls``: ca.pem, ca-key.pem (host certificates are issued from them)
    upstream_host: str  # Shoal's HTTPS listener
    upstream_port: int
    passthrough: bool = False  # tunnel hosts that are not Azure's as plain TCP (otherwise 403)
    upstream_ca: Path | None = None  # what Shoal's listener is verified with (default: tls_dir/ca.pem)
    extra_own: tuple[tuple[str, int], ...] = field(default=())  # more addresses of Shoal itself (tunnelled)


class AzureProxy:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._upstream_ctx = ssl.create_default_context(cafile=str(config.upstream_ca or config.tls_dir / "ca.pem"))
        # The upstream is the address the operator configured; its certificate must chain to Shoal's CA, whatever
        # names it lists (the generated one lists 127.0.0.1 and localhost, not every address Shoal listens on).
        self._upstream_ctx.check_hostname = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- certificates ---------------------------------------------------------------------------------------
    def context_for(self, host: str) -> ssl.SSLContext:
        """The server-side TLS context for one Azure name (issued on first use, then cached)."""
        ctx = self._contexts.get(host)
        if ctx is None:
            cert, key = host_certificate(self.config.tls_dir, host)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), str(key))
            ctx.set_alpn_protocols(["http/1.1"])
            ctx.sni_callback = self._sni
            self._contexts[host] = ctx
        return ctx

    def _sni(self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        """A client may name another Azure host in SNI than in CONNECT: show that name's certificate."""
        if name:
            host = azure_hosts.normalize(name)
            if azure_hosts.role(host) is not None:
                sslobj.context = self.context_for(host)

    # -- serving --------------------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)

    async def start_on(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self._handle, sock=sock, limit=MAX_HEAD)

    def _is_own(self, host: str, port: int) -> bool:
        own = {(self.config.upstream_host, self.config.upstream_port), *self.config.extra_own}
        if self.config.upstream_host in ("127.0.0.1", "localhost"):
            own |= {("127.0.0.1", self.config.upstream_port), ("localhost", self.config.upstream_port)}
        return (host, port) in own

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await _reply(writer, 400, "Bad Request", "Not an HTTP/1.x request line.\n")
                return
            method, target = parts[0], parts[1]
            if method.upper() != "CONNECT":
                await _reply(writer, 405, "Method Not Allowed",
                             "shoal proxy is an HTTPS proxy: it only answers CONNECT host:443.\n",
                             extra=b"Allow: CONNECT\r\n")
                return
            host, port = _split_target(target)
            if host is None:
                await _reply(writer, 400, "Bad Request", f"CONNECT needs host:port, not {target!r}.\n")
                return
            name = azure_hosts.normalize(host)
            if port == 443 and azure_hosts.role(name) is not None:
                log.info("%s CONNECT %s: answered by Shoal", peer, name)
                await self._terminate(reader, writer, name)
            elif self._is_own(host, port):
                log.info("%s CONNECT %s:%s: Shoal itself, tunnelled", peer, host, port)
                await self._tunnel(reader, writer, host, port)
            elif self.config.passthrough:
                log.info("%s CONNECT %s:%s: passed through", peer, host, port)
                await self._tunnel(reader, writer, host, port)
            else:
                log.info("%s CONNECT %s:%s: refused", peer, host, port)
                await _reply(writer, 403, "Forbidden",
                             f"shoal proxy answers only for Azure's hostnames ({', '.join(azure_hosts.ARM_HOSTS)}, "
                             f"{azure_hosts.LOGIN_HOST}, {{account}}.{{region}}{azure_hosts.BATCH_SUFFIX}) on port "
                             f"443; {host}:{port} is not one of them. Start the proxy with --proxy-passthrough to "
                             "tunnel other hosts.\n")
        except Exception:  # one connection's failure must not end the proxy
            log.exception("proxy connection from %s failed", peer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _terminate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        try:
            ctx = self.context_for(host)
        except (OSError, ValueError) as exc:
            await _reply(writer, 502, "Bad Gateway", f"No certificate for {host}: {exc}\n")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(
                self.config.upstream_host, self.config.upstream_port, ssl=self._upstream_ctx,
                server_hostname=self.config.upstream_host), CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await _reply(writer, 502, "Bad Gateway", f"Shoal is not reachable at {self.config.upstream_host}:"
                                                     f"{self.config.upstream_port}: {exc}\n")
            return
        try:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            try:
                await writer.start_tls(ctx)
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                log.info("TLS handshake for %s failed: %s (does the client trust Shoal's CA?)", host, exc)
                return
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            await _reply(writer, 502, "Bad Gateway", f"{host}:{port} is not reachable: {exc}\n")
            return
        try:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


def _split_target(target: str) -> tuple[str | None, int]:
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None, 0
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


async def _reply(writer: asyncio.StreamWriter, status: int, reason: str, text: str, extra: bytes = b"") -> None:
    body = text.encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\n".encode() + b"Content-Type: text/plain; charset=utf-8\r\n"
                 + f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode() + extra + b"\r\n" + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        # TLS cannot half-close: the other direction ends when this side closes (a client whose keep-alive
        # connection Shoal closed opens a new one, as it would with Azure).
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    """Copy both ways until both directions ended (or one side reset)."""
    await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer))


def listen(host: str, port: int) -> socket.socket:
    """The proxy's listening socket (bound now, so that a port in use is reported at once)."""
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                reuse_port=False)
    sock.setblocking(False)
    return sock


async def serve_forever(proxy: AzureProxy, sock: socket.socket) -> None:
    server = await proxy.start_on(sock)
    async with server:
        await server.serve_forever()
