"""Kubernetes manifests for the production model: a Deployment of its serving image (the Bento
containerized, tagged with the model tag), a Service and a HorizontalPodAutoscaler.

Every promotion and rollback writes them for the new production model into the registry,
``$BENTOML_HOME/deploy/<model name>/``: ``<version>.yaml`` per model and ``production.yaml``, a
copy of the current one (written atomically). So ``kubectl apply -f .../production.yaml`` is the
deploy step, and a rollback writes the previous model's file again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nerflow.core.config import Deploy, PackageParams, section
from nerflow.core.files import atomic_file

PORT = 3000  # bentoml serve's port in the image
TOKEN_DIR = "/var/run/secrets/nerflow"
UID = 1034  # the user BentoML's generated image runs as


def image_of(model_tag: str, deploy: Deploy) -> str:
    return f"{deploy.image_registry.rstrip('/')}/{model_tag}" if deploy.image_registry else model_tag


def manifests(model_tag: str, bento_tag: str | None, deploy: Deploy | dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Deployment, Service and HorizontalPodAutoscaler serving ``model_tag`` (as dicts)."""
    d = section(Deploy, deploy)
    name, _, version = model_tag.partition(":")
    selector = {"app.kubernetes.io/name": name}
    labels = {**selector, "app.kubernetes.io/version": version, "app.kubernetes.io/part-of": "nerflow"}
    meta = {"name": name, "namespace": d.namespace, "labels": labels,
            "annotations": {"nerflow/model-tag": model_tag, "nerflow/bento-tag": str(bento_tag or "")}}
    probe = {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "service",
        "image": image_of(model_tag, d),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [{"name": "BENTOML_DO_NOT_TRACK", "value": "true"}, {"name": "NERFLOW_MODEL_TAG", "value": model_tag}],
        "resources": {"requests": {"cpu": d.cpu, "memory": d.memory}, "limits": {"cpu": d.cpu, "memory": d.memory}},
        # the model loads before /readyz answers; /livez restarts a hung replica
        "startupProbe": {**probe, "failureThreshold": 60, "periodSeconds": 5},
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": probe,
        # the Service stops sending before SIGTERM arrives; then the server answers what it has
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": d.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if d.token_secret:
        container["env"].append({"name": "NERFLOW_API_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"})
        container["volumeMounts"] = [{"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True}]
        pod["volumes"] = [{"name": "api-token", "secret": {"secretName": d.token_secret, "items": [{"key": "token", "path": "token"}]}}]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {
            "replicas": d.min_replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels, "annotations": meta["annotations"]}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": d.min_replicas, "maxReplicas": d.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": d.target_cpu_percent}}}],
        },
    }
    return [deployment, service, hpa]


def write_production_manifests(registry, params: PackageParams | dict[str, Any] | None = None) -> Path | None:
    """The manifests of the registry's production model, as ``<version>.yaml`` and
    ``production.yaml`` under ``$BENTOML_HOME/deploy/<name>/``; None when nothing is in production."""
    tag = registry.production()
    if tag is None:
        return None
    text = yaml.safe_dump_all(manifests(tag, registry.state()["bentos"].get(tag), section(PackageParams, params).deploy),
                              sort_keys=False)
    folder = Path(registry.home) / "deploy" / registry.name
    folder.mkdir(parents=True, exist_ok=True)
    for path in (folder / f"{tag.partition(':')[2]}.yaml", folder / "production.yaml"):
        with atomic_file(path) as fh:
            fh.write(f"# the manifests of {tag}; deploy: kubectl apply -f <this file>\n{text}")
    return folder / "production.yaml"
