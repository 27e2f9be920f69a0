"""Renders deploy/kubernetes's kustomizations in Python, so the manifests are checked offline.

kustomize itself is a Go binary that cannot be installed here, so this renders the few features
the manifests use, as kustomize does: `resources` (files, and folders with a kustomization),
`namespace`, `images` (newName, newTag) and `patches` of JSON 6902 operations with a `target`
(kind, and a name that is a regular expression). Any other feature raises `Unsupported`: a
manifest that starts using one must extend this renderer (and the tests then check it too).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

# The kustomization fields this renderer understands.
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# Kinds that are not namespaced: `namespace` leaves them alone.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources `folder`'s kustomization.yaml builds, in order."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise Unsupported(f"{folder}/kustomization.yaml uses {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for patch in kustomization.get("patches", []):
        _apply_patch(folder, resources, patch)
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def _apply_patch(folder: Path, resources: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    """Applies a JSON 6902 patch to every resource its target selects; at least one must match."""
    if set(patch) - {"target", "patch", "path"} or "target" not in patch:
        raise Unsupported(f"patch {patch}: only JSON 6902 patches with a target are rendered")
    text = patch["patch"] if "patch" in patch else (folder / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise Unsupported(f"patch {patch}: strategic merge patches are not rendered")
    target = patch["target"]
    if set(target) - {"kind", "name"}:
        raise Unsupported(f"patch target {target}: only kind and name are rendered")
    matched = [
        resource
        for resource in resources
        if resource["kind"] == target.get("kind", resource["kind"])
        and re.fullmatch(target.get("name", ".*"), resource["metadata"]["name"])
    ]
    if not matched:
        raise ValueError(f"patch target {target} matches no resource")
    for resource in matched:
        for operation in operations:
            _apply_operation(resource, operation)


def _apply_operation(document: dict[str, Any], operation: dict[str, Any]) -> None:
    """One JSON 6902 operation (add, replace or remove) on `document`, in place."""
    op = operation["op"]
    if op not in ("add", "replace", "remove"):
        raise Unsupported(f"JSON patch operation {op}")
    keys = [key.replace("~1", "/").replace("~0", "~") for key in operation["path"].split("/")[1:]]
    parent: Any = document
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last = keys[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            parent[index] = copy.deepcopy(operation["value"])
        else:
            del parent[index]
        return
    if op != "add" and last not in parent:
        raise ValueError(f"{op} of {operation['path']}, which does not exist")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = copy.deepcopy(operation["value"])


def _set_image(resources: list[dict[str, Any]], image: dict[str, Any]) -> None:
    """Rewrites the containers whose image is `image["name"]` (any tag); at least one must match."""
    if set(image) - {"name", "newName", "newTag"}:
        raise Unsupported(f"image {image}: only newName and newTag are rendered")
    matched = False
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
                matched = True
    if not matched:
        raise ValueError(f"image {image['name']} is used by no container")
