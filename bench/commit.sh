# Sourced by bench/run.sh: the commit rows. An upper holding 256 MB (half
# incompressible) and 20 000 small files, committed by strata (gzip, zstd,
# none), by
# `tar --xattrs -cf - -C UPPER . | gzip` and `| pigz`, and by `buildah
# commit` of the same change; then a one-file change on the layered image.
# Uses run.sh's $W, $strata, $small, $layered, bench() and $ctl.

fill() { # DIR: the change every contender commits
    mkdir -p "$1/data/small"
    head -c 128000000 /dev/urandom > "$1/data/noise"
    (seq 1 30000000 || true) | head -c 128000000 > "$1/data/text"
    (cd "$1/data/small" && seq 1 20000 | xargs -n 500 touch && for f in $(seq 1 20000); do echo "$f" > "$f"; done)
}

echo "== commit" >&2
cstore=$W/commit-store
$ctl stop
rm -rf "$cstore" "$W/commit-root"
"$strata" --store "$cstore" -q pull-and-mount --rw "oci:$small:latest" "$W/commit-root" >/dev/null
fill "$W/commit-root"
upper=$(ls -d "$cstore"/mounts/*/upper)

# Each run commits new content: the previous run's image and layer are
# removed first (untimed), or the run would find its layer already stored.
fresh="$strata --store $cstore -q rm bench/commit:1 >/dev/null 2>&1; $strata --store $cstore -q gc >/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches"
bench commit strata-commit "$fresh" \
    "$strata --store $cstore -q commit $W/commit-root bench/commit:1"
bench commit strata-commit-zstd "$fresh" \
    "$strata --store $cstore -q commit --compression zstd $W/commit-root bench/commit:1"
bench commit strata-commit-none "$fresh" \
    "$strata --store $cstore -q commit --compression none $W/commit-root bench/commit:1"
eval "$fresh"
/usr/bin/time -f '%M' -o "$W/results/commit--strata-rss.txt" "$strata" --store "$cstore" -q commit "$W/commit-root" bench/commit:1 >/dev/null
bench commit tar-gzip "sync; echo 3 > /proc/sys/vm/drop_caches" \
    "tar --xattrs -cf - -C $upper . | gzip > $W/commit-tar.gz"
bench commit tar-pigz "sync; echo 3 > /proc/sys/vm/drop_caches" \
    "tar --xattrs -cf - -C $upper . | pigz > $W/commit-tar.gz"

bstore=$W/buildah
buildah_() { buildah --root "$bstore/root" --runroot "$bstore/run" --storage-driver overlay "$@"; }
rm -rf "$bstore"
ctr=$(buildah_ from --pull-never "oci:$small:latest")
fill "$(buildah_ mount "$ctr")"
# Into buildah's own storage (uncompressed: it compresses only when
# pushing), and into an OCI layout with gzip (`--disable-compression=false`:
# buildah's default is an uncompressed layer), the same work as strata's
# commit.
bench commit buildah-commit "sync; echo 3 > /proc/sys/vm/drop_caches" \
    "buildah --root $bstore/root --runroot $bstore/run --storage-driver overlay commit -q $ctr bench-commit >/dev/null"
bench commit buildah-commit-oci "rm -rf $W/buildah-oci; sync; echo 3 > /proc/sys/vm/drop_caches" \
    "buildah --root $bstore/root --runroot $bstore/run --storage-driver overlay commit -q --disable-compression=false $ctr oci:$W/buildah-oci:latest >/dev/null"
buildah_ rm "$ctr" >/dev/null
"$strata" --store "$cstore" -q umount "$W/commit-root"

# One changed file on the 7-layer image: the lowers are never walked.
"$strata" --store "$cstore" -q pull-and-mount --rw "oci:$layered:latest" "$W/commit-root" >/dev/null
echo changed > "$W/commit-root/etc/hostname"
bench commit strata-commit-one-file "$strata --store $cstore -q rm bench/one-file:1 >/dev/null 2>&1; $strata --store $cstore -q gc >/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches" \
    "$strata --store $cstore -q commit $W/commit-root bench/one-file:1"
"$strata" --store "$cstore" -q umount "$W/commit-root"
