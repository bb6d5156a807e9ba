"""deploy/k8s: every manifest valid for Kubernetes (offline, kubernetes-validate --strict),
and every kustomization rendered and valid where kubectl is installed."""

from __future__ import annotations

import os
import re
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


def _built_tags(*args: str) -> list[str]:
    """The tags scripts/build.sh gives its images (DRY_RUN: the commands, printed)."""
    printed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build.sh"), *args],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.findall(r"--tag (\S+)", printed)


def test_image_tags_match_scripts_build_sh():
    """The server image the manifests run is the one build.sh tags by default (the
    package's version); the data image is the one `build.sh data` builds, under every
    tag the overlays set; and that image has its Dockerfile."""
    from kv_app import __version__

    app_tags = _built_tags()
    assert f"kv-app:{__version__}" in app_tags
    data_tags = _built_tags("data", "some.data", "42")
    assert data_tags == ["kv-app-data:42"]
    data_name = data_tags[0].split(":")[0]
    assert (K8S / "data-image" / "Dockerfile").read_text().count("COPY --chown=10001") == 1
    [deployment] = yaml.safe_load_all((K8S / "base" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == [f"kv-app:{__version__}"]
    assert [c["image"].split(":")[0] for c in pod["initContainers"]] == [data_name]
    for overlay in K8S.rglob("kustomization.yaml"):
        for image in yaml.safe_load(overlay.read_text()).get("images", []):
            assert image["name"] in ("kv-app", data_name), overlay
            if image["name"] == "kv-app":
                assert image.get("newTag", __version__) == __version__, overlay
