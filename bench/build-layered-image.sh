#!/usr/bin/env bash
# The benchmark's layered image: Debian bookworm minbase plus six layers,
# built with umoci (no Docker). ~360 MB gzip, ~510 MB of tar.
#
#   bench/build-layered-image.sh DEBIAN_LAYOUT OUT_DIR
#
# OUT_DIR/layout:latest layers:
#   0  debootstrap --variant=minbase bookworm (from DEBIAN_LAYOUT's first layer)
#   1  the Debian image's second layer
#   2  vendor/: ~60 MB in 600 files of base64 text
#   3  half of vendor/ deleted (whiteouts)
#   4  vendor/pkg-007 replaced by a new directory (delete + recreate)
#   5  many/: 20 000+ small files
#   6  data/big.bin: 256 MB of incompressible bytes
set -euo pipefail
debian=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
layout=$out/layout
bundle=$out/bundle
cp -a "$debian" "$layout"
umoci unpack --image "$layout:latest" "$bundle" >/dev/null
root=$bundle/rootfs
repack() { umoci repack --refresh-bundle --image "$layout:latest" "$bundle"; }

mkdir -p "$root/vendor"
for p in $(seq -w 0 59); do
    mkdir -p "$root/vendor/pkg-$p"
    for f in $(seq 0 9); do
        head -c 76800 /dev/urandom | base64 -w 76 > "$root/vendor/pkg-$p/file-$f.txt"
    done
done
repack
for p in $(seq -w 0 29); do rm -rf "$root/vendor/pkg-$p"; done
repack
rm -rf "$root/vendor/pkg-047"
mkdir -p "$root/vendor/pkg-047"
echo "replaced" > "$root/vendor/pkg-047/README"
repack
mkdir -p "$root/many"
head -c 15000000 /dev/urandom | base64 -w 0 | split -b 700 -a 5 - "$root/many/f-"
repack
mkdir -p "$root/data"
head -c 268435456 /dev/urandom > "$root/data/big.bin"
repack
umoci config --image "$layout:latest" --config.cmd /bin/bash >/dev/null
umoci gc --layout "$layout"
rm -rf "$bundle"
