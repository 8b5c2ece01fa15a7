#!/bin/sh
# Build the base image (default nerflow-base:bookworm) from Debian packages, for machines that
# cannot pull python:3.11-slim: a debootstrap minbase bookworm with python3, python3-venv and
# ca-certificates, imported with `docker import`. Does nothing when the image exists.
# Mirror: $DEBIAN_MIRROR, else the first URIs of /etc/apt/sources.list.d/debian.sources,
# else http://deb.debian.org/debian. Needs root and debootstrap (docker/ensure-docker.sh).
set -eu

NAME=${1:-nerflow-base:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
PACKAGES=python3,python3-venv,ca-certificates

if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "base: $NAME exists"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "base: debootstrap needs root; build $NAME as root, or set BASE_IMAGE to an image you have" >&2
    exit 1
fi
PATH=$PATH:/usr/sbin:/sbin
command -v debootstrap >/dev/null 2>&1 || { echo "base: no debootstrap (run docker/ensure-docker.sh)" >&2; exit 1; }

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
mirror=${mirror:-http://deb.debian.org/debian}

dir=$(mktemp -d "${TMPDIR:-/var/tmp}/nerflow-base.XXXXXX")
# --one-file-system: never descend into a /proc or /sys a failed debootstrap left mounted
trap 'rm -rf --one-file-system "$dir" "$dir.log"' EXIT
trap 'exit 130' INT TERM
echo "base: debootstrap $SUITE from $mirror into $dir"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" "$mirror" >"$dir.log" 2>&1 || {
    tail -n 30 "$dir.log" >&2; exit 1; }
# No downloaded packages or package lists in the image (`apt-get update` inside fetches them;
# debootstrap wrote the mirror to /etc/apt/sources.list)
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" --numeric-owner -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap --variant=minbase --include=$PACKAGES $SUITE $mirror" - "$NAME"
echo "base: built $NAME"
