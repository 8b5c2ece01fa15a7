# Sourced by the builder stage's RUN steps (never by the final image): the build machine's
# CA bundle and pip settings, when `make image` put them in build/docker-context/ (-> /ctx).
# uv reads SSL_CERT_FILE, pip PIP_CERT; uv ignores pip.conf, so its index-url is passed on.
export UV_NO_CACHE=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -s /ctx/ca-certificates.crt ]; then
    export SSL_CERT_FILE=/ctx/ca-certificates.crt PIP_CERT=/ctx/ca-certificates.crt
fi
if [ -s /ctx/pip.conf ]; then
    export PIP_CONFIG_FILE=/ctx/pip.conf
    if [ -x /opt/nerflow/bin/pip ] && index=$(/opt/nerflow/bin/pip config get global.index-url 2>/dev/null); then
        export UV_DEFAULT_INDEX="$index"
    fi
fi
