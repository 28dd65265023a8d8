"""`meshc diff`: golden pairs (tests/diff/<pair>/old, new -> expected.txt/.md/.json), rule identity,
caller -> service authorization pairs, git revisions, exit codes, errors on a side.

Regenerate the golden outputs after an intended change: `MESHC_REGEN=1 .venv/bin/python -m pytest -q
tests/test_diff.py -k golden`, then review them with `git diff tests/diff`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.diff.authz import ALLOWED, CONDITIONAL, DENIED, decide, path_matches
from compiler.diff.model import KINDS, SECTIONS
from compiler.diff.routes import match_label, rule_labels
from compiler.ir import Access, AccessRule, HeaderCondition, PathCondition
from compiler.policy.base import IN_MEMORY
from compiler.policy.route import Match, RouteRule

ROOT = Path(__file__).resolve().parent.parent
PAIRS_DIR = ROOT / "tests" / "diff"
PAIRS = sorted(p.name for p in PAIRS_DIR.iterdir() if (p / "old").is_dir())
FORMATS = {"text": "expected.txt", "markdown": "expected.md", "json": "expected.json"}
REQUIRED = {
    "canary-shift", "rule-reorder-timeout", "authz-tighten", "mtls-strict", "protection-restart",
    "gateway-route-added", "identical", "egress-external", "jwt-public-path", "split-files",
}


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["diff", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_required_pairs_exist() -> None:
    assert REQUIRED <= set(PAIRS)


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_golden(pair: str, fmt: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(PAIRS_DIR / pair)  # the sides are named `old` and `new` in the output
    code, out, err = _run(capsys, "old", "new", "--format", fmt)
    assert code == 0, err
    assert "warning" not in err and "error" not in err, err
    expected = PAIRS_DIR / pair / FORMATS[fmt]
    if os.environ.get("MESHC_REGEN") == "1":
        expected.write_text(out)
    assert out == expected.read_text(), f"{pair} {fmt}: run with MESHC_REGEN=1 and review the change"


def test_golden_json_is_the_documented_schema() -> None:
    for pair in PAIRS:
        doc = json.loads((PAIRS_DIR / pair / "expected.json").read_text())
        assert list(doc) == ["format", "old", "new", "different", "summary", "changes"]
        assert doc["format"] == "meshc-diff/1" and doc["different"] == bool(doc["changes"])
        for change in doc["changes"]:
            assert list(change) == ["section", "subject", "item", "kind", "before", "after"]
            assert change["kind"] in KINDS and change["section"] in SECTIONS


def test_what_the_golden_pairs_say() -> None:
    """The lines a reviewer must read, pair by pair (the golden files hold the rest)."""
    text = {p: (PAIRS_DIR / p / "expected.txt").read_text() for p in PAIRS}
    assert "no differences" in text["identical"] and "Rollout" not in text["identical"]
    assert "rule [any request]: v1 90%, v2 10% -> v1 50%, v2 50%" in text["canary-shift"]
    assert "frontend\n    ~ reload (routes-outbound.yaml)" in text["canary-shift"]
    reorder = text["rule-reorder-timeout"]
    assert "> rule [GET, prefix /api]: position: #1 -> #2" in reorder
    assert "~ rule [GET, prefix /api]: timeout: 2s -> 5s" in reorder
    assert "~ rule [any request]: timeout: 15s -> 10s" in reorder  # the Mesh default was in force before
    assert "- rule [prefix /legacy]: removed (was #3: redirect path=/api, code=301)" in reorder
    authz = text["authz-tighten"]
    assert "reviews -> ratings\n    ~ GET /ratings/internal: allowed -> denied" in authz
    assert "~ HEAD /ratings/: allowed -> denied" in authz
    assert "ratings -> reviews\n    ~ any method, any path: allowed -> denied" in authz  # dry run -> enforce
    assert "GET /ratings/: " not in authz  # still allowed
    assert "~ mTLS: permissive -> strict" in text["mtls-strict"]
    assert "identity: spiffe://shop.example/ns/shop/sa/reviews -> spiffe://shop.example/ns/shop/sa/reviews-sa" in text[
        "mtls-strict"
    ]
    restart = text["protection-restart"]
    assert "ingress\n    ~ RESTART NEEDED: runtime layers changed" in restart
    assert "connection_pool.max_connections: 1024 -> 100" in restart
    assert "productpage\n    ~ reload (clusters.yaml)" in restart
    gateway = text["gateway-route-added"]
    assert "+ route shop.example.com /api/reviews: to=reviews, listeners=[http]" in gateway
    assert "ingress -> reviews\n    ~ GET, any path: denied -> allowed" in gateway
    jwt = text["jwt-public-path"]
    assert "~ request without a token: /public/feed: passes -> refused (401)" in jwt
    assert "productpage -> reviews\n    ~ PATCH, any path: allowed -> conditional" in jwt  # needs the admin claim now
    split = text["split-files"]
    assert "the same meaning; 2 sidecar(s) reload only because the policy places their files record moved" in split
    assert split.count("only the policy places they record changed") == 2
    egress = text["egress-external"]
    assert "+ added: http api.payments.example:80" in egress and "egress.undeclared: refuse -> allow" in egress


def _rule(**match) -> RouteRule:
    return RouteRule(match=Match(**match), to={"v1": 100})


def test_a_rule_is_known_by_its_match_not_its_place() -> None:
    assert match_label(Match()) == "any request"
    same = [
        match_label(Match(methods=["POST", "GET"], headers=[{"name": "b", "exact": "1"}, {"name": "a", "present": True}])),
        match_label(Match(methods=["GET", "POST"], headers=[{"name": "a", "present": True}, {"name": "b", "exact": "1"}])),
    ]
    assert same[0] == same[1] == "GET|POST, header a present, header b=1"
    assert match_label(Match(path={"exact": "/x"}, query=[{"name": "q", "prefix": "a"}])) == "path /x, query q^=a"
    assert rule_labels([_rule(), _rule(path={"prefix": "/a"}), _rule()]) == [
        "[any request]", "[prefix /a]", "[any request] #2",
    ]


def test_a_rule_for_some_callers_is_known_by_them_too() -> None:
    # Callers are part of a rule's identity (a rule for reviews and the catch-all after it are two rules),
    # sorted, versions after the name; a change of only the callers is said in words.
    reviews_v3 = Match(callers=[{"service": "reviews", "versions": ["v3"]}])
    assert match_label(reviews_v3) == "any request from reviews v3"
    assert match_label(Match(headers=[{"name": "x", "exact": "1"}], callers=["reviews", "ingress"])) == (
        "header x=1 from ingress or reviews")
    assert rule_labels([RouteRule(match=Match(callers=["reviews"]), to={"v2": 100}), _rule()]) == [
        "[any request from reviews]", "[any request]"]
    from types import SimpleNamespace

    from compiler.diff.routes import _compare_rules

    view = SimpleNamespace(timeout_of=lambda rule: None)  # rule_content reads only the effective timeout
    old = [RouteRule(match=Match(callers=["reviews"]), to={"v2": 100}), _rule()]
    new = [RouteRule(match=reviews_v3, to={"v2": 100}), _rule()]
    changes = _compare_rules("ratings", view, view, old, new)
    assert [(c.item, c.before, c.after) for c in changes] == [
        ("rule #1 [any request]: callers", "only reviews", "only reviews v3")]
    everyone = [RouteRule(match=Match(), to={"v2": 100}), _rule(path={"prefix": "/a"})]
    some = [RouteRule(match=Match(callers=["ingress"]), to={"v2": 100}), _rule(path={"prefix": "/a"})]
    assert [(c.item, c.before, c.after) for c in _compare_rules("x", view, view, everyone, some)] == [
        ("rule #1 [any request]: callers", "every caller", "only ingress")]


def _access(*allow: AccessRule, deny: tuple = (), dry_run: bool = False, allow_list: bool = True) -> Access:
    return Access(deny=deny, allow=tuple(allow) if allow_list else None, dry_run=dry_run)


def _ar(principals=(), paths=(), methods=(), headers=(), claims=()) -> AccessRule:
    return AccessRule(tuple(principals), tuple(paths), tuple(methods), tuple(headers), IN_MEMORY, tuple(claims))


def test_authorization_decisions() -> None:
    reviews, other = "spiffe://t/ns/default/sa/reviews", "spiffe://t/ns/default/sa/other"
    admin = PathCondition("path_prefix", "/admin")
    access = _access(_ar([reviews], methods=["GET"]), deny=(_ar(paths=[admin]),))
    assert decide(access, reviews, "GET", "/x") == ALLOWED
    assert decide(access, reviews, "GET", "/admin/users") == DENIED  # deny wins
    assert decide(access, reviews, "GET", "/administrator") == ALLOWED  # a path prefix, not a string prefix
    assert decide(access, reviews, "POST", "/x") == DENIED
    assert decide(access, other, "GET", "/x") == DENIED
    assert decide(None, other, "GET", "/x") == ALLOWED  # nothing restricts it
    assert decide(_access(), other, "GET", "/x") == DENIED  # Mesh default deny: an empty allow list
    assert decide(_access(deny=(_ar(),), allow_list=False), other, "GET", "/") == DENIED
    assert decide(_access(_ar([other]), dry_run=True), reviews, "GET", "/") == ALLOWED  # dry run refuses nothing
    header = HeaderCondition("x-admin", "present")
    assert decide(_access(_ar(headers=[header])), reviews, "GET", "/") == CONDITIONAL
    assert decide(_access(_ar(), deny=(_ar(claims=[("role", "guest")]),)), reviews, "GET", "/") == CONDITIONAL
    assert decide(_access(_ar([reviews])), reviews, None, None) == ALLOWED  # tcp: the caller only
    assert path_matches(PathCondition("path_prefix", "/Admin", ignore_case=True), "/ADMIN/x")
    assert path_matches(PathCondition("regex", "/r/[0-9]+"), "/r/42") and not path_matches(
        PathCondition("regex", "/r/[0-9]+"), "/r/42/x"
    )


def test_exit_code_flag(capsys) -> None:
    pair = PAIRS_DIR / "canary-shift"
    assert _run(capsys, str(pair / "old"), str(pair / "new"))[0] == 0
    assert _run(capsys, str(pair / "old"), str(pair / "new"), "--exit-code")[0] == 1
    same = PAIRS_DIR / "identical"
    assert _run(capsys, str(same / "old"), str(same / "new"), "--exit-code")[0] == 0


def test_errors_on_a_side_are_printed_like_check_and_exit_1(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(PAIRS_DIR / "canary-shift" / "new", bad)
    (bad / "mesh.yaml").write_text((bad / "mesh.yaml").read_text().replace("{v1: 50, v2: 50}", "{v1: 50, v3: 50}"))
    code, out, err = _run(capsys, str(PAIRS_DIR / "canary-shift" / "old"), str(bad))
    assert code == 1 and out == ""
    assert f"{bad}/mesh.yaml:" in err and "error[E2" in err and "nothing compared" in err
    assert "Traceback" not in err


def test_bad_usage_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, str(tmp_path / "missing"), str(PAIRS_DIR / "identical" / "new"))
    assert code == 2 and "is not a directory" in err
    assert _run(capsys, str(PAIRS_DIR / "identical" / "new"))[0] == 2


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)


def test_git_revisions(tmp_path: Path, capsys, monkeypatch) -> None:
    """Two revisions, and a revision against the working tree; the checkout is left as it was."""
    repo = tmp_path / "repo"
    policies = repo / "mesh" / "policies"
    shutil.copytree(PAIRS_DIR / "canary-shift" / "old", policies)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "canary 10%")
    shutil.copy(PAIRS_DIR / "canary-shift" / "new" / "mesh.yaml", policies / "mesh.yaml")
    _git(repo, "commit", "-q", "-am", "canary 50%")
    (policies / "mesh.yaml").write_text((policies / "mesh.yaml").read_text().replace("{v1: 50, v2: 50}", "{v2: 100}"))
    before = (policies / "mesh.yaml").read_text()
    monkeypatch.chdir(repo / "mesh")

    code, out, _ = _run(capsys, "--git", "HEAD~1", "HEAD", "policies")
    assert code == 0
    assert out.startswith("meshc diff HEAD~1:policies -> HEAD:policies: 2 change(s)")
    assert "v1 90%, v2 10% -> v1 50%, v2 50%" in out

    code, out, _ = _run(capsys, "--git", "HEAD", "policies")  # REV2: the working tree
    assert code == 0 and out.startswith("meshc diff HEAD:policies -> policies:")
    assert "v1 50%, v2 50% -> v2 100%" in out

    code, out, _ = _run(capsys, "--git", "HEAD~1", "--format", "json")  # POLICY_DIR default: policies
    assert code == 0 and (json.loads(out)["old"], json.loads(out)["new"]) == ("HEAD~1:policies", "policies")
    assert (policies / "mesh.yaml").read_text() == before
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status == " M mesh/policies/mesh.yaml\n"

    code, _, err = _run(capsys, "--git", "no-such-rev", ".")
    assert code == 2 and "unknown revision 'no-such-rev'" in err

    shutil.rmtree(policies)  # gone from the work tree: its revisions can still be compared
    code, out, _ = _run(capsys, "--git", "HEAD~1", "HEAD", "policies")
    assert code == 0 and "v1 90%, v2 10% -> v1 50%, v2 50%" in out
    code, _, err = _run(capsys, "--git", "HEAD", "policies")
    assert code == 2 and "'policies' is not a directory" in err


EXAMPLES = sorted(p for p in (ROOT / "policies").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def test_every_example_against_itself_and_its_neighbour(capsys, monkeypatch) -> None:
    """Every example means itself (no differences, exit 0 with --exit-code); neighbours in name order differ,
    in every format, the same twice, with no traceback and no machine path."""
    monkeypatch.chdir(ROOT)
    for case in EXAMPLES:
        code, out, err = _run(capsys, str(case), str(case), "--exit-code")
        assert code == 0 and "no differences" in out, (case.name, err)
    for a, b in zip(EXAMPLES, EXAMPLES[1:]):
        for fmt in FORMATS:
            code, out, err = _run(capsys, str(a.relative_to(ROOT)), str(b.relative_to(ROOT)), "--format", fmt)
            assert code == 0 and "Traceback" not in err, (a.name, b.name, err)
            assert _run(capsys, str(a.relative_to(ROOT)), str(b.relative_to(ROOT)), "--format", fmt)[1] == out
            assert str(ROOT) not in out and "/tmp/" not in out
            if fmt == "json":
                assert json.loads(out)["different"] is True


def test_markdown_escapes_policy_text_and_folds_long_sections() -> None:
    from compiler.diff.model import Change, Report
    from compiler.diff.render import markdown, text

    odd = "a|b <script>`x` *y*\x1b[31m"
    report = Report("old", "new", [Change("routes", "reviews", "rule [any request]: request_headers.set.x-a", "changed",
                                          "1", odd)])
    md = markdown(report)
    assert "a\\|b &lt;script&gt;'x' \\*y\\*\\x1b[31m" in md and "<script>" not in md and "\x1b" not in md
    assert "\x1b" not in text(report)
    many = Report("old", "new", [Change("mesh", "mesh", f"field{i:02}", "changed", i, i + 1) for i in range(11)])
    md = markdown(many)
    assert "<details><summary>11 changes</summary>" in md and md.count("| ~ | `mesh` |") == 11


@pytest.mark.parametrize("case", ["canary", "kubernetes-gateway", "egress"])
def test_a_side_is_what_meshc_build_compiles(case: str) -> None:
    """The diff builds each side from the view it checked (not loading twice): the same files as `meshc build`,
    so its rollout is the one a build would report."""
    from compiler.build import build
    from compiler.diff.sides import load_side

    side = load_side(ROOT / "policies" / case, case)
    assert side.ok and side.files == build(ROOT / "policies" / case).files


def test_readme_examples_are_what_meshc_diff_prints() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Review a change (`meshc diff`)"):]
    section = section[: section.index("\n## ", 10)]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    canary = (PAIRS_DIR / "canary-shift" / "expected.txt").read_text().replace(
        "meshc diff old -> new", "meshc diff HEAD~1:policies/canary -> HEAD:policies/canary"
    )
    assert blocks[1] == "$ meshc diff --git HEAD~1 HEAD policies/canary\n" + canary
    authz = (PAIRS_DIR / "authz-tighten" / "expected.txt").read_text()
    assert blocks[2] in authz
    doc = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    expected = json.loads((PAIRS_DIR / "canary-shift" / "expected.json").read_text())
    assert doc == {**expected, "old": "HEAD~1:policies/canary", "new": "HEAD:policies/canary"}


def _routes(*rules: dict):
    from compiler.policy import Mesh, PolicySet, Route, Service
    from compiler.policy.resolved import resolve

    svc = Service(name="reviews", port=9080, app_port=9081, versions={"v1": {}, "v2": {}})
    return resolve(PolicySet((Mesh(name="m"), svc, Route(service="reviews", rules=list(rules)))))


def test_rules_added_removed_moved_and_a_changed_match() -> None:
    from compiler.diff.routes import route_changes

    jason = {"match": {"headers": [{"name": "end-user", "exact": "jason"}]}, "to": {"v2": 100}}
    api = {"match": {"path": {"prefix": "/api"}}, "to": {"v1": 100}, "timeout": "2s"}
    api2 = {"match": {"path": {"prefix": "/api/v2"}}, "to": {"v1": 100}, "timeout": "3s"}
    rest = {"to": {"v1": 90, "v2": 10}}
    lines = lambda old, new: [  # noqa: E731
        (c.section, c.item, c.kind, c.before, c.after) for c in route_changes(_routes(*old), _routes(*new))
    ]
    assert lines([jason, api, rest], [jason, api, rest]) == []
    assert lines([jason, api, rest], [api, jason, rest]) == [
        ("routes", "rule [header end-user=jason]: position", "moved", "#1", "#2"),
    ]
    # the same place, another match: one rule whose match changed, with its other changes
    assert lines([jason, api, rest], [jason, api2, rest]) == [
        ("routes", "rule #2: match", "changed", "[prefix /api]", "[prefix /api/v2]"),
        ("routes", "rule [prefix /api/v2]: timeout", "changed", "2s", "3s"),
    ]
    assert lines([jason, rest], [jason, api, rest]) == [
        ("routes", "rule [prefix /api]", "added", None, "#2: forward v1 100%"),
    ]
    assert lines([jason, api, rest], [api, rest]) == [
        ("routes", "rule [header end-user=jason]", "removed", "#1: forward v2 100%", None),
    ]
    assert lines([rest], [{"to": {"v1": 50, "v2": 50}}]) == [
        ("traffic", "rule [any request]", "changed", {"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}),
    ]


ERRORS_DIR = ROOT / "tests" / "errors"


@pytest.mark.parametrize("case", sorted(p.name for p in ERRORS_DIR.iterdir() if (p / "expected.txt").exists()))
def test_an_error_case_on_a_side_prints_what_check_prints(case: str, capsys, monkeypatch) -> None:
    """Each side with errors: meshc check's diagnostics (tests/errors/<case>/expected.txt), then one line
    naming the side; exit 1, nothing on stdout."""
    monkeypatch.chdir(ERRORS_DIR / case)
    expected = (ERRORS_DIR / case / "expected.txt").read_text().splitlines()
    diagnostics, summary = expected[:-1], expected[-1]
    errors = summary.split(" error(s)")[0]
    code, out, err = _run(capsys, "policies", "policies")
    assert code == 1 and out == ""
    assert err.splitlines() == (diagnostics + [f"policies: {errors} error(s); nothing compared"]) * 2
