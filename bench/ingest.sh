#!/usr/bin/env bash
# The destination registry's floor for bench/transfer.sh: every blob of the
# image POSTed and PUT to it with curl, one monolithic PUT per blob, all at
# once, read from the source registry's storage. No client can copy faster
# into that registry.   ingest.sh SOURCE_STORAGE DEST_HOST:PORT DIGEST...
set -euo pipefail
storage=$1 dest=$2; shift 2
up() {
    local d=$1 hex=${1#sha256:} loc
    loc=$(curl -sf -i -X POST "http://$dest/v2/ingest/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
    case $loc in http*) ;; *) loc=http://$dest$loc ;; esac
    curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$storage/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data" "$loc&digest=$d"
}
for d in "$@"; do up "$d" & done
wait
