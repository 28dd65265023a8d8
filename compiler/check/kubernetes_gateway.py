"""Kubernetes mode for gateways: what a gateway in pods (address a wildcard) needs of its names and folders.

A gateway in pods is a Deployment of its own with a LoadBalancer Service (compiler/kubernetes/gateway.py).
A gateway with a specific address stays on its host, like a one-host service: nothing is written for it
in `out/kubernetes/` (E516, compiler/check/gateway.py, refuses the loopback mixes that cannot work).
What a platform engineer can get wrong for one in pods:

- E291 its LoadBalancer Service `<gateway>` is named like a headless Service `<service>-<version>` in
  its namespace: one would replace the other;
- E292 its mesh certificate Secret name (`kubernetes.certs_secret`) is longer than a DNS label;
- E401 a service named `kubernetes` while only gateways run in pods (as for services in pods);
- E403 two of its pod's volumes at one folder, or one at `/`: the ConfigMap (`config_dir`), the mesh
  certificates (`mtls.certs_dir`), /tmp, an access log's folder, and each folder of edge TLS files;
- E404 a listener name that cannot name a port of its Service and container (Kubernetes: at most 15
  characters, no `--`; `meshc-metrics` and `meshc-probe` are taken);
- E405 an edge TLS Secret name (compiler/policy/edge_secrets.py) too long, or given to two
  certificates with different files;
- E406 two gateways in pods with one ServiceAccount in one namespace (meshc writes it with each).

`kubernetes` settings are used by gateways in pods too (E295 counts them, compiler/check/kubernetes.py).
"""

from __future__ import annotations

import re
from typing import Iterator

from compiler.check.kubernetes import certs_secret_name
from compiler.check.pod_folders import OUTPUT_FOLDER, SCRATCH, edge_folders, envoy_folders, volume_folder
from compiler.diagnostics import Diagnostic
from compiler.kubernetes.sidecar import PORT_METRICS, PORT_PROBE
from compiler.policy.edge_secrets import edge_secrets
from compiler.policy.resolved import GatewayView, Resolved

RESERVED_PORT_NAMES = (PORT_METRICS, PORT_PROBE)  # the pod's own ports beside the listeners'
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # Kubernetes IANA_SVC_NAME (and no '--')
SUBDOMAIN_MAX = 253  # a Secret's name is a DNS subdomain


def check_kubernetes_gateways(view: Resolved) -> Iterator[Diagnostic]:
    mesh = view.mesh
    if mesh is None:
        return
    gateways = [gv for gv in view.gateways.values() if gv.in_pods]
    if not gateways:
        return
    services_in_pods = [sv for sv in view.views.values() if sv.in_pods]
    named = view.services.get(OUTPUT_FOLDER)
    if named is not None and not services_in_pods:  # with services in pods, check_pod_folders says it
        yield Diagnostic(
            "E401",
            f"a service named '{OUTPUT_FOLDER}' while gateways run in pods: its sidecar folder would be the output's "
            f"{OUTPUT_FOLDER}/ folder, where the Kubernetes manifests go; rename it",
            named.where("name"), named.subject,
        )
    headless = {
        (sv.service.namespace, name): (sv, version)
        for sv in services_in_pods
        for version, name in sv.headless_services.items()
        if version in sv.app_port_versions
    }
    accounts: dict[tuple[str, str], object] = {}
    for gv in gateways:
        gw = gv.gateway
        account = gw.service_account or gw.name
        at = gw.where("service_account") if gw.service_account else gw.where("name")
        if (gw.namespace, account) in accounts:
            yield Diagnostic(
                "E406",
                f"in pods the gateway runs as ServiceAccount '{account}' in namespace '{gw.namespace}', which meshc "
                "also writes for the gateway at {0}: one object would be written twice; give each gateway its own "
                "service_account (or put them in different namespaces)",
                at, gw.subject, refs=(accounts[(gw.namespace, account)],),
            )
        else:
            accounts[(gw.namespace, account)] = at
        clash = headless.get((gw.namespace, gw.name))
        if clash is not None:
            sv, version = clash
            yield Diagnostic(
                "E291",
                f"the gateway's LoadBalancer Service would be named '{gw.name}' in namespace '{gw.namespace}', like the "
                f"headless Service of '{sv.name}' version '{version}' ({{0}}): one would replace the other; rename one",
                gw.where("name"), gw.subject, refs=(sv.service.where("versions", version),),
            )
        if gv.mtls:
            yield from certs_secret_name(mesh, gw, f"the mesh certificate Secret of gateway '{gw.name}'", "gateway")
        yield from _port_names(gv)
        yield from _secrets(gv)
        yield from _folders(view, gv, said_for_services=bool(services_in_pods))


def _port_names(gv: GatewayView) -> Iterator[Diagnostic]:
    gw = gv.gateway
    for i, listener in enumerate(gw.listeners):
        name = listener.name
        if name in RESERVED_PORT_NAMES:
            why = f"'{name}' names the pod's own {name.removeprefix('meshc-')} port"
        elif not PORT_NAME.match(name) or "--" in name:
            why = f"'{name}' is not a Kubernetes port name (at most 15 characters, no '--')"
        else:
            continue
        yield Diagnostic(
            "E404",
            f"in pods a listener's name names its port on the gateway's LoadBalancer Service and container, and {why}; "
            "rename the listener",
            gw.where("listeners", i, "name"), gw.subject,
        )


def _secrets(gv: GatewayView) -> Iterator[Diagnostic]:
    gw = gv.gateway
    first: dict[str, object] = {}
    for s in edge_secrets(gw):
        at = gw.where(*s.path)
        if len(s.name) > SUBDOMAIN_MAX:
            yield Diagnostic(
                "E405",
                f"in pods these files are read from Secret '{s.name[:40]}...' ({len(s.name)} characters), longer than "
                f"a Kubernetes name ({SUBDOMAIN_MAX}): shorten the gateway name or the first host",
                at, gw.subject,
            )
        elif s.name in first:
            other_files, other_at = first[s.name]
            yield Diagnostic(
                "E405",
                f"in pods a certificate is read from the Secret named after the gateway and its first host, "
                f"'{s.name}', and the certificate at {{0}} gets that name with other files; serve the same files "
                "for both, or put another host first",
                at, gw.subject, refs=(other_at,),
            )
        else:
            first[s.name] = (s.files, at)


def _folders(view: Resolved, gv: GatewayView, said_for_services: bool) -> Iterator[Diagnostic]:
    """E403: the gateway pod's volumes, each at a folder of its own (the edge files of one folder share one).
    `said_for_services`: the Mesh's own folders were already checked for the services' pods."""
    mesh, gw = view.mesh, gv.gateway
    places = envoy_folders(mesh, bool(gv.mtls), gv.access_log, gw if gw.observability.access_log else mesh)
    edge = edge_folders(gw)
    said: set[tuple] = set()
    owner: dict[str, tuple[str, bool]] = {SCRATCH: ("/tmp (the gateway's scratch folder)", True)}  # -> (what, Mesh's)
    for what, folder, where, subject in places + edge:
        is_edge = what.startswith("the folder of ")
        mesh_level = subject == mesh.subject
        if folder == "/":
            message = f"{what} is '/': a pod cannot mount a volume over its whole filesystem"
        elif folder not in owner:
            owner[folder] = (what, mesh_level)
            continue
        elif is_edge and owner[folder][0].startswith("the folder of "):
            continue  # edge files of one folder share its volume
        elif said_for_services and mesh_level and owner[folder][1]:
            continue  # two of the Mesh's folders: check_pod_folders said it for the services' pods
        else:
            message = (f"{what} is '{folder}', like {owner[folder][0]}: in the gateway's pods each needs a volume of "
                       "its own there (the ConfigMap, a Secret, a writable folder); choose another folder")
        if mesh_level and said_for_services and folder == "/":
            continue
        if (where, message) not in said:
            said.add((where, message))
            yield Diagnostic("E403", message, where, subject)
