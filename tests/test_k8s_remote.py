"""deploy/k8s/object-storage: the variant where pods pull snapshots from object storage
(an init container pulls, a `kv-app sync` sidecar follows), rendered with kubectl and
validated offline (kubernetes-validate --strict), and its command lines parsed by the
real `kv-app` command."""

from __future__ import annotations

import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT
from kv_app import cli, config

VARIANT = ROOT / "deploy" / "k8s" / "object-storage"


def render(path) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return list(yaml.safe_load_all(out))


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(VARIANT)


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) substitution in a container's command."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


@pytest.mark.parametrize("variant", ["", "blue-green"])
def test_every_resource_is_valid(variant):
    documents = render(VARIANT / variant)
    for doc in documents:
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    assert "kv-app-data" not in yaml.safe_dump_all(documents)  # no data image left


def test_init_pulls_the_root_the_server_serves_and_the_sidecar_follows_it(rendered):
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    [config_map] = [d for d in rendered if d["kind"] == "ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    env = config_map["data"]
    server, sync = pod["containers"]
    [init] = pod["initContainers"]
    served = {e["name"]: e["value"] for e in server["env"]}

    pull = _expand(init["command"], env)
    assert pull[:2] == ["kv-app", "pull"] and pull[2].startswith("s3://")
    assert pull[3] == served["KV_DATA_PATH"]
    following = _expand(sync["command"], env)
    assert following[:4] == ["kv-app", "sync", pull[2], pull[3]]
    # the sidecar signals the server by the PID it writes: one process namespace
    assert pod["shareProcessNamespace"] is True
    assert following[following.index("--pid-file") + 1] == served["KV_PID_FILE"]
    assert following[following.index("--port") + 1] == served["KV_PORT"]
    # every command line is one the real kv-app accepts
    for args in (pull, following):
        command = cli.cli.commands[args[1]]
        command.make_context(args[1], args[2:])
    # the ConfigMap's KV_* variables are settings; the server reads the data read-only
    for name in env:
        assert name == "SNAPSHOT_URL" or name.removeprefix("KV_") in config.BY_NAME
    assert all(m["readOnly"] for m in server["volumeMounts"] if m["name"] == "data")
    assert not any(m.get("readOnly") for m in sync["volumeMounts"] + init["volumeMounts"])
    for container in (init, sync):
        refs = container["envFrom"]
        assert {"secretRef": {"name": "kv-app-s3"}} in refs  # AWS_* from a Secret


def test_blue_green_slots_each_pull_one_version_and_the_service_selects_one():
    """All at once: each slot's pods pull a fixed version (ready only once it is pulled
    and checked); the Service moves to a slot, never to a mix."""
    documents = render(VARIANT / "blue-green")
    [service] = [d for d in documents if d["kind"] == "Service"]
    maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    pulled = {}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        [init] = pod["initContainers"]
        [env_from] = [e["configMapRef"]["name"] for e in init["envFrom"] if "configMapRef" in e]
        pull = _expand(init["command"], maps[env_from])
        cli.cli.commands["pull"].make_context("pull", pull[2:])
        assert pull[pull.index("--version") + 1].isdigit()
        slot = deployment["spec"]["selector"]["matchLabels"]["slot"]
        pulled[slot] = int(pull[pull.index("--version") + 1])
        assert len(pod["containers"]) == 1  # no sidecar: a slot stays on its version
    assert pulled == {"blue": 41, "green": 42}
    assert service["spec"]["selector"]["slot"] in pulled
