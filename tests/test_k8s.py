"""deploy/k8s: every manifest valid for Kubernetes (offline, kubernetes-validate --strict),
and every kustomization rendered and valid where kubectl is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
RESOURCES = sorted(
    p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
)  # plain manifests


def _validate(documents: list[dict]) -> list[str]:
    kinds = []
    for doc in documents:
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
        kinds.append(doc["kind"])
    return kinds


@pytest.mark.parametrize("path", RESOURCES, ids=lambda p: str(p.relative_to(K8S)))
def test_each_manifest_is_valid(path: Path):
    assert _validate(list(yaml.safe_load_all(path.read_text())))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_overlay_renders_valid_resources(overlay: Path):
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    documents = list(yaml.safe_load_all(rendered))
    kinds = _validate(documents)
    assert {"Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(kinds)
    for doc in documents:
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]
            container = pod["spec"]["containers"][0]
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] == "data")
            data_image = pod["spec"]["initContainers"][0]["image"]
            # the data version is in the pod template: a new one is a rolling update
            assert data_image.endswith(":" + pod["metadata"]["annotations"]["kv-app/data-version"])


def test_blue_green_service_selects_one_slot():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / "blue-green")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    documents = list(yaml.safe_load_all(rendered))
    [service] = [d for d in documents if d["kind"] == "Service"]
    slots = {
        d["spec"]["selector"]["matchLabels"]["slot"] for d in documents if d["kind"] == "Deployment"
    }
    assert slots == {"blue", "green"} and service["spec"]["selector"]["slot"] in slots
