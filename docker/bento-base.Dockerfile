# Base image for `bentoml containerize` where no image registry is reachable (python:3.11-slim,
# BentoML's default, comes from Docker Hub): Debian's python3 from the debootstrap base
# (docker/base.sh), plus what the Dockerfile BentoML generates expects to find or fetch: uv
# (else it pip-installs it), this machine's CA bundle (its `uv pip install` reaches the package
# index with it) and the CPU torch wheel (UV_FIND_LINKS: torch==X resolves to X+cpu, not
# PyPI's CUDA build). `make bento-base` builds it as nerflow-bento-base:bookworm; set
# package.bento_base_image to that name. Elsewhere leave package.bento_base_image null.
ARG BASE_IMAGE=nerflow-base:bookworm
FROM ${BASE_IMAGE}
COPY docker/build-env.sh build/docker-contex[t] /ctx/
RUN set -eu; . /ctx/build-env.sh; \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install -q uv==0.13.9 && ln -s /opt/uv/bin/uv /usr/local/bin/uv; \
    mkdir -p /wheels; for w in /ctx/torch-*.whl; do [ -f "$w" ] && mv "$w" /wheels/; done; \
    if [ -s /ctx/ca-certificates.crt ]; then cp /ctx/ca-certificates.crt /etc/ssl/certs/build-ca-certificates.crt; \
    else cp /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/build-ca-certificates.crt; fi; \
    rm -rf /ctx
ENV UV_FIND_LINKS=/wheels SSL_CERT_FILE=/etc/ssl/certs/build-ca-certificates.crt BENTOML_DO_NOT_TRACK=true
