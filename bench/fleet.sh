# Sourced by bench/run.sh: the fleet rows. Six nodes (six strata
# processes, six stores, cold) pull the 7-layer image at once, through a
# pull-through cache (distribution's proxy mode, named as mirror in
# registries.conf; emptied before each run, then filled by one node's pull,
# untimed, as a fleet's first node does) and straight from the origin: wall
# time of the whole fleet, and the bytes the origin served (its access log,
# the filling pull included) in one more run of each.
# Uses run.sh's $W, $strata, $layered, $port, bench() and $ctl.

echo "== fleet" >&2
export CACHE_PORT
CACHE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$W/cache-registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/cache-registry}}
http: {addr: 127.0.0.1:$CACHE_PORT}
proxy: {remoteurl: "http://127.0.0.1:$port"}
YAML
cat > "$W/fleet-registries.conf" <<CONF
[[registry]]
prefix = "127.0.0.1:$port"
location = "127.0.0.1:$port"
[[registry.mirror]]
location = "127.0.0.1:$CACHE_PORT"
insecure = true
CONF
src=127.0.0.1:$port/bench/layered:latest
skopeo copy --quiet --dest-tls-verify=false "oci:$layered:latest" "docker://$src"
# Six nodes at once; CONTAINERS_REGISTRIES_CONF decides whether they see the cache.
fleet="for i in 1 2 3 4 5 6; do $strata --store $W/fleet/node-\$i -q pull $src >/dev/null & done; wait"
fill="CONTAINERS_REGISTRIES_CONF=$W/fleet-registries.conf $strata --store $W/fleet/first -q pull $src >/dev/null"
bench fleet fleet-cache "$ctl fleet && $fill && $ctl drop" "CONTAINERS_REGISTRIES_CONF=$W/fleet-registries.conf bash -c '$fleet'"
bench fleet fleet-origin "$ctl fleet" "CONTAINERS_REGISTRIES_CONF=/dev/null bash -c '$fleet'"

origin_bytes() { # the bytes of blobs the origin served since byte offset $1 of its log
    tail -c +"$(( $1 + 1 ))" "$W/registry.log" | awk '$6 == "\"GET" && $7 ~ /\/blobs\/sha256:/ && $9 == 200 { n += $10 } END { printf "%.0f\n", n }'
}
for mode in cache origin; do
    $ctl fleet
    conf=/dev/null; [ "$mode" = cache ] && conf=$W/fleet-registries.conf
    offset=$(stat -c %s "$W/registry.log")
    [ "$mode" = cache ] && eval "$fill"
    CONTAINERS_REGISTRIES_CONF=$conf bash -c "$fleet"
    origin_bytes "$offset" > "$W/results/fleet--$mode-origin-bytes.txt"
done
$ctl stop
