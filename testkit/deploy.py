"""Shared by the tests: moved from tests/test_deploy.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

KUBERNETES = DEPLOY / "kubernetes"

KUSTOMIZATIONS = sorted(p.parent for p in KUBERNETES.rglob("kustomization.yaml"))

Doc = dict[str, Any]


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        by_name = {item["name"]: item for item in base}
        result = [merge(item, _find(patch, item["name"])) for item in base]
        return result + [item for item in patch if item["name"] not in by_name]
    return patch


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _find(items: list[Doc], name: str) -> Doc:
    return next((item for item in items if item["name"] == name), {})


def render(folder: Path) -> list[Doc]:
    """The resources of a kustomization with its patches applied."""
    (kustomization,) = load(folder / "kustomization.yaml")
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    assert not unsupported, f"{folder}: extend render() for {unsupported}"
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        target = folder / entry
        docs += render(target) if target.is_dir() else load(target)
    for patch_entry in kustomization.get("patches", []):
        for patch in load(folder / patch_entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            matches = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == key]
            assert len(matches) == 1, f"{folder}: patch {key} matches {len(matches)} resources"
            docs[matches[0]] = merge(docs[matches[0]], patch)
    return docs


def pod_specs(docs: list[Doc]) -> list[Doc]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]


def env_of(container: Doc, docs: list[Doc]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)
        env.update(config["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env
