#!/usr/bin/env bash
# Builds a Debian bookworm minbase image as an OCI layout with umoci: the
# tests cache it outside the repository (it needs Debian's mirror and takes a
# few minutes).
#
#   testdata/build-debian-image.sh OUT_DIR
#
# OUT_DIR/layout, tag latest, two layers:
#   1. debootstrap --variant=minbase bookworm
#   2. /usr/share/doc and /usr/share/man deleted (thousands of whiteouts),
#      /etc/motd replaced, a setuid file, a hard link to a lower file
# Needs: debootstrap, umoci. MIRROR overrides the Debian mirror.
set -euo pipefail
out=$1
mirror=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
command -v umoci >/dev/null || { echo "umoci is needed: apt-get install umoci" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
layout=$out/layout
bundle=$out/bundle
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack --image "$layout:latest" "$bundle"
rmdir "$bundle/rootfs"
debootstrap --variant=minbase bookworm "$bundle/rootfs" "$mirror" >"$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log" >&2; exit 1; }
rm -rf "$bundle/rootfs/var/cache/apt/archives/"*.deb
umoci repack --refresh-bundle --image "$layout:latest" "$bundle"

root=$bundle/rootfs
rm -rf "$root/usr/share/doc" "$root/usr/share/man"
echo "built by strata's tests" > "$root/etc/motd"
cp "$root/bin/true" "$root/usr/local/bin/suid-true"
chmod 4755 "$root/usr/local/bin/suid-true"
ln "$root/usr/bin/env" "$root/usr/local/bin/env-link"
umoci repack --refresh-bundle --image "$layout:latest" "$bundle"
umoci config --image "$layout:latest" --config.cmd /bin/bash
umoci gc --layout "$layout"
rm -rf "$bundle"
