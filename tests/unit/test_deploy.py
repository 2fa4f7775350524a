"""The deployment files: the Kubernetes manifests valid against the API's schemas and holding
what an operations team relies on, the compose file and the image's volume."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30"  # the oldest we claim: CronJob timeZone is stable since 1.27


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(KUBE.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in _docs(p)]  # fmt: skip


@pytest.mark.parametrize(("name", "manifest"), _manifests(), ids=lambda v: str(v)[:40])
def test_each_manifest_is_valid_for_kubernetes(name, manifest):
    """Strict: no field the API does not know (a typo would be silently ignored)."""
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _pod(kind: str) -> dict[str, Any]:
    found = {d["kind"]: d for _, d in _manifests()}[kind]
    job = found["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else found["spec"]
    return job | {"pod": job["template"]["spec"]}


@pytest.mark.parametrize("kind", ["CronJob", "Job"])
def test_the_jobs_run_non_root_read_only_with_a_deadline_and_sized(kind):
    job = _pod(kind)
    pod, (container,) = job["pod"], job["pod"]["containers"]
    assert job["activeDeadlineSeconds"] > 0 and pod["restartPolicy"] == "Never"
    (rule,) = job["podFailurePolicy"]["rules"]  # exit 2 and 3 are not retried: only 1 is
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2, 3]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["cpu"] == "1"
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes[mounts["/data"]]  # the journal outlives the pod
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the spool, on a read-only root
    assert {"secretRef": {"name": "points-import-engage"}} in container["envFrom"]
    assert "ENGAGE_API_KEY" not in str(container.get("env"))  # the key only from the Secret


def test_the_nightly_never_runs_twice_at_once():
    cron = {d["kind"]: d for _, d in _manifests()}["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_configmap_is_a_valid_config_keeping_the_journal_on_the_claim():
    """Its config.toml loads (unknown keys are errors) and puts the journal under /data."""
    configmap = {d["kind"]: d for _, d in _manifests()}["ConfigMap"]
    config = Config.model_validate(tomllib.loads(configmap["data"]["config.toml"]))
    assert config.journal.state_dir.is_relative_to("/data")


def test_compose_runs_the_image_against_the_simulator_with_a_state_volume():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    simulator, job = compose["services"]["simulator"], compose["services"]["import"]
    assert simulator["command"][0] == "simulate"
    assert job["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert job["network_mode"] == "service:simulator"  # plain http only on loopback
    assert job["environment"]["ENGAGE_BASE_URL"] == "http://127.0.0.1:8080"
    assert any(v.startswith("points-data:/data") for v in job["volumes"])


def test_the_image_declares_its_state_folder_a_volume_and_runs_as_non_root():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    assert 'VOLUME ["/data"]' in lines and "WORKDIR /data" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def _compose_available() -> bool:
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return False
    try:
        found = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20)
        daemon = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and daemon.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _compose_available(), reason="no docker compose and daemon here")
def test_compose_imports_the_sample_into_the_simulator(tmp_path):
    """``docker compose up``: the image, non-root and read-only, imports the sample into the
    simulator; exit 3 is the sample's bad rows."""
    import subprocess

    project = ["docker", "compose", "-p", f"pi{tmp_path.name[-8:].lower()}", "-f",
               str(ROOT / "compose.yaml")]  # fmt: skip
    try:
        done = subprocess.run(
            [*project, "up", "--build", "--abort-on-container-exit", "--exit-code-from", "import"],
            capture_output=True, text=True, timeout=900, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
        assert "4000 of 4026 rows accepted" in done.stdout + done.stderr
    finally:
        subprocess.run([*project, "down", "-v"], capture_output=True, timeout=300, cwd=ROOT)
