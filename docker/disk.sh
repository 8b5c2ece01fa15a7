#!/bin/sh
# Free disk where `make test` writes: this checkout (its .venv), the temporary folder (pytest's
# tmp_path: registries, models, DVC repositories) and Docker's data root (the images the
# container tests build). One line per file system; a warning for each one with less free than
# the suite needs at its peak ($1 GB), so a run that then fails for space says why at its top.
set -eu
NEED=${1:-0}
ROOT=$(docker info -f '{{.DockerRootDir}}' 2>/dev/null || true)
seen=" "
for dir in . "${TMPDIR:-/tmp}" $ROOT; do
    [ -d "$dir" ] || continue
    # device, free KiB, mount point
    set -- $(df -P -k "$dir" | awk 'NR == 2 {print $1, $4, $6}')
    case "$seen" in *" $1 "*) continue ;; esac
    seen="$seen$1 "
    free=$(awk -v k="$2" 'BEGIN {printf "%.1f", k / 1048576}')
    echo "disk: $3: $free GB free"
    if [ "$(awk -v k="$2" -v need="$NEED" 'BEGIN {print (k / 1048576 < need)}')" = 1 ]; then
        echo "disk: warning: $3 has $free GB free, the tests need about $NEED GB there at their peak:" \
             "a test may fail with 'No space left on device' (docker system df, docker image prune)" >&2
    fi
done
