"""Parts of a generated mesh: matches, route rules and their forwarding controls (used by meshgen.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.edges import (
    ODD_TEXT, UNICODE_TEXT, EDGE_COUNTS, EDGE_DURATIONS, EDGE_NON_NEGATIVE, EMOJI, TOKEN, UINT32_MAX, Gen, durations, rare,
    regex, text,
)

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
PATH_SEGMENTS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
_JWKS: list[str] = []


def jwks() -> str:
    """A real JWKS (one fresh RSA key, made once per process: key generation is slow)."""
    if not _JWKS:
        from compiler.certs import throwaway_jwks

        _JWKS.append(throwaway_jwks())
    return _JWKS[0]


# -- small parts -----------------------------------------------------------------------------------------

def dur(g: Gen, tag: str, lo: int = 1, hi: int = 60_000) -> str:
    return g.edge(f"duration.{tag}", durations(lo, hi), EDGE_DURATIONS)


def count(g: Gen, tag: str, lo: int = 1, hi: int = 5000) -> int:
    return g.edge(f"uint32.{tag}", st.integers(lo, hi), EDGE_COUNTS)


def path(g: Gen, tag: str | None = None) -> str:
    """A path; with a tag, sometimes one with odd characters (the models only ask for a leading '/')."""
    plain = "/" + "/".join(g.draw(st.lists(PATH_SEGMENTS, min_size=g.draw(st.sampled_from([0, 1, 1, 1])), max_size=3)))
    if tag is None:
        return plain
    return g.edge(tag, st.just(plain), st.sampled_from(["/a\r\nb", "/\x00", "/a b", "/%", "/%zz", f"/{EMOJI}", "/a?b=c",
                                                         "/a#b", "/" + "p" * 5000, "/\\", "//"]))


def header_name(g: Gen) -> str:
    return g.edge("header-name.odd", TOKEN, st.sampled_from(["host", ":path", ":authority", "x-" + "h" * 200,
                                                              "content-length", "te", "x%y", "~"]))


def header_match(g: Gen) -> dict:
    kind = g.draw(st.sampled_from(["exact", "prefix", "regex", "present"]))
    value = {"exact": lambda: text(g, "header-match.text"), "prefix": lambda: text(g, "header-match.text"),
             "regex": lambda: regex(g, "header-match.regex"), "present": g.bool}[kind]()
    return {"name": header_name(g), kind: value}


def match(g: Gen) -> dict:
    out: dict = {}
    kind = g.draw(st.sampled_from(["prefix", "exact", "regex", "prefix", "exact"]))
    if kind == "regex":
        out["path"] = {"regex": g.edge("path.regex.emoji", st.just("/api/.*"), st.just(f"/{EMOJI}.*"))
                       if g.bool() else regex(g, "path-match.regex")}
    elif kind:
        out["path"] = {kind: path(g, f"path-match.{kind}") + g.edge("path.unicode", st.just(""), st.sampled_from([EMOJI, "%25", "caf\u00e9"]))}
    if g.bool():
        out["methods"] = g.draw(st.lists(st.sampled_from(METHODS), max_size=3, unique=True))
    if g.draw(st.integers(0, 2)) == 0:
        out["headers"] = [header_match(g) for _ in range(g.draw(st.integers(1, 2)))]
    if g.draw(st.integers(0, 3)) == 0:
        cookie = {"name": g.draw(TOKEN)}
        if g.bool():
            cookie["exact"] = g.edge("cookie.long-value", st.text("abcdef0123", min_size=0, max_size=10),
                                     st.sampled_from(["v" * 90, "v" * 500, EMOJI]))
        else:
            cookie["regex"] = regex(g, "cookie.regex")
        out["cookies"] = [cookie]
    if g.draw(st.integers(0, 3)) == 0:
        q = {"name": g.edge("query.name", TOKEN, st.one_of(ODD_TEXT.filter(bool), UNICODE_TEXT.filter(bool)))}
        qkind = g.draw(st.sampled_from(["exact", "prefix", "regex", "present"]))
        q[qkind] = True if qkind == "present" else regex(g, "query.regex") if qkind == "regex" else text(g, "query.text")
        out["query"] = [q]
    return out


def header_changes(g: Gen) -> dict:
    out: dict = {}
    if g.bool():
        out["add"] = {header_name(g): text(g, "header-value.text") for _ in range(g.draw(st.integers(1, 2)))}
    if g.bool():
        out["set"] = {header_name(g): text(g, "header-value.text")}
    if g.bool() or not out:
        out["remove"] = [header_name(g)]
    return out


STEPS = 1_000_000
"""Steps of 0.0001 in 0-100: a percentage has at most 4 decimals (Envoy counts fractions in millionths)."""

ODD_PERCENTS = st.sampled_from([0.0001, 99.9999, 0.00001, 50.00005, 100.0001, -0.0001, 1e-9, float("nan"), float("inf")])
"""The smallest and largest fractions, a fifth decimal, beyond 100 or below 0, NaN and infinity (the model
refuses all but the first two, positioned)."""


def as_percent(steps: int) -> int | float:
    """`steps` ten-thousandths of a percent as the language writes it: whole (10) or with decimals (0.1)."""
    return steps // 10_000 if steps % 10_000 == 0 else round(steps / 10_000, 4)


def percent(g: Gen, tag: str) -> int | float:
    """A percentage: whole (the common case), or with up to 4 decimals, or (risky) a value the model refuses."""
    if g.draw(st.sampled_from([True, True, False])):
        return g.draw(st.integers(0, 100))
    with g.rarely():
        return g.edge(f"percent.{tag}", st.integers(0, STEPS).map(as_percent), ODD_PERCENTS)


def weights(g: Gen, versions: list[str]) -> dict:
    """Weights adding up to 100: whole, or (a third of the time) with up to 4 decimals (`{v1: 99.9, v2: 0.1}`);
    risky: a total off by 0.0001 (E210) or a fifth decimal."""
    chosen = g.draw(st.lists(st.sampled_from(versions), min_size=1, max_size=len(versions), unique=True))
    fine = g.draw(st.sampled_from([False, False, True]))
    total, unit = (STEPS, 1) if fine else (100, 10_000)
    cuts = sorted(g.draw(st.lists(st.integers(0, total), min_size=len(chosen) - 1, max_size=len(chosen) - 1)))
    parts = [(b - a) * unit for a, b in zip([0] + cuts, cuts + [total])]
    with g.rarely():
        if fine and g.edge("weights.fraction-off", st.just(False), st.just(True)):
            parts[-1] += g.draw(st.sampled_from([1, -1])) if parts[-1] else 1
        out = dict(zip(chosen, map(as_percent, parts)))
        if fine and g.edge("weights.fifth-decimal", st.just(False), st.just(True)):
            out[chosen[0]] = out[chosen[0]] + 0.00001
    return out


def retries(g: Gen) -> dict:
    out: dict = {"attempts": g.draw(st.integers(1, 10))}
    if g.bool():
        out["per_try_timeout"] = dur(g, "per-try-timeout")
    if g.bool():
        on = g.draw(st.lists(st.sampled_from(["5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx",
                                              "refused-stream"]), min_size=1, max_size=3, unique=True))
        if g.bool():
            on.append({"retriable-status-codes": g.draw(st.lists(st.integers(100, 599), min_size=1, max_size=3))})
        out["on"] = on
    if g.bool():
        backoff = {"base": dur(g, "backoff-base", 1, 1000)}
        if g.bool():
            backoff["max"] = g.edge("backoff.max-below-base", durations(1000, 5000), st.just("1ms"))
        out["backoff"] = backoff
    if g.bool():
        out["non_idempotent"] = g.bool()
    return out


def fault(g: Gen) -> dict:
    out: dict = {}
    if g.bool():
        out["delay"] = {"fixed": dur(g, "fault-delay"), "percent": percent(g, "fault-delay")}
    if g.bool() or not out:
        abort = {"status": g.draw(st.integers(200, 599))} if g.bool() else {"grpc_status": g.draw(st.integers(0, 16))}
        abort["percent"] = percent(g, "fault-abort")
        out["abort"] = abort
    if g.bool():
        out["headers"] = [header_match(g)]
    return out


def rewrite(g: Gen, path_kind: str | None) -> dict:
    out: dict = {}
    choice = g.draw(st.sampled_from(["prefix", "regex", "none"]))
    if choice == "prefix" and path_kind in (None, "prefix", "exact"):
        out["prefix"] = path(g, "rewrite.prefix")
    elif choice == "regex":
        out["regex"] = {"pattern": regex(g, "rewrite.regex"),
                        "substitution": g.edge("rewrite.substitution", st.just("/x/\\1"),
                                               st.sampled_from(["", EMOJI, "%", "\\9", "\\", "\\x", "a\r\nb"]))}
    if g.bool() or not out:
        out["host"] = g.edge("rewrite.host", st.just("example.internal"), st.sampled_from(["[::1]:80", "a" * 300, "-", "a:b:c"]))
    return out


def cors(g: Gen) -> dict:
    origin = g.edge("cors.origin", st.sampled_from(["https://shop.example", "*", "regex:https://.*\\.example"]),
                    st.sampled_from([f"https://{EMOJI}.example", "", "null", "%"]))
    if g.draw(st.integers(0, 3)) == 0:
        origin = "regex:" + regex(g, "cors.origin-regex")
    out: dict = {"allow_origins": [origin]}
    if g.bool():
        out["allow_methods"] = g.draw(st.lists(st.sampled_from(METHODS), max_size=3, unique=True))
    if g.bool():
        out["allow_headers"] = [header_name(g)]
    if g.bool():
        out["expose_headers"] = [header_name(g)]
    if g.bool():
        out["max_age"] = dur(g, "cors-max-age")
    if g.bool():
        out["allow_credentials"] = g.bool()
    return out


def rate_limit(g: Gen) -> dict:
    return {"requests": count(g, "rate-limit-requests"), "per": dur(g, "rate-limit-per", 50, 60_000)}


def respond(g: Gen) -> dict:
    body = g.edge("respond.body", PLAIN_BODY, st.sampled_from(["", "x" * 4096, "x" * 4097, EMOJI * 10, "%s %d %%",
                                                                "line1\nline2\r\n", "\x00"]))
    return {"status": g.draw(st.integers(200, 599)), "body": body}


PLAIN_BODY = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="%"), max_size=40)


def redirect(g: Gen, path_kind: str | None) -> dict:
    out: dict = {}
    if g.bool():
        out["scheme"] = g.draw(st.sampled_from(["http", "https"]))
    if g.bool():
        out["host"] = g.draw(st.sampled_from(["example.com", "a.b", "x" * 200]))
    if g.bool():
        out["port"] = g.draw(st.sampled_from([1, 80, 443, 65535]))
    which = g.draw(st.sampled_from(["path", "prefix", None]))
    if which == "path" or (which == "prefix" and path_kind == "prefix"):
        out[which] = path(g, f"redirect.{which}")
    if not out:
        out["path"] = "/moved"
    if g.bool():
        out["code"] = g.draw(st.sampled_from([301, 302, 303, 307, 308]))
    return out


def callers_match(g: Gen, callers: list[tuple[str, list[str]]]) -> list:
    """`match.callers`: some of the services (and gateways) that call this one, by name or as `{service}`, or
    (in pods) `{service, versions}`; `callers` gives each caller's versions that may be named (none on one
    host). Now and then one that cannot be: not a caller (E255, E256), an unknown version (E257), versions of
    a caller on one host (E258)."""
    chosen = g.draw(st.lists(st.sampled_from(callers), min_size=1, max_size=min(2, len(callers)), unique_by=lambda c: c[0]))
    out: list = []
    for name, versions in chosen:
        form = g.draw(st.sampled_from(["name", "name", "service", "versions"]))
        if form == "versions" and versions:
            out.append({"service": name, "versions": g.draw(st.lists(st.sampled_from(versions), min_size=1,
                                                                       max_size=len(versions), unique=True))})
        else:
            out.append(name if form == "name" else {"service": name})
    if rare(g, 31):
        odd = g.draw(st.sampled_from(["nobody", "versions", "v9"]))
        out.append({"nobody": "s9", "versions": {"service": chosen[0][0], "versions": ["v1"]},
                    "v9": {"service": chosen[0][0], "versions": ["v9"]}}[odd])
    return out


def rule(g: Gen, versions: list[str], mirror_targets: list[tuple[str | None, str]], last: bool,
         callers: list[tuple[str, list[str]]] = ()) -> dict:
    r: dict = {}
    if not last or g.draw(st.integers(0, 3)) == 0:  # a catch-all before the last rule: E218
        r["match"] = match(g)
    if callers and g.draw(st.integers(0, 3)) == 0:
        r.setdefault("match", {})["callers"] = callers_match(g, list(callers))
    path_kind = next(iter(r.get("match", {}).get("path", {"prefix": "/"})), None)
    action = g.draw(st.sampled_from(["to", "to", "to", "redirect", "respond"]))
    if action == "to":
        r["to"] = weights(g, versions)
        if mirror_targets and g.draw(st.integers(0, 3)) == 0:
            service, version = g.draw(st.sampled_from(mirror_targets))
            m = {"to": version, "percent": percent(g, "mirror")}
            if service:
                m["service"] = service
            r["mirror"] = [m]
        if g.draw(st.integers(0, 2)) == 0:
            r["timeout"] = dur(g, "route-timeout")
        if g.draw(st.integers(0, 3)) == 0:
            r["idle_timeout"] = dur(g, "idle-timeout")
        if g.draw(st.integers(0, 2)) == 0:
            r["retries"] = retries(g)
        if g.draw(st.integers(0, 3)) == 0:
            r["rewrite"] = rewrite(g, path_kind)
    elif action == "redirect":
        r["redirect"] = redirect(g, path_kind)
    else:
        r["respond"] = respond(g)
    if g.draw(st.integers(0, 3)) == 0:
        r["fault"] = fault(g)
    for key in ("request_headers", "response_headers"):
        if g.draw(st.integers(0, 3)) == 0:
            r[key] = header_changes(g)
    if g.draw(st.integers(0, 4)) == 0:
        r["cors"] = cors(g)
    if g.draw(st.integers(0, 3)) == 0:
        r["rate_limit"] = rate_limit(g)
    return r
