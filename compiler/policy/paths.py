"""How sidecars read request paths before any rule looks at them (Mesh `paths`).

A path rule is only as good as the path it is matched against: `/%2Fadmin`,
`//admin`, `/a/../admin` and `/ADMIN` can all mean `/admin` to an app. Every
HTTP listener of every sidecar (inbound and outbound) normalises the path
before routing, authentication and authorization run, so all of them and the
app see the same path:

- dot segments are always resolved and repeated slashes always merged (Envoy
  HTTP connection manager `normalize_path` and `merge_slashes`): `/a/../admin`
  and `//admin` become `/admin`;
- escaped slashes (`%2F`, `%2f`, `%5C`, `%5c`) are handled as `escaped_slashes`
  says (Envoy `path_with_escaped_slashes_action`), because Envoy never decodes
  them on its own while many apps do.

Like Istio's mesh-wide `pathNormalization`, this is one setting for the mesh.
"""

from __future__ import annotations

from typing import Literal

from compiler.policy.base import PolicyModel

EscapedSlashes = Literal["reject", "redirect", "decode", "keep"]


class Paths(PolicyModel):
    """Path normalisation of every sidecar, and how security rules compare paths."""

    escaped_slashes: EscapedSlashes = "reject"
    """What a sidecar does with a path that contains `%2F` or `%5C` (any case):

    - `reject` (the default): answer 400 (Envoy `REJECT_REQUEST`); such paths never reach a rule or an app;
    - `redirect`: decode them and answer a redirect to the decoded, normalised path (Envoy
      `UNESCAPE_AND_REDIRECT`; the client follows it and every party sees the same path; gRPC requests
      are refused with status INTERNAL instead);
    - `decode`: decode them and forward (Envoy `UNESCAPE_AND_FORWARD`): rules and app see the decoded path;
    - `keep`: forward them unchanged (Envoy `KEEP_UNCHANGED`): rules do not see `/%2Fadmin` as `/admin`,
      but an app that decodes it may; W271 warns when the mesh has security path rules.
    """

    case_sensitive: bool = True
    """Whether AuthorizationPolicy `paths` and RequestAuthentication `rules[].paths` compare paths
    case-sensitively (Envoy RBAC `url_path` `ignore_case`, jwt_authn rule `match.case_sensitive`).
    `false` suits apps that treat `/ADMIN` as `/admin`; Route matching stays case-sensitive."""
