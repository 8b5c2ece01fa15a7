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
    # device, free GB, mount point, 1 when below the need
    set -- $(df -P -k "$dir" | awk -v need="$NEED" 'NR == 2 {printf "%s %.1f %s %d\n", $1, $4 / 1048576, $6, $4 / 1048576 < need}')
    case "$seen" in *" $1 "*) continue ;; esac
    seen="$seen$1 "
    echo "disk: $3: $2 GB free"
    if [ "$4" = 1 ]; then
        echo "disk: warning: $3 has $2 GB free, the tests need about $NEED GB there at their peak:" \
             "a test may fail with 'No space left on device' (docker system df, docker image prune)" >&2
    fi
done
