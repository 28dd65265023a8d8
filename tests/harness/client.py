"""Clients: bounded bursts of HTTP requests, and a raw TCP exchange for listeners that must refuse."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from .util import REQUEST_TIMEOUT, HarnessError


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def send_many(
    host: str,
    port: int,
    n: int,
    path: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host_header: str | None = None,
    body: bytes | str | None = None,
    timeout: float = REQUEST_TIMEOUT,
    max_seconds: float = 20.0,
) -> list[Response]:
    """`n` requests over one keep-alive connection (reopened if the server closes it).

    Bounded in count (`n`) and time (`timeout` per request, `max_seconds` in all).
    A request that fails on a *reused* connection before any response arrives is
    sent once more on a fresh one (the usual keep-alive race); any other error raises.
    """
    hdrs = dict(headers or {})
    if host_header is not None:
        hdrs["Host"] = host_header
    return requests_over(
        lambda: http.client.HTTPConnection(host, port, timeout=timeout), n, method, path, body, hdrs, max_seconds,
        who="send_many",
    )


def requests_over(
    connect: Callable[[], http.client.HTTPConnection],
    n: int,
    method: str,
    path: str,
    body: bytes | str | None,
    headers: dict[str, str],
    max_seconds: float,
    *,
    new_connection_each: bool = False,
    annotate: Callable[[http.client.HTTPConnection, dict[str, str]], None] | None = None,
    who: str = "requests_over",
) -> list[Response]:
    """`n` requests over connections from `connect()`, kept alive (a fresh one after the server closes, or for
    each request with `new_connection_each`); `annotate(conn, headers)` may add to each response's headers.

    Bounded in count (`n` <= 10000) and time (`max_seconds` in all). A request that fails on a *reused*
    connection before any response arrives is sent once more on a fresh one (the usual keep-alive race);
    any other error raises.
    """
    if n > 10_000:
        raise ValueError(f"{who}: n is bounded to 10000")
    if isinstance(body, str):
        body = body.encode()
    out: list[Response] = []
    deadline = time.monotonic() + max_seconds
    conn: http.client.HTTPConnection | None = None
    reused = False
    try:
        while len(out) < n:
            if time.monotonic() > deadline:
                raise HarnessError(f"{who}: {len(out)}/{n} responses after {max_seconds}s")
            if conn is None:
                conn = connect()
                reused = False
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                conn = None
                if reused:
                    continue
                raise
            got = {k.lower(): v for k, v in resp.getheaders()}
            if annotate is not None:
                annotate(conn, got)
            out.append(Response(resp.status, got, data))
            if resp.will_close or new_connection_each:
                conn.close()
                conn = None
            else:
                reused = True
    finally:
        if conn is not None:
            conn.close()
    return out


def read_until_closed(sock, timeout: float) -> bytes:
    """What `sock` (plain or TLS) gives until the peer closes, for at most `timeout` seconds; a read error
    raises (with what came before it lost: callers that need it read themselves)."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def raw_exchange(host: str, port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, str]:
    """Plain TCP: send `data`, read until the peer closes (bounded): (bytes read, how it ended)."""
    got = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return got, "reset"
            except socket.timeout:
                return got, "timeout"
            if not chunk:
                return got, "closed"
            got += chunk
    return got, "timeout"
