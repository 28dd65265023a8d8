"""Linux network namespaces for the cluster in a box: names, veth pairs, and sockets opened inside a namespace.

Everything here shells out to `ip` (iproute2) or calls setns(2) in a short-lived
thread, so the test process itself never leaves the root namespace:

- `ip_cmd(...)`           run `ip ...` and fail with its stderr;
- `pick_pod_range()`      a 10.250.x.0/24 that no interface or route of the root namespace overlaps;
- `socket_in(netns)`      a TCP/UDP socket created inside a namespace (it stays there: the kernel
                          binds a socket to the namespace it was created in);
- `NetnsHTTPConnection`   http.client over such a socket, e.g. to a pod's Envoy admin on 127.0.0.1;
- `dns_query(...)`        a minimal DNS A query (what c-ares asks), to see what cluster DNS answers;
- `owned_by_dead_runs()`  namespaces left behind by runs that died (SIGKILL), for the sweep at start.

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and `ip`; the cluster fixture skips otherwise.
"""

from __future__ import annotations

import ctypes
import http.client
import ipaddress
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

from .util import REQUEST_TIMEOUT, HarnessError

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
"""`ip netns exec NAME` bind-mounts every file of /etc/netns/NAME/ over /etc/ in the command's mount namespace."""
RUNS_DIR = Path("/run/meshc-kube-box")
"""One JSON file per live cluster: its owner PID and the namespaces it made (for the sweep of dead runs)."""
POD_SUPERNET = ipaddress.ip_network("10.250.0.0/16")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def tool(name: str) -> str | None:
    """Path of a system tool, also where a non-login PATH may not look (/usr/sbin: ip, dnsmasq)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def can_run() -> str | None:
    """None when this process can build a cluster in a box, else why not (for a pytest skip)."""
    if not hasattr(os, "geteuid") or os.uname().sysname != "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    missing = [name for name in ("ip", "dnsmasq", "mount", "setpriv") if tool(name) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian: apt-get install iproute2 dnsmasq-base; .ci/run does it)"
    return None


def ip_cmd(*args: str, netns: str | None = None, check: bool = True) -> str:
    """`ip [-n NETNS] ARGS...`; returns stdout, raises HarnessError with stderr on failure."""
    argv = [tool("ip") or "ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise HarnessError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def exec_argv(netns: str, argv: list[str]) -> list[str]:
    """The command line that runs `argv` inside `netns` with its /etc/netns/<netns>/ files (resolv.conf)."""
    return [tool("ip") or "ip", "netns", "exec", netns, *argv]


def add_netns(name: str) -> None:
    ip_cmd("netns", "add", name)
    ip_cmd("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Remove the name (the namespace dies with its last process) and its /etc/netns folder."""
    if (NETNS_DIR / name).exists():
        ip_cmd("netns", "delete", name, check=False)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def set_sysctl(netns: str, key: str, value: str) -> None:
    """A sysctl of one network namespace (/proc/sys/net/... as seen from inside it)."""
    path = "/proc/sys/" + key.replace(".", "/")
    proc = subprocess.run(exec_argv(netns, ["sh", "-c", 'echo "$1" > "$2"', "sh", value, path]),
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise HarnessError(f"sysctl {key}={value} in {netns}: {proc.stderr.strip()}")


def pick_pod_range(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A random /24 of 10.250.0.0/16 that no address or route (any table) of the root namespace overlaps."""
    rng = rng or random.Random()
    used: list[ipaddress.IPv4Network] = []
    for entry in json.loads(ip_cmd("-j", "addr", "show") or "[]"):
        for a in entry.get("addr_info", []):
            if a.get("family") == "inet":
                used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for entry in json.loads(ip_cmd("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = entry.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                continue  # e.g. 'broadcast'/'local' entries with odd names: not a network
    for _ in range(200):
        net = ipaddress.ip_network(f"10.250.{rng.randint(1, 254)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise HarnessError(f"no free /24 in {POD_SUPERNET}: every candidate overlaps {used}")


# ---------------------------------------------------------------------------
# Sockets inside a namespace
# ---------------------------------------------------------------------------


def socket_in(netns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """An IPv4 socket that lives in `netns`: created by a thread that joined it (setns affects that thread only)."""
    box: dict = {}

    def make() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            box["error"] = HarnessError(f"no network namespace '{netns}': {exc}")
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                box["error"] = OSError(err, f"setns({netns}): {os.strerror(err)}")
                return
            box["sock"] = socket.socket(socket.AF_INET, kind)
        finally:
            os.close(fd)

    t = threading.Thread(target=make, name=f"setns-{netns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class NetnsHTTPConnection(http.client.HTTPConnection):
    """http.client.HTTPConnection whose socket is opened inside `netns`."""

    def __init__(self, netns: str, host: str, port: int, timeout: float = REQUEST_TIMEOUT):
        super().__init__(host, port, timeout=timeout)
        self.netns = netns

    def connect(self) -> None:
        sock = socket_in(self.netns)
        try:
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def http_get(netns: str, host: str, port: int, path: str, *, headers: dict[str, str] | None = None,
             method: str = "GET", timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
    """One request from inside `netns`: (status, body)."""
    conn = NetnsHTTPConnection(netns, host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def dns_query(netns: str, server: str, name: str, timeout: float = 1.0) -> tuple[int, list[str]]:
    """Ask `server`:53 (from inside `netns`) for the A records of `name`: (rcode, sorted addresses)."""
    qid = random.randint(0, 0xFFFF)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    sock = socket_in(netns, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        data = sock.recv(4096)
    finally:
        sock.close()
    rid, flags, _qd, ancount, _ns, _ar = struct.unpack(">HHHHHH", data[:12])
    if rid != qid:
        raise HarnessError(f"DNS answer for another query ({rid} != {qid})")
    pos = 12 + len(question) + 4
    addresses = []
    for _ in range(ancount):
        if data[pos] & 0xC0 == 0xC0:  # compressed name pointer
            pos += 2
        else:
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            addresses.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return flags & 0x000F, sorted(addresses, key=ipaddress.ip_address)


# ---------------------------------------------------------------------------
# Runs: who owns which namespaces (so a run killed with SIGKILL is cleaned by the next one)
# ---------------------------------------------------------------------------


def record_run(prefix: str, namespaces: list[str]) -> None:
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = RUNS_DIR / f".{prefix}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "namespaces": sorted(namespaces)}))
    os.replace(tmp, RUNS_DIR / f"{prefix}.json")


def forget_run(prefix: str) -> None:
    (RUNS_DIR / f"{prefix}.json").unlink(missing_ok=True)


def owned_by_dead_runs() -> dict[str, list[str]]:
    """prefix -> namespaces, for every recorded run whose owner process is gone."""
    dead: dict[str, list[str]] = {}
    for f in sorted(RUNS_DIR.glob("*.json")) if RUNS_DIR.is_dir() else []:
        try:
            doc = json.loads(f.read_text())
            pid = int(doc["pid"])
        except (OSError, ValueError, KeyError):
            continue  # being written or removed
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # killed, not yet reaped
                dead[f.stem] = list(doc.get("namespaces", []))
        except FileNotFoundError:
            dead[f.stem] = list(doc.get("namespaces", []))
        except (OSError, IndexError):
            continue  # not ours to judge
    return dead


def pids_in(netns: str) -> list[int]:
    """Processes running inside a namespace (`ip netns pids`)."""
    out = ip_cmd("netns", "pids", netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def remove_namespaces(names: list[str]) -> None:
    """SIGKILL what still runs inside (our own pods' processes), then remove the namespaces."""
    for name in names:
        for pid in pids_in(name):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    for name in reversed(names):
        delete_netns(name)


def sweep_dead_runs() -> list[str]:
    """Remove namespaces of earlier clusters whose test process died without cleaning up."""
    swept = []
    for run, names in owned_by_dead_runs().items():
        remove_namespaces(names)
        forget_run(run)
        swept += names
    return swept
