#!/usr/bin/env bash
# The per-file benchmark's image: one layer of 200 000 small files in
# 2 000 directories (a node_modules-like tree), packed by GNU tar and gzip,
# in an OCI layout written here (the blobs as tar and gzip made them).
#
#   bench/build-smallfiles-image.sh OUT_DIR      → OUT_DIR/layout:latest
set -euo pipefail
out=$1
rm -rf "$out"
mkdir -p "$out/tree" "$out/layout/blobs/sha256"
python3 - "$out/tree" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(2000):
    pkg = os.path.join(root, "node_modules", f"pkg-{d:04d}", "lib")
    os.makedirs(pkg)
    for f in range(100):
        with open(os.path.join(pkg, f"m{f:03d}.js"), "w") as fh:
            fh.write(f"module.exports = {{ id: {d * 100 + f}, name: 'pkg-{d:04d}/m{f:03d}' }};\n")
PY
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf "$out/layer.tar" -C "$out/tree" .
gzip -n -6 -c "$out/layer.tar" > "$out/layer.tar.gz"
python3 - "$out" <<'PY'
import hashlib, json, os, sys
out = sys.argv[1]
blobs = os.path.join(out, "layout", "blobs", "sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, d), "wb").write(data)
    return "sha256:" + d, len(data)
diff_id = "sha256:" + hashlib.sha256(open(os.path.join(out, "layer.tar"), "rb").read()).hexdigest()
layer, layer_size = put(open(os.path.join(out, "layer.tar.gz"), "rb").read())
import platform
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
          "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
cfg, cfg_size = put(json.dumps(config).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": cfg_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}]}
m, m_size = put(json.dumps(manifest).encode())
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m,
         "size": m_size, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
open(os.path.join(out, "layout", "index.json"), "w").write(json.dumps(index))
open(os.path.join(out, "layout", "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
rm -rf "$out/tree" "$out/layer.tar" "$out/layer.tar.gz"
