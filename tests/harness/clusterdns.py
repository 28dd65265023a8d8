"""Cluster DNS for the box: the real dnsmasq, in the node namespace, answering the Services' names.

    dns = ClusterDNS(node_netns, "10.250.7.1", workdir).start()
    dns.publish({"reviews-v1.default.svc.cluster.local": ["10.250.7.10", "10.250.7.11"], ...})
    dns.stop()

dnsmasq runs as `dnsmasq --no-resolv --no-hosts --addn-hosts=FILE --local-ttl=TTL --keep-in-foreground`
on the bridge address only, with `--local=/<cluster domain>/` so that an unknown
name of the cluster is NXDOMAIN (as CoreDNS says for a Service with no pods)
instead of a query forwarded nowhere. A name listed on several lines of FILE is
answered with all its addresses: that is a headless Service's record set.
`publish` rewrites FILE atomically, sends SIGHUP (dnsmasq re-reads it) and waits
(bounded) until dnsmasq answers the new sets, so a test knows when DNS changed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

from .netns import dns_query, exec_argv, tool
from .util import STOP_TIMEOUT, HarnessError, wait_until

DNS_TTL = 1
"""Seconds: the TTL of every answer (`--local-ttl`); Envoy's `respect_dns_ttl` then re-resolves this often."""


class ClusterDNS:
    def __init__(self, netns: str, address: str, workdir: Path, *, domain: str = "cluster.local", ttl: int = DNS_TTL):
        self.netns = netns
        self.address = address
        self.domain = domain
        self.ttl = ttl
        self.workdir = Path(workdir)
        self.hosts_file = self.workdir / "cluster-hosts"
        self.log_path = self.workdir / "dnsmasq.log"
        self.proc: subprocess.Popen | None = None
        self.records: dict[str, list[str]] = {}
        self.reloads = 0

    @property
    def command(self) -> list[str]:
        return [
            tool("dnsmasq") or "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",  # nothing from /etc/dnsmasq.conf or /etc/dnsmasq.d
            "--no-resolv", "--no-hosts", "--no-poll",
            f"--addn-hosts={self.hosts_file}",
            f"--local-ttl={self.ttl}",
            f"--local=/{self.domain}/",
            f"--listen-address={self.address}", "--bind-interfaces", "--except-interface=lo",
            "--port=53",
            "--user=root", "--group=root",  # the hosts file stays readable on SIGHUP (no privilege drop)
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            f"--log-facility={self.log_path}", "--log-queries",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> "ClusterDNS":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write({})
        self.proc = subprocess.Popen(
            exec_argv(self.netns, self.command),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        probe = f"meshc-box-probe.{self.domain}"

        def answering() -> bool:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise HarnessError(f"dnsmasq exited with {self.proc.returncode}: {err}\n{self.log_tail()}")
            try:
                return dns_query(self.netns, self.address, probe, timeout=0.3)[0] == 3  # NXDOMAIN: it answers
            except OSError:
                return False

        wait_until(answering, timeout, message=lambda: f"dnsmasq answering on {self.address}:53")
        return self

    def publish(self, records: dict[str, list[str]], timeout: float = 10.0) -> float:
        """Serve exactly `records` (name -> addresses); returns the seconds until dnsmasq answered them."""
        if self.proc is None or self.proc.poll() is not None:
            raise HarnessError("dnsmasq is not running")
        records = {n: sorted(set(a), key=ipaddress.ip_address) for n, a in records.items() if a}
        gone = [n for n in self.records if n not in records]
        start = time.monotonic()
        self._write(records)
        self.proc.send_signal(signal.SIGHUP)
        self.reloads += 1

        def serving() -> bool:
            for name, addrs in records.items():
                if dns_query(self.netns, self.address, name, timeout=0.5)[1] != addrs:
                    return False
            return all(dns_query(self.netns, self.address, name, timeout=0.5)[0] == 3 for name in gone)

        wait_until(serving, timeout, message=lambda: f"dnsmasq serving {records}")
        self.records = records
        return time.monotonic() - start

    def _write(self, records: dict[str, list[str]]) -> None:
        lines = [f"# cluster DNS of the box: {len(records)} name(s)"]
        by_address: dict[str, list[str]] = {}
        for name in sorted(records):
            for addr in records[name]:
                by_address.setdefault(addr, []).append(name)
        for addr in sorted(by_address, key=ipaddress.ip_address):
            lines.append(f"{addr} {' '.join(by_address[addr])}")
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hosts_file)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc.stderr:
            self.proc.stderr.close()

    def queries(self, client: str) -> set[str]:
        """The names `client` (an IP) asked for (A records), from dnsmasq's query log."""
        if not self.log_path.exists():
            return set()
        marker = f" from {client}"
        return {line.split("query[A] ", 1)[1].split(" ", 1)[0]
                for line in self.log_path.read_text(errors="replace").splitlines()
                if "query[A] " in line and line.endswith(marker)}

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} (last {len(tail)} lines) ---\n" + "\n".join(tail)
