"""Where the Kubernetes manifests go in the output, and the names they give objects.

    kubernetes/kustomization.yaml          the base: every ConfigMap and Service
    kubernetes/<service>/configmap.yaml    ConfigMap `meshc-<service>`: the sidecar's files
    kubernetes/<service>/services.yaml     the ClusterIP Service and the headless Service of each version
    kubernetes/<gateway>/configmap.yaml    ConfigMap `meshc-<gateway>`: the gateway's files
    kubernetes/<gateway>/gateway.yaml      its ServiceAccount, Deployment, LoadBalancer Service, PodDisruptionBudget
    kubernetes/sidecar/kustomization.yaml  the Component: one patch per service
    kubernetes/sidecar/patch-<service>.yaml

No file here sits directly in a sidecar folder `<service>/` except the base's
kustomization.yaml, which compiler/rollout.py knows is not a sidecar file.
"""

from __future__ import annotations

DIR = "kubernetes"
BASE = f"{DIR}/kustomization.yaml"
COMPONENT_DIR = f"{DIR}/sidecar"
COMPONENT = f"{COMPONENT_DIR}/kustomization.yaml"

ANNOTATION_BOOTSTRAP = "meshc.dev/bootstrap-sha256"
"""Pod template annotation: the sha256 of the sidecar's bootstrap.yaml, so that only a bootstrap change rolls pods."""

CONTAINER = "meshc-sidecar"
VOLUME_CONFIG = "meshc-config"
VOLUME_CERTS = "meshc-certs"
VOLUME_TMP = "meshc-tmp"
VOLUME_LOGS = "meshc-access-log"
VOLUME_CA = "meshc-ca-{n}"  # one projected volume per folder of external CA bundles, numbered by folder


def configmap_name(service: str) -> str:
    return f"meshc-{service}"


def configmap_path(service: str) -> str:
    return f"{DIR}/{service}/configmap.yaml"


def services_path(service: str) -> str:
    return f"{DIR}/{service}/services.yaml"


def gateway_path(gateway: str) -> str:
    return f"{DIR}/{gateway}/gateway.yaml"


def patch_file(service: str) -> str:
    """The patch's file name inside the Component folder (kustomize loads files only from under it)."""
    return f"patch-{service}.yaml"


def managed_labels(mesh: str) -> dict[str, str]:
    """Labels on every object meshc writes (never on the user's Deployments: their labels are the user's)."""
    return {"app.kubernetes.io/managed-by": "meshc", "app.kubernetes.io/part-of": mesh}
