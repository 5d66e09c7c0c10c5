"""A DNS relay at the machines' gateway, for hosts whose own resolver is on their loopback.

Machines with networks of their own use the host's resolvers (their ``/etc/resolv.conf`` is the host's). Many
hosts resolve through a stub on their loopback (systemd-resolved's ``127.0.0.53``, dnsmasq), which a machine
cannot reach. Then the gateway relays: queries arriving at ``<gateway>:53`` (UDP and TCP) are passed to the
host's resolver as they are, and the answers go back; machines get ``nameserver <gateway>``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import struct
import threading

log = logging.getLogger(__name__)
TIMEOUT = 5.0


class _Udp(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: tuple[str, int]


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        query, sock = self.request
        server: _Udp = self.server  # type: ignore[assignment]
        with socket.socket(socket.AF_INET6 if ":" in server.upstream[0] else socket.AF_INET,
                           socket.SOCK_DGRAM) as up:
            up.settimeout(TIMEOUT)
            try:
                up.sendto(query, server.upstream)
                answer = up.recv(65535)
            except OSError:
                return  # the client retries, as with any lost datagram
        sock.sendto(answer, self.client_address)


class _Tcp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    upstream: tuple[str, int]


def _read_message(sock: socket.socket) -> bytes | None:
    head = _read_exact(sock, 2)
    return None if head is None else _read_exact(sock, struct.unpack("!H", head)[0])


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Tcp = self.server  # type: ignore[assignment]
        self.request.settimeout(TIMEOUT)
        with contextlib.suppress(OSError):
            query = _read_message(self.request)
            if query is None:
                return
            with socket.create_connection(server.upstream, timeout=TIMEOUT) as up:
                up.sendall(struct.pack("!H", len(query)) + query)
                answer = _read_message(up)
            if answer is not None:
                self.request.sendall(struct.pack("!H", len(answer)) + answer)


class DnsRelay:
    def __init__(self, listen: str, upstream: str, port: int = 53, upstream_port: int = 53) -> None:
        self.udp = _Udp((listen, port), _UdpHandler)
        self.tcp = _Tcp((listen, port), _TcpHandler)
        self.udp.upstream = self.tcp.upstream = (upstream, upstream_port)
        self.threads = [threading.Thread(target=s.serve_forever, name=f"dns-relay-{n}", daemon=True)
                        for n, s in (("udp", self.udp), ("tcp", self.tcp))]

    def start(self) -> DnsRelay:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()
