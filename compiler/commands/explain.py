"""`meshc explain POLICY_DIR --from CALLER [--from-version VERSION] [--to SERVICE] [METHOD] [PATH] [-H name:value ...]
[--format text|json]`

Follows one request through the mesh the policies compile to (in memory: nothing is written) and prints
every decision with the policy place that made it, then the answer (compiler/explain). Exit 0 when the
request could be followed (whatever its answer), 1 when the policies have errors or the request names an
unknown caller or service, or a service the caller does not call; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from compiler.diagnostics import printable

_METHOD = re.compile(r"[A-Za-z]+")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
        raise argparse.ArgumentTypeError(f"{printable(repr(text))} is not NAME:VALUE (a header name, a colon, its value)")
    return name.strip().lower(), value.strip()


class _Intermixed(argparse.ArgumentParser):
    """Positionals on both sides of options (`DIR --from a --to b GET /x`): argparse's intermixed parsing."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def register(sub) -> None:
    p = sub.add_parser(
        "explain", help="follow one request through the mesh and say what each sidecar decides, and why",
        description="Follow one request from the policies alone: the caller's route rule (and why earlier ones "
        "did not match), versions and weights, mirrors, timeout, retries, faults, header changes, mTLS, JWT, "
        "authorization, rate limits, endpoints; then the answer.",
    )
    p.add_argument("policy_dir", help="policy directory")
    p.add_argument("method", nargs="?", default="GET", help="HTTP method (default: GET)")
    p.add_argument("path", nargs="?", default="/", help="path, with ?query if any (default: /)")
    p.add_argument("--from", dest="caller", required=True, metavar="CALLER", help="the calling Service, or a Gateway")
    p.add_argument("--from-version", dest="caller_version", metavar="VERSION",
                   help="the calling pod's version (its `version` label), for route rules limited to some versions "
                   "of their callers; without it such a rule is reported as depending on it")
    p.add_argument("--to", dest="service", metavar="SERVICE",
                   help="the called Service or ExternalService (optional from a Gateway: its routes decide)")
    p.add_argument("-H", "--header", dest="headers", action="append", type=_header, default=[], metavar="NAME:VALUE",
                   help="a request header (repeatable); `host:` picks the virtual host")
    p.add_argument("--listener", help="the Gateway listener the request arrives on (default: its first that routes)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=run)
    p.__class__ = _Intermixed


def run(args) -> int:
    from compiler.build import check_policies
    from compiler.cli import _error, _print_diags
    from compiler.explain import ExplainError, Request, explain, render_text
    from compiler.lower import lower

    method, path = args.method, args.path
    if method.startswith("/") and path == "/":  # `meshc explain DIR --from a --to b /reviews`
        method, path = "GET", method
    if not _METHOD.fullmatch(method):
        _error(f"{printable(repr(method))} is not an HTTP method")
        return 2
    if not path.startswith("/"):
        _error(f"{printable(repr(path))}: a path starts with /")
        return 2
    diags, view = check_policies(Path(args.policy_dir))
    _print_diags(diags, args.policy_dir)
    if view is None:
        return 1
    request = Request(args.caller, args.service, method.upper(), path, tuple(args.headers), args.listener,
                      args.caller_version)
    try:
        result = explain(lower(view), request)
    except ExplainError as exc:
        _error(str(exc))
        return 1
    if args.format == "json":  # ASCII: names and values from policies cannot reach a terminal unescaped
        sys.stdout.write(json.dumps(result.to_json(), indent=2, sort_keys=True, ensure_ascii=True) + "\n")
    else:
        sys.stdout.write("".join(printable(line) + "\n" for line in render_text(result).splitlines()))
    return 0
