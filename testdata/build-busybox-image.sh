#!/usr/bin/env bash
# Builds a small multi-layer OCI image layout from Debian's busybox-static with
# umoci, the way a user without Docker would. Used by the integration tests.
#
#   testdata/build-busybox-image.sh OUT_DIR
#
# OUT_DIR/layout is an OCI image layout with two tags:
#   latest  linux/amd64, 4 layers:
#             1. /bin/busybox and applet links, /etc/passwd, /tmp (1777)
#             2. /etc/hello.txt, /data/a.txt, /data/b.txt, /opt/app/x
#             3. /data/b.txt deleted (a whiteout), /etc/hello.txt changed
#             4. /opt/app replaced by a directory holding only y
#   arm64   the same layers, config saying linux/arm64
# Needs: umoci, busybox-static (/bin/busybox).
set -euo pipefail
out=$1
busybox=/bin/busybox
if ! dpkg -s busybox-static >/dev/null 2>&1 || [ ! -x "$busybox" ]; then
    echo "busybox-static is needed: apt-get install busybox-static (or run: just deps)" >&2
    exit 1
fi
command -v umoci >/dev/null || { echo "umoci is needed: apt-get install umoci" >&2; exit 1; }

# As an ordinary user (the unprivileged test tier), umoci unpacks rootless:
# the repacked layers still say root owns the files.
rootless=()
[ "$(id -u)" = 0 ] || rootless=(--rootless)

layout=$out/layout
bundle=$out/bundle
rm -rf "$layout" "$bundle"
mkdir -p "$out"
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack "${rootless[@]}" --image "$layout:latest" "$bundle"
root=$bundle/rootfs

# 1: busybox
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh cat ls echo test; do ln -s busybox "$root/bin/$applet"; done
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
umoci repack --refresh-bundle --image "$layout:latest" "$bundle"

# 2: content
mkdir -p "$root/data" "$root/opt/app"
echo "hello from layer 2" > "$root/etc/hello.txt"
echo a > "$root/data/a.txt"
echo b > "$root/data/b.txt"
echo x > "$root/opt/app/x"
umoci repack --refresh-bundle --image "$layout:latest" "$bundle"

# 3: a deletion and a change
rm "$root/data/b.txt"
echo "hello from layer 3" > "$root/etc/hello.txt"
umoci repack --refresh-bundle --image "$layout:latest" "$bundle"

# 4: a directory replaced
rm -rf "$root/opt/app"
mkdir -p "$root/opt/app"
echo y > "$root/opt/app/y"
umoci repack --refresh-bundle --image "$layout:latest" "$bundle"

umoci config --image "$layout:latest" --config.cmd /bin/sh --config.env FOO=bar --config.workingdir /
umoci config --image "$layout:latest" --tag arm64 --architecture arm64
umoci gc --layout "$layout"
rm -rf "$bundle"
