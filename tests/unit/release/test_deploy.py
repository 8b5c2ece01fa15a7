"""The Kubernetes manifests of a production model, validated offline against the Kubernetes
JSON schemas (kubernetes-validate, strict: an unknown key is an error)."""

import copy

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = "1.30"


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S, strict=True)


@pytest.mark.parametrize("deploy", [{}, {"token_secret": "nerflow-api-token", "image_registry": "ghcr.io/team/",
                                         "namespace": "ml", "min_replicas": 1, "max_replicas": 3}])
def test_manifests_validate_against_the_kubernetes_schemas(deploy):
    from nerflow.release.deploy import manifests

    docs = manifests("nerflow-ner:abc123", "nerflow_ner:def456", deploy)
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for doc in docs:
        validate(doc)
    deployment, service, hpa = docs
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == ("ghcr.io/team/nerflow-ner:abc123" if deploy else "nerflow-ner:abc123")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["terminationGracePeriodSeconds"] == 150
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"] == service["metadata"]["name"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "abc123"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NERFLOW_MODEL_TAG"] == "nerflow-ner:abc123"
    if deploy:
        assert env["NERFLOW_API_TOKEN_FILE"] == "/var/run/secrets/nerflow/token"
        assert pod["volumes"][0]["secret"]["secretName"] == "nerflow-api-token"
        assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 3


def test_the_validator_catches_what_a_cluster_would_refuse():
    from nerflow.release.deploy import manifests

    deployment = manifests("nerflow-ner:abc123", None)[0]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = bad["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="'readinesProbe' was unexpected"):
        validate(bad)
    bad = copy.deepcopy(deployment)
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type 'integer'"):
        validate(bad)


def test_deploy_params_are_checked():
    from nerflow import NerflowError
    from nerflow.release.deploy import manifests

    with pytest.raises(NerflowError, match="max_replicas .1. is below min_replicas .2."):
        manifests("nerflow-ner:abc123", None, {"max_replicas": 1})
    with pytest.raises(NerflowError, match="replicsa"):
        manifests("nerflow-ner:abc123", None, {"replicsa": 3})
