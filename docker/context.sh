#!/bin/sh
# Fill the ignored build-context folder (default build/docker-context) with what only the
# builder stage uses: this machine's CA bundle and pip.conf, and the CPU torch wheel(s) from
# $WHEELS (default /opt/wheels) when there are any. Files are copied only when changed (the
# Docker layer cache stays valid); files no longer on this machine are removed.
set -eu

DIR=${1:-build/docker-context}
WHEELS=${WHEELS:-/opt/wheels}
CA=${CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
PIPCONF=${PIP_CONFIG_FILE:-/etc/pip.conf}

mkdir -p "$DIR"
keep=""
put() {  # put SOURCE NAME
    [ -f "$1" ] || return 0
    keep="$keep $2"
    cmp -s "$1" "$DIR/$2" 2>/dev/null || cp -p "$1" "$DIR/$2"
}
put "$CA" ca-certificates.crt
put "$PIPCONF" pip.conf
for w in "$WHEELS"/torch-*.whl; do
    [ -f "$w" ] || continue
    # same size and time: the same wheel (no need to read 200 MB each build)
    if [ "$(stat -c %s.%Y "$w")" != "$(stat -c %s.%Y "$DIR/${w##*/}" 2>/dev/null)" ]; then
        cp -p "$w" "$DIR/"
    fi
    keep="$keep ${w##*/}"
done
for f in "$DIR"/* "$DIR"/.[!.]*; do
    [ -e "$f" ] || continue
    case " $keep " in *" ${f##*/} "*) ;; *) rm -rf "$f" ;; esac
done
