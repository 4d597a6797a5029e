#!/usr/bin/env bash
# `just bench`: strata against skopeo+umoci, containerd and plain tar, side
# by side in one run, caches dropped before every run, medians of 3 runs.
# Builds its images with public tools, serves them from a local registry.
#   BENCH_DIR (default /var/tmp/strata-bench), BENCH_RUNS (default 3),
#   BENCH_IMAGES (default "small debian layered smallfiles"), BENCH_PARTS (default
#   "read commit transfer fleet rootless": the pull/mount/flatten rows, the
#   commit rows, the copy and push rows, the six-node fleet rows, the
#   rootless rows).
# The images are built once, in BENCH_DIR/images; every run writes to a
# journaled ext4 made fresh for each bench on a loop device (BENCH_DIR/run,
# results in BENCH_DIR/run/results): see fresh_fs below.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "just bench mounts and drops caches: run it as root" >&2; exit 1; }
bash .ci/deps
export DEBIAN_FRONTEND=noninteractive
for p in containerd hyperfine time pigz; do dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq "$p"; }; done

base=${BENCH_DIR:-/var/tmp/strata-bench}
runs=${BENCH_RUNS:-3}
images=${BENCH_IMAGES:-small debian layered smallfiles}
parts=${BENCH_PARTS:-read commit transfer fleet rootless}
mkdir -p "$base/images"
# The runs' own file system, made fresh: a journaled ext4 on a loop device
# (direct I/O, so its pages are not cached twice). Every contender meets the
# same fresh disk, and none pays for what an earlier run deleted: on a
# no-journal ext4 (this VM's disk) inodes freed in the last minute are
# skipped one by one when new ones are allocated, which made whichever run
# came right after a deletion up to 1.7x slower.
fresh_fs() {
    local img=$base/run.ext4 mnt=$base/run
    if mountpoint -q "$mnt"; then umount -R -l "$mnt"; fi
    losetup -j "$img" -O NAME -n 2>/dev/null | xargs -r -n1 losetup -d
    rm -f "$img"; truncate -s 64G "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    mkdir -p "$mnt"; mount "$(losetup --direct-io=on -f --show "$img")" "$mnt"
}
fresh_fs
export W=$base/run
mkdir -p "$W/results"
cargo build --release --quiet
strata=$PWD/target/release/strata
ctl="bash $PWD/bench/ctl.sh"
# podman with a store of its own under the bench directory (overlay driver).
export PODMAN="podman --root $W/podman/root --runroot $W/podman/run --storage-driver overlay"
podman=$PODMAN

cache=${STRATA_TEST_CACHE:-/var/cache/strata-test}
build() { # name script args...
    local name=$1 script=$2; shift 2
    local key; key=$(cat "$script" testdata/*.sh | sha256sum | cut -c1-12)
    if [ ! -f "$base/images/$name-$key/done" ]; then
        echo "== building the $name image" >&2
        bash "$script" "$@" "$base/images/$name-$key" >&2
        touch "$base/images/$name-$key/done"
    fi
    echo "$base/images/$name-$key/layout"
}
small=$(build small testdata/build-busybox-image.sh)
debian_key=$(sha256sum testdata/build-debian-image.sh | cut -c1-12)
debian=$cache/debian-$debian_key/layout
if [ ! -f "$cache/debian-$debian_key/done" ]; then
    mkdir -p "$cache"; bash testdata/build-debian-image.sh "$cache/debian-$debian_key"; touch "$cache/debian-$debian_key/done"
fi
layered=$(build layered bench/build-layered-image.sh "$debian")
smallfiles=$(build smallfiles bench/build-smallfiles-image.sh)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/registry"
cat > "$W/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $W/registry}}
http: {addr: 127.0.0.1:$port}
YAML
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
registry_pid=$!
trap '$ctl stop; kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
$ctl ctr-cold

bench() { # image contender prepare command
    hyperfine --runs "$runs" --style basic --export-json "$W/results/$1--$2.json" \
        --prepare "$3" --command-name "$2" "$4" >&2
}

for name in $images; do
    [[ " $parts " == *" read "* ]] || break
    layout=${!name}
    ref=127.0.0.1:$port/bench/$name:latest
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$ref"
    echo "== $name ($ref)" >&2
    bench "$name" strata-cold "$ctl strata-cold" "$strata --store $W/strata-store -q pull-and-mount $ref $W/rootfs"
    # Peak RSS of one cold pull-and-mount.
    $ctl strata-cold
    /usr/bin/time -f '%M' -o "$W/results/$name--strata-rss.txt" "$strata" --store "$W/strata-store" -q pull-and-mount "$ref" "$W/rootfs"
    bench "$name" strata-warm "$ctl strata-warm" "$strata --store $W/strata-store -q pull-and-mount $ref $W/rootfs"
    bench "$name" strata-flatten "$ctl flatten" "$strata --store $W/strata-empty-store -q flatten oci:$layout:latest $W/flat"
    bench "$name" skopeo-umoci "$ctl umoci" "skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$W/oci:latest && umoci unpack --image $W/oci:latest $W/bundle"
    bench "$name" umoci-unpack "$ctl umoci-local" "umoci unpack --image $layout:latest $W/bundle"
    bench "$name" ctr-pull "$ctl ctr-cold" "ctr -a $W/containerd/sock -n bench images pull --plain-http $ref"
    bench "$name" podman-pull-mount "$ctl podman-cold" "$podman pull -q --tls-verify=false $ref >/dev/null && $podman image mount $ref >/dev/null"
    bench "$name" ctr-mount "$ctl ctr-warm" "ctr -a $W/containerd/sock -n bench images mount --rw=false $ref $W/ctr-mnt || ctr -a $W/containerd/sock -n bench images mount $ref $W/ctr-mnt"
    # The plain-tools limit: the blobs already on disk, tar -xzf each into its own dir, two at a time.
    blobs=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(" ".join(l["digest"][7:] for l in m["layers"]))' \
        "$layout/blobs/sha256/$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); print([m for m in i["manifests"] if m.get("annotations",{}).get("org.opencontainers.image.ref.name")=="latest"][0]["digest"][7:])' "$layout/index.json")")
    bench "$name" tar-limit "$ctl tar" "printf '%s\n' $blobs | xargs -P2 -I{} sh -c 'mkdir -p $W/tar-out/{} && tar -xzf $layout/blobs/sha256/{} -C $W/tar-out/{}'"
done
$ctl stop
if [[ " $parts " == *" commit "* ]]; then
    source bench/commit.sh
fi
if [[ " $parts " == *" transfer "* ]]; then
    source bench/transfer.sh
fi
if [[ " $parts " == *" fleet "* ]]; then
    source bench/fleet.sh
fi
if [[ " $parts " == *" rootless "* ]]; then
    source bench/rootless.sh
fi

python3 bench/report.py "$W/results" "$images" | tee "$W/results/table.md"
