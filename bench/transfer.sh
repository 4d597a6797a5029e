# Sourced by bench/run.sh: the push and copy rows. `strata copy` of the
# 7-layer image between two local registries against `skopeo copy` (each
# run into an empty destination registry), and the bytes a push of a
# one-file commit on that image uploads to the registry holding its base.
# Uses run.sh's $W, $strata, $layered, $port, bench() and $ctl.

echo "== copy and push" >&2
export DEST_PORT
DEST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$W/dest-registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/dest-registry}}
http: {addr: 127.0.0.1:$DEST_PORT}
YAML
src_host=127.0.0.1:$port
src=$src_host/bench/layered:latest
skopeo copy --quiet --dest-tls-verify=false "oci:$layered:latest" "docker://$src"
dest=127.0.0.1:$DEST_PORT/copied/layered:latest
bench transfer strata-copy "$ctl copy" "$strata -q copy $src $dest"
bench transfer skopeo-copy "$ctl copy" "skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false docker://$src docker://$dest"
# The destination registry's own floor: curl PUTs of every blob, all at once.
digests=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$src_host/v2/bench/layered/manifests/latest" \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print(" ".join([m["config"]["digest"]] + [l["digest"] for l in m["layers"]]))')
bench transfer registry-ingest "$ctl copy" "bash $PWD/bench/ingest.sh $W/registry 127.0.0.1:$DEST_PORT $digests"

# A one-file commit on the image, pushed to the repository holding its base.
pstore=$W/push-store
rm -rf "$pstore"
"$strata" --store "$pstore" -q pull-and-mount --rw "$src" "$W/push-root" >/dev/null
echo pushed > "$W/push-root/etc/hostname"
"$strata" --store "$pstore" -q commit "$W/push-root" "127.0.0.1:$port/bench/layered:one-file" >/dev/null
"$strata" --store "$pstore" -q umount "$W/push-root"
"$strata" --store "$pstore" -q --json push "127.0.0.1:$port/bench/layered:one-file" > "$W/results/transfer--push.json"
$ctl stop
