"""What Envoy checks, meshc checks first: values Envoy refuses are positioned meshc errors, and the
values right at the edge of what Envoy accepts still build and pass the real Envoy.

Rows marked `envoy` build a small mesh and hand every sidecar to `envoy --mode validate` (the
dynamic output through its static twin, and the `--static` bootstrap.yaml read by Envoy itself,
so Envoy's own YAML reader sees the UTF-8 text). The refusals themselves are error cases under
tests/errors/ (tests/test_errors.py).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from compiler.build import BuildOptions, build
from compiler.kubernetes import yaml_out
from compiler.serialize import Serializer
from compiler.validate.envoy import envoy_binary, validate_all

_MESH = """\
kind: Mesh
name: limits
{mesh_extra}
---
kind: Service
name: web
port: 9080
app_port: 20190
sidecar: {{address: 127.0.19.1}}
calls: [api]
---
kind: Service
name: api
port: 9080
app_port: 20191
sidecar: {{address: 127.0.19.2}}
{api_extra}
"""


def _mesh(tmp_path: Path, docs: str = "", mesh_extra: str = "", api_extra: str = "") -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(parents=True, exist_ok=True)
    text = _MESH.format(mesh_extra=mesh_extra, api_extra=api_extra) + "---\n" + textwrap.dedent(docs)
    (folder / "mesh.yaml").write_text(text.rstrip("-\n") + "\n", encoding="utf-8")
    return folder


def _codes(policies: Path) -> list[str]:
    return [d.code for d in build(policies).diagnostics if d.is_error]


def _write(files: dict[str, bytes], out: Path) -> list[Path]:
    for rel, data in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return sorted(p.parent for p in out.glob("*/bootstrap.yaml"))


def envoy_accepts(policies: Path, tmp_path: Path) -> dict[str, bytes]:
    """Build dynamic and static; every sidecar passes the real Envoy. Returns the dynamic build's files."""
    result = build(policies)
    assert result.ok, [str(d.message) for d in result.diagnostics]
    verdicts = validate_all(_write(result.files, tmp_path / "out"))
    assert verdicts and all(v.ok for v in verdicts), [v.output for v in verdicts if not v.ok]
    static = build(policies, BuildOptions(static=True))
    assert static.ok
    binary = envoy_binary()
    for sidecar in _write(static.files, tmp_path / "static"):
        proc = subprocess.run(
            [binary, "--mode", "validate", "-c", str(sidecar / "bootstrap.yaml"), "-l", "error"],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, (sidecar.name, proc.stdout + proc.stderr)
    return result.files


# --------------------------------------------------------------------------
# one cluster per name
# --------------------------------------------------------------------------

_RATELIMIT = """\
kind: Service
name: ratelimit
protocol: grpc
port: 9081
app_port: 20192
sidecar: {address: 127.0.19.3}
---
kind: TrafficPolicy
service: api
global_rate_limit: {service: ratelimit, domain: shop, descriptors: [destination]}
"""


def test_service_calling_its_rate_limit_service_has_that_cluster_once(tmp_path):
    """It used to get `outbound|ratelimit|default` twice, which Envoy refuses (duplicate cluster)."""
    policies = _mesh(tmp_path, _RATELIMIT, api_extra="calls: [ratelimit]")
    files = envoy_accepts(policies, tmp_path)
    names = [c["name"] for c in yaml.safe_load(files["api/clusters.yaml"])["resources"]]
    assert names.count("outbound|ratelimit|default") == 1
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------
# text outside the basic plane
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["plain", "héllo", "😀", "a\U0010fffdb", "tab\tnew\nline", "quote\"back\\slash", "\x7f\x85\u2028\u2029\ufeff"],
)
def test_serialised_strings_read_back_as_yaml_and_json(text):
    encoded = Serializer().dumps({"k": [text]})
    assert "\\ud" not in encoded.lower()  # never surrogate escapes
    assert yaml.load(encoded, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) == {"k": [text]}
    assert yaml.safe_load(encoded) == {"k": [text]}  # the pure-Python reader too
    assert json.loads(encoded) == {"k": [text]}


def test_non_ascii_is_written_as_utf8():
    assert Serializer().dumps("😀 ü") == '"😀 ü"'
    assert Serializer().dumps("\u2028") == '"\\u2028"'


_EMOJI_JWKS = (
    '{"keys": [{"kty": "RSA", "kid": "k", "alg": "RS256", "use": "sig", "n": "0rBDV8OIIDbX0D7JbrBUx9CKQuiaOIrik'
    "DmoxyeG97kL28euno_w3l9CtMURK8U1-CQsWDvIN8a22usu-ptnogo1inNEP-TQyZLALi6W14y2DaG7SjFh5gJQD7A4FcMsDG3wSyzz"
    "YKRgwIWl5UfnEm1tUzlbd43oobCJy785b9W-aypEJPcjJFYej8K2eyE0K03DB25-T_0gcEW59s7DxGRL2ZljzYBSd41Ve7i1QSVDo98"
    "IWZyJ2VQr978eOLNCnLWIA8OC33vpM6Wc3cKqP2R81MuMvKq-_GdbdtbVynJwHG6qphvWkSvDzUckIUZglXRdpgWKuGOrNPiVDeIqa"
    'w", "e": "AQAB"}]}'
)

_EMOJI = f"""\
kind: Service
name: zipkin
port: 9411
app_port: 20193
sidecar: {{address: 127.0.19.4}}
observability: {{tracing: false}}
---
kind: Route
service: api
rules:
  - match: {{path: {{exact: /hi}}}}
    respond: {{status: 200, body: "héllo 😀\\n"}}
  - to: {{default: 100}}
    request_headers: {{set: {{x-emoji: "😀 ok"}}}}
    response_headers: {{add: {{x-emoji: "ü😀"}}}}
---
kind: RequestAuthentication
service: api
providers:
  - name: p
    issuer: "https://😀.example"
    jwks: '{_EMOJI_JWKS}'
rules:
  - paths: [/]
    allow_missing: true
"""

_EMOJI_TRACING = 'observability: {tracing: {provider: zipkin, collector: zipkin, sampling: 100, tags: {"team😀": "ü😀"}}}'


def test_emoji_in_issuer_tag_header_and_body_pass_envoy(tmp_path):
    """Characters outside the basic plane are written as UTF-8 (they were JSON surrogate pairs, which
    YAML readers, Envoy's included, refuse; the bootstrap's parse-back failed on them)."""
    policies = _mesh(tmp_path, _EMOJI, mesh_extra=_EMOJI_TRACING)
    files = envoy_accepts(policies, tmp_path)
    routes = files["web/routes-outbound.yaml"].decode("utf-8")
    assert "héllo 😀" in routes and "😀 ok" in routes
    assert "https://😀.example" in files["api/listeners.yaml"].decode("utf-8")
    assert "team😀" in files["web/listeners.yaml"].decode("utf-8")


def test_kubernetes_configmap_round_trips_non_ascii():
    data = {"routes.yaml": '{"body": "héllo 😀"}\n', "odd": "\u2028\x85 \U0010fffd\n"}
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": data}
    assert yaml.safe_load(yaml_out.dumps(doc)) == doc


def test_bad_ip_message_names_the_value():
    from pydantic import TypeAdapter, ValidationError

    from compiler.policy.types import IPAddress

    with pytest.raises(ValidationError) as exc:
        TypeAdapter(IPAddress).validate_python("10.0.0.300")
    assert "'10.0.0.300' is not an IP address" in str(exc.value)


# --------------------------------------------------------------------------
# regular expressions: RE2, within Envoy's program-size limit
# --------------------------------------------------------------------------

_A100 = "/" + "a" * 95  # RE2 program size exactly 100
_COOKIE_62 = "x" * 62  # with name `s`, the emitted Cookie-header regex is of size 94


def _regex_route(path_regex: str, header_regex: str = "x", cookie: str = "x") -> str:
    return f"""\
kind: Route
service: api
rules:
  - match:
      path: {{regex: '{path_regex}'}}
      headers: [{{name: x-h, regex: '{header_regex}'}}]
      cookies: [{{name: s, exact: '{cookie}'}}, {{name: t, regex: '(?i)beta|gamma'}}]
      query: [{{name: q, regex: '\\z|x'}}]
    to: {{default: 100}}
    rewrite: {{regex: {{pattern: '^/(?P<n>[0-9]+)$', substitution: '/\\1'}}}}
  - to: {{default: 100}}
    cors: {{allow_origins: ['regex:https://\\p{{Greek}}+\\.example']}}
"""


def test_re2_syntax_python_refuses_passes_envoy(tmp_path):
    """`\\p{Greek}`, `\\z`, `(?i)` and `(?P<n>...)` are RE2; meshc used to judge them with Python's `re`."""
    policies = _mesh(tmp_path, _regex_route(r"/\p{Greek}+/(?i)x", header_regex=r"a\z"))
    envoy_accepts(policies, tmp_path)


def test_regex_program_size_limit_is_envoys(tmp_path):
    """Size 100 builds and Envoy takes it; the same file with size 101 is refused by Envoy (so the limit
    meshc checks is Envoy's), and meshc refuses 101 itself."""
    from compiler.policy.regex import program_size

    assert program_size(_A100) == 100 and program_size(_A100 + "a") == 101
    policies = _mesh(tmp_path, _regex_route(_A100, cookie=_COOKIE_62))
    files = envoy_accepts(policies, tmp_path)
    routes = tmp_path / "out" / "web" / "routes-outbound.yaml"
    assert _A100 in files["web/routes-outbound.yaml"].decode()
    routes.write_text(routes.read_text().replace(_A100, _A100 + "a"))
    [verdict] = [v for v in validate_all([tmp_path / "out" / "web"])]
    assert not verdict.ok and "program size" in verdict.output.lower()
    assert _codes(_mesh(tmp_path / "b", _regex_route(_A100 + "a"))) == ["E104"]


@pytest.mark.parametrize(
    "pattern",
    ["", "/a(?=b)", "/a(?!b)", "(?<=a)b", "(a)\\1", "a++", "a*+", "[", "a{1001}", "\\Z"],
)
def test_regex_envoy_refuses_is_e104(tmp_path, pattern):
    assert _codes(_mesh(tmp_path / "b", _regex_route("/x", header_regex=pattern.replace("'", "''")))) == ["E104"]


def test_long_cookie_value_is_refused_at_its_field(tmp_path):
    """meshc's own Cookie-header regex grows with the value: past Envoy's limit, the value is refused."""
    from compiler.policy import CookieMatch

    CookieMatch(name="s", exact=_COOKIE_62)
    with pytest.raises(ValueError, match="program of size 101, over"):
        CookieMatch(name="s", exact=_COOKIE_62 + "xxxxxxx")
    assert _codes(_mesh(tmp_path / "b", _regex_route("/x", cookie="x" * 90))) == ["E104"]


# --------------------------------------------------------------------------
# durations and counts: Envoy's ranges
# --------------------------------------------------------------------------

_U32 = 2**32 - 1
_LONGEST = "9223372035s"  # Envoy refuses 9223372036s (int64 nanoseconds)


def _ranges(d_min: str, d_max: str, per: str, count: int) -> str:
    """Every duration and count field near one edge: `d_min` where Envoy wants > 0, `d_max` elsewhere."""
    return f"""\
kind: Service
name: rl
protocol: grpc
port: 9081
app_port: 20192
sidecar: {{address: 127.0.19.3}}
---
kind: TrafficPolicy
service: api
connection_pool: {{max_connections: {count}, max_pending_requests: {count}, max_requests: {count}, max_retries: {count}}}
outlier_detection:
  consecutive_5xx: {count}
  consecutive_gateway_errors: {count}
  interval: {d_min}
  base_ejection_time: {d_max}
  success_rate: {{min_hosts: {count}, request_volume: {count}, stdev_factor: {count}}}
health_check: {{path: /h, interval: {d_max}, timeout: {d_min}, healthy_threshold: {count}, unhealthy_threshold: {count}}}
rate_limit: {{requests: {count}, per: {per}}}
global_rate_limit: {{service: rl, domain: d, timeout: {d_max}}}
---
kind: Route
service: api
retry_budget: {{percent: 100, min_concurrency: {count}}}
rules:
  - match: {{path: {{prefix: /a}}}}
    to: {{default: 100}}
    timeout: {d_max}
    idle_timeout: {d_max}
    fault: {{delay: {{fixed: {d_min}}}}}
    retries: {{attempts: 10, per_try_timeout: {d_max}, backoff: {{base: {d_max}}}}}
    rate_limit: {{requests: {count}, per: {per}}}
  - to: {{default: 100}}
    retries: {{attempts: 1, backoff: {{base: {d_min}, max: {d_min}}}}}
    fault: {{delay: {{fixed: {d_max}}}}}
"""


@pytest.mark.parametrize(
    "d_min, d_max, per, count",
    [("1ms", _LONGEST, "50ms", _U32), ("1ms", "2ms", _LONGEST, 1)],
    ids=["largest", "smallest"],
)
def test_duration_and_count_edges_pass_envoy(tmp_path, d_min, d_max, per, count):
    mesh = f"defaults: {{timeout: {d_max}, connect_timeout: {d_min}}}\n"
    mesh += "observability: {access_log: {to: stdout, only: slow, slow_over: 4294967295ms}}"
    envoy_accepts(_mesh(tmp_path, _ranges(d_min, d_max, per, count), mesh_extra=mesh), tmp_path)


@pytest.mark.parametrize(
    "d_min, d_max, per, count, refused",
    [
        ("0ms", "1s", "1s", 1, 6),  # connect_timeout, outlier interval, health-check timeout, fault delay, backoff base, max
        ("1ms", "9223372036s", "1s", 1, 9),  # every duration given at the maximum
        ("1ms", "1s", "49ms", 1, 2),  # both rate limits' fill interval
        ("1ms", "1s", "1s", _U32 + 1, 14),  # every count
    ],
    ids=["zero", "too-long", "fill-interval", "uint32"],
)
def test_duration_and_count_past_the_edge_are_e104(tmp_path, d_min, d_max, per, count, refused):
    mesh = f"defaults: {{timeout: {d_max}, connect_timeout: {d_min}}}"
    assert _codes(_mesh(tmp_path, _ranges(d_min, d_max, per, count), mesh_extra=mesh)) == ["E104"] * refused


def test_backoff_max_below_base_is_refused():
    from compiler.policy.route import Backoff

    Backoff(base="100ms", max="100ms")
    with pytest.raises(ValueError, match="shorter than base"):
        Backoff(base="100ms", max="99ms")


# --------------------------------------------------------------------------
# headers, health-check paths, direct response bodies
# --------------------------------------------------------------------------


def test_percent_in_header_values_is_escaped_for_envoy():
    """Envoy reads `%...%` in a header value as a command and refuses a lone `%`: meshc writes `%%`."""
    from compiler.emit.route_action import set_headers

    [entry] = set_headers([("x-discount", "50% off %START_TIME%")])
    assert entry["header"] == {"key": "x-discount", "value": "50%% off %%START_TIME%%"}


_HEADERS_AT_THE_EDGE = """\
kind: Route
service: api
rules:
  - match: {path: {exact: /big}}
    respond: {status: 200, body: "BODY"}
  - to: {default: 100}
    request_headers:
      add: {x-percent: "50%", x-tab: "a\\tb"}
      set: {x-command: "%START_TIME% %FOO%", x-long: "LONG"}
      remove: [x-debug]
    response_headers: {set: {x-emoji: "100% 😀"}, remove: [server]}
---
kind: TrafficPolicy
service: api
health_check: {path: "/health check\\t%"}
"""


def test_header_values_bodies_and_paths_at_the_edge_pass_envoy(tmp_path):
    body = "😀" * 1024  # 4096 bytes of UTF-8
    docs = _HEADERS_AT_THE_EDGE.replace("BODY", body).replace("LONG", "v" * 16384)
    files = envoy_accepts(_mesh(tmp_path, docs), tmp_path)
    routes = files["web/routes-outbound.yaml"].decode()
    assert '"50%%"' in routes and '"%%START_TIME%% %%FOO%%"' in routes


@pytest.mark.parametrize(
    "docs",
    [
        "kind: Route\nservice: api\nrules:\n  - to: {default: 100}\n    request_headers: {set: {host: x}}\n",
        "kind: Route\nservice: api\nrules:\n  - to: {default: 100}\n    request_headers: {remove: [':path']}\n",
        "kind: Route\nservice: api\nrules:\n  - to: {default: 100}\n    response_headers: {add: {':status': '200'}}\n",
        'kind: Route\nservice: api\nrules:\n  - to: {default: 100}\n    request_headers: {set: {x-a: "a\\r\\nb"}}\n',
        'kind: Route\nservice: api\nrules:\n  - to: {default: 100}\n    request_headers: {set: {x-a: "a\\0"}}\n',
        'kind: Route\nservice: api\nrules:\n  - to: {default: 100}\n    request_headers: {set: {x-a: "' + "v" * 16385 + '"}}\n',
        'kind: Route\nservice: api\nrules:\n  - respond: {status: 200, body: "' + "😀" * 1024 + 'x"}\n',
        'kind: TrafficPolicy\nservice: api\nhealth_check: {path: "/h\\nx"}\n',
    ],
    ids=["set-host", "remove-path", "add-status", "crlf", "nul", "long-value", "body-4097-bytes", "hc-path-lf"],
)
def test_header_changes_envoy_refuses_are_e104(tmp_path, docs):
    assert _codes(_mesh(tmp_path, docs)) == ["E104"]


# --------------------------------------------------------------------------
# JWKS and tracing tags
# --------------------------------------------------------------------------

_RSA = json.loads(_EMOJI_JWKS)["keys"][0]
_EC = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "alg": "ES256"}
_OCT = {"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg", "alg": "HS256"}
_OKP = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "EdDSA"}


def _authn(jwks: dict) -> str:
    text = json.dumps(jwks).replace("'", "''")
    return f"kind: RequestAuthentication\nservice: api\nproviders:\n  - name: p\n    issuer: https://i\n    jwks: '{text}'\n"


def test_every_kind_of_jwk_passes_envoy(tmp_path):
    rsa_ps = {**_RSA, "alg": "PS256", "kid": "ps"}
    envoy_accepts(_mesh(tmp_path, _authn({"keys": [_RSA, rsa_ps, _EC, _OCT, _OKP]})), tmp_path)


@pytest.mark.parametrize(
    "jwks",
    [
        {"keys": []},
        {"keys": ["x"]},
        {"keys": [{"n": "x"}]},
        {"keys": [{"kty": "XYZ"}]},
        {"keys": [{k: v for k, v in _RSA.items() if k != "n"}]},
        {"keys": [{**_RSA, "e": "AQAB=="}]},
        {"keys": [{k: v for k, v in _EC.items() if k != "y"}]},
        {"keys": [{**_EC, "crv": "P-999"}]},
        {"keys": [{**_EC, "alg": "ES384"}]},
        {"keys": [{"kty": "oct"}]},
        {"keys": [{"kty": "OKP", "crv": "Ed25519"}]},
        {"keys": [_RSA, {"kty": "oct"}]},  # Envoy would drop the bad key silently
        {"key": []},
    ],
)
def test_jwks_envoy_refuses_is_e104(tmp_path, jwks):
    assert _codes(_mesh(tmp_path, _authn(jwks))) == ["E104"]


@pytest.mark.parametrize("tags", ["{'': v}", "{k: ''}"])
def test_empty_tracing_tag_is_e104(tmp_path, tags):
    zipkin = "kind: Service\nname: zipkin\nport: 9411\napp_port: 20193\nsidecar: {address: 127.0.19.4}\n"
    mesh = f"observability: {{tracing: {{provider: zipkin, collector: zipkin, tags: {tags}}}}}"
    assert _codes(_mesh(tmp_path, zipkin, mesh_extra=mesh)) == ["E104"]


# --------------------------------------------------------------------------
# other text Envoy checks: rewritten paths, redirects, claims, stats prefixes
# --------------------------------------------------------------------------

_ROUTE = "kind: Route\nservice: api\nrules:\n  - {rule}\n  - to: {{default: 100}}\n"


@pytest.mark.parametrize(
    "docs, mesh_extra",
    [
        (_ROUTE.format(rule='match: {path: {prefix: /a}}\n    to: {default: 100}\n    rewrite: {prefix: "/b\\n"}'), ""),
        (_ROUTE.format(rule='redirect: {path: "/a\\r"}\n    match: {path: {prefix: /x}}'), ""),
        (_ROUTE.format(rule='match: {path: {prefix: /x}}\n    redirect: {prefix: "/a\\0"}'), ""),
        (_ROUTE.format(rule="match: {path: {regex: '/a/(.*)'}}\n    to: {default: 100}\n"
                            "    rewrite: {regex: {pattern: '/a/(.*)', substitution: \"/b\\n\"}}"), ""),
        ("kind: RequestAuthentication\nservice: api\nproviders:\n  - name: p\n    issuer: https://i\n"
         f"    jwks: '{_EMOJI_JWKS}'\n    forward_claims: {{'': x-user}}\n", ""),
        ("", "observability: {metrics: {port: 15090, keep_prefixes: ['']}}"),
        (_ROUTE.format(rule="match: {headers: [{name: x-a, prefix: ''}]}\n    to: {default: 100}"), ""),
        (_ROUTE.format(rule="match: {query: [{name: q, prefix: ''}]}\n    to: {default: 100}"), ""),
        ("kind: AuthorizationPolicy\nservice: api\nallow:\n  - headers: [{name: x-a, prefix: ''}]\n", ""),
    ],
    ids=["rewrite-prefix-lf", "redirect-path-cr", "redirect-prefix-nul", "substitution-lf", "empty-claim", "empty-stats-prefix",
         "empty-header-prefix", "empty-query-prefix", "empty-authz-header-prefix"],
)
def test_other_text_envoy_refuses_is_e104(tmp_path, docs, mesh_extra):
    assert _codes(_mesh(tmp_path, docs, mesh_extra=mesh_extra)) == ["E104"]


def test_other_text_at_the_edge_passes_envoy(tmp_path):
    docs = _ROUTE.format(rule="match: {path: {prefix: /r}}\n    redirect: {prefix: \"/p\\t😀\"}\n"
                              "  - match: {path: {regex: '/a/(.*)'}}\n    to: {default: 100}\n"
                              "    rewrite: {regex: {pattern: '/a/(.*)', substitution: \"/b/\\t\\\\1 😀\"}}")
    docs += ("---\nkind: RequestAuthentication\nservice: api\nproviders:\n  - name: p\n    issuer: https://i\n"
             f"    jwks: '{_EMOJI_JWKS}'\n    forward_claims: {{s: x-user}}\n")
    docs += "---\nkind: AuthorizationPolicy\nservice: api\nallow:\n  - headers: [{name: x-a, exact: ''}, {name: x-b, prefix: b}]\n"
    envoy_accepts(_mesh(tmp_path, docs, mesh_extra="observability: {metrics: {port: 15090, keep_prefixes: [c]}}"), tmp_path)
