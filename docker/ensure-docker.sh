#!/bin/sh
# Make sure a Docker daemon answers (and that debootstrap, which docker/base.sh needs, is there).
# Installs Debian's docker.io and debootstrap with apt when missing and starts dockerd in the
# background (log: $DOCKERD_LOG) when `docker info` fails. Installing and starting are tried only
# as root on a machine with apt; otherwise it says why and exits non-zero.
set -eu

LOG=${DOCKERD_LOG:-/var/log/nerflow-dockerd.log}
WAIT=${DOCKERD_WAIT:-60}
PATH=$PATH:/usr/sbin:/sbin

say() { echo "ensure-docker: $*" >&2; }

can_admin() {
    if [ "$(id -u)" != 0 ]; then
        say "not root: cannot $1"; return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get: cannot $1"; return 1
    fi
}

apt_install() {
    can_admin "install $*" || return 1
    say "installing $* (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=""
command -v dockerd >/dev/null 2>&1 || missing="docker.io"
command -v docker >/dev/null 2>&1 || missing="docker.io"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt_install $missing || {
        # debootstrap is only needed for the base image: a daemon may still be usable
        command -v docker >/dev/null 2>&1 || exit 1
    }
fi

if err=$(docker info 2>&1 >/dev/null); then
    exit 0
fi
say "docker info: $(printf '%s' "$err" | tail -n 1)"
case "$err" in *"permission denied"*)
    say "a daemon runs but this user may not use its socket (root, or the docker group)"; exit 1 ;;
esac
command -v dockerd >/dev/null 2>&1 || { say "no dockerd to start"; exit 1; }
can_admin "start dockerd" || exit 1
say "starting dockerd (log: $LOG)"
mkdir -p "$(dirname "$LOG")"
nohup dockerd >>"$LOG" 2>&1 </dev/null &
i=0
until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge "$WAIT" ]; then
        say "dockerd did not answer within ${WAIT}s; last lines of $LOG:"
        tail -n 20 "$LOG" >&2 || true
        exit 1
    fi
    sleep 1
done
say "dockerd is up (${i}s)"
