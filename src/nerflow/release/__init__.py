"""Releasing a model: the registry (BentoML's model store and the production pointer), the
Kubernetes manifests, and what stands in front of the service."""
