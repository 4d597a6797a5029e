#!/usr/bin/env bash
# `just demo`: strata end to end on a machine without internet. Builds
# strata, builds a small busybox image with umoci (testdata/), serves it from
# Debian's docker-registry on a loopback port, and pull-and-mounts it into
# ./rootfs. Needs root and the tools `just deps` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "just demo mounts an overlay: run it as root" >&2; exit 1; }
for tool in umoci skopeo docker-registry; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: run \`just deps\` first" >&2; exit 1; }
done

cargo build --release --quiet
strata=$PWD/target/release/strata
work=$(mktemp -d /tmp/strata-demo.XXXXXX)
store=$work/store

echo "== building a 4-layer busybox image with umoci"
bash testdata/build-busybox-image.sh "$work/image" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 5055)
cat > "$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$work/image/layout:latest" "docker://127.0.0.1:$port/demo/busybox:latest"
echo "== a registry on 127.0.0.1:$port serves demo/busybox:latest"

if mountpoint -q rootfs 2>/dev/null; then "$strata" --store "$store" umount rootfs || umount rootfs; fi
echo "== strata pull-and-mount 127.0.0.1:$port/demo/busybox:latest ./rootfs"
"$strata" --store "$store" pull-and-mount "127.0.0.1:$port/demo/busybox:latest" ./rootfs
echo
echo "== what is in it"
ls -l rootfs rootfs/etc
echo "== chroot ./rootfs /bin/sh -c 'cat /etc/hello.txt'"
chroot rootfs /bin/sh -c 'cat /etc/hello.txt'
echo
echo "== strata mounts"
"$strata" --store "$store" mounts
echo
echo "The rootfs stays mounted. When done:"
echo "  $strata --store $store umount ./rootfs"
echo "The same from an OCI layout, no registry needed:"
echo "  $strata --store $store pull-and-mount oci:$work/image/layout:latest ./rootfs2"
