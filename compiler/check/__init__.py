"""Stage 2, check: the meaning of a loaded policy, all errors at once.

Each check is a function `Resolved -> iterable of Diagnostic` in a module
of its own; `check()` resolves the policy once (compiler/policy/resolved.py:
the same view lower() builds from) and runs them in a fixed order, returning
everything found. Checks that need the Mesh run only when there is exactly
one (`view.mesh` is None otherwise).
"""

from __future__ import annotations

from compiler.check.callers import check_callers
from compiler.check.external import check_externals
from compiler.check.gateway import check_gateways
from compiler.check.graph import check_call_cycles
from compiler.check.kubernetes import check_kubernetes
from compiler.check.kubernetes_external import check_kubernetes_externals
from compiler.check.kubernetes_gateway import check_kubernetes_gateways
from compiler.check.observability import check_observability
from compiler.check.paths import check_paths
from compiler.check.pod_folders import check_pod_folders
from compiler.check.ports import check_ports
from compiler.check.references import check_references, check_structure
from compiler.check.resilience import check_resilience
from compiler.check.routes import check_routes
from compiler.check.security import check_authentication, check_authorization, check_mtls
from compiler.check.traffic import check_traffic_policies
from compiler.check.traffic_versions import check_version_traffic
from compiler.check.shadowing import check_shadowed_gateway_routes, check_shadowed_rules
from compiler.diagnostics import Diagnostic
from compiler.policy import PolicySet
from compiler.policy.resolved import Resolved, resolve


def _shadowed_rules(view: Resolved):
    return check_shadowed_rules(view.policy)


CHECKS = (
    check_structure,
    check_references,
    check_routes,
    check_callers,
    _shadowed_rules,
    check_gateways,
    check_shadowed_gateway_routes,
    check_externals,
    check_traffic_policies,
    check_version_traffic,
    check_ports,
    check_kubernetes,
    check_kubernetes_gateways,
    check_kubernetes_externals,
    check_pod_folders,
    check_mtls,
    check_authorization,
    check_authentication,
    check_paths,
    check_observability,
    check_call_cycles,
    check_resilience,
)


def check(policy: PolicySet | Resolved) -> list[Diagnostic]:
    view = resolve(policy)
    diags: list[Diagnostic] = []
    for run in CHECKS:
        diags.extend(run(view))
    return diags
