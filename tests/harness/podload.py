"""A load client that runs inside a caller pod, as the caller's app would (bounded in count and time).

    ip netns exec <pod> python -m harness.podload --target 127.0.0.1:15001 --host reviews \
        --count 1000 --seconds 20 --out results.jsonl [--header x-user:alice] [--keepalive]

Sends GET requests to the pod's own sidecar (outbound listener) with `Host: <service>`,
one after the other (`--concurrency` streams), each on a fresh connection unless
`--keepalive`. Writes one JSON line per request to `--out` as it goes:

    {"stream": 0, "start": 12.5, "at": 12.503, "status": 200, "pod": "reviews-v1-0", "version": "v1", "error": ""}

`start`/`at` are CLOCK_MONOTONIC seconds (the same clock as the test process's
time.monotonic()), `status` 0 means no HTTP answer (refused, reset, timeout).
Stops after `--count` requests, after `--seconds`, or on SIGTERM, whichever
comes first, then writes `{"done": true, "requests": N}`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import sys
import threading
import time

MAX_COUNT = 20_000
MAX_SECONDS = 120.0


class _Conn(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _one(conn: _Conn, path: str, headers: dict[str, str]) -> tuple[int, dict | None, bool]:
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    doc = None
    if body[:1] == b"{":
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
    return resp.status, doc, resp.will_close


def run(args: argparse.Namespace) -> int:
    host, _, port = args.target.rpartition(":")
    headers = {"Host": args.host}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    count = min(args.count, MAX_COUNT)
    deadline = time.monotonic() + min(args.seconds, MAX_SECONDS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()
    sent = [0]
    out = open(args.out, "a", buffering=1)

    def take() -> bool:
        with lock:
            if sent[0] >= count:
                return False
            sent[0] += 1
            return True

    def stream(n: int) -> None:
        conn: _Conn | None = None
        while not stop.is_set() and time.monotonic() < deadline and take():
            start = time.monotonic()
            status, doc, error = 0, None, ""
            try:
                if conn is None:
                    conn = _Conn(host, int(port), timeout=args.timeout)
                status, doc, will_close = _one(conn, args.path, headers)
                if will_close or not args.keepalive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                    conn = None
            line = {"stream": n, "start": round(start, 6), "at": round(time.monotonic(), 6), "status": status,
                    "pod": (doc or {}).get("pod"), "version": (doc or {}).get("version"), "error": error}
            if args.echo_header:
                line["echo"] = ((doc or {}).get("headers") or {}).get(args.echo_header.lower())
            with lock:
                out.write(json.dumps(line) + "\n")
            if args.pause:
                time.sleep(args.pause)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(max(1, args.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=MAX_SECONDS + args.timeout + 5)
    with lock:
        out.write(json.dumps({"done": True, "requests": sent[0]}) + "\n")
    out.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podload", description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="127.0.0.1:15001", help="host:port of the pod's outbound listener")
    ap.add_argument("--host", required=True, help="Host header: the service called")
    ap.add_argument("--path", default="/")
    ap.add_argument("--header", action="append", default=[], help="name:value, repeatable")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between two requests of a stream")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--keepalive", action="store_true")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--echo-header", default="", help="also record this request header as the app saw it")
    ap.add_argument("--out", required=True)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
