"""Reads hyperfine's JSON from bench/run.sh and prints the comparison table.

Ratios are computed pair by pair from medians of the same run.
"""
import json
import os
import sys

results, images = sys.argv[1], sys.argv[2].split()
contenders = ["strata-cold", "strata-warm", "strata-flatten", "skopeo-umoci", "umoci-unpack", "ctr-pull", "ctr-mount", "podman-pull-mount", "tar-limit",
              "strata-commit", "strata-commit-zstd", "strata-commit-none", "tar-gzip", "tar-pigz", "buildah-commit", "buildah-commit-oci",
              "strata-commit-one-file", "strata-copy", "skopeo-copy", "registry-ingest",
              "fleet-cache", "fleet-origin", "strata-root-cold", "strata-rootless-cold", "podman-rootless"]
images = images + ["commit", "transfer", "fleet", "rootless"]


def load(image, contender):
    path = os.path.join(results, f"{image}--{contender}.json")
    if not os.path.exists(path):
        return None
    return json.load(open(path))["results"][0]


print("| image | contender | wall median s | min-max s | user+sys s |")
print("|---|---|---:|---:|---:|")
for image in images:
    for c in contenders:
        r = load(image, c)
        if r is None:
            continue
        print(f"| {image} | {c} | {r['median']:.3f} | {r['min']:.3f}-{r['max']:.3f} | {r['user'] + r['system']:.3f} |")
print()
pairs = [
    ("strata-cold", "skopeo-umoci", 0.25),
    ("strata-cold", "ctr-pull", 0.40),
    ("strata-cold", "tar-limit", 0.80),
    ("strata-warm", "ctr-mount", 0.50),
    ("strata-cold", "podman-pull-mount", 0.30),
    ("strata-flatten", "umoci-unpack", 0.30),
    ("strata-flatten", "tar-limit", 0.70),
    ("strata-commit", "tar-gzip", 0.50),
    ("strata-commit", "tar-pigz", 1.00),
    ("strata-commit", "buildah-commit", 0.50),
    # buildah's own storage holds layers uncompressed: the same work is
    # strata's uncompressed commit.
    ("strata-commit-none", "buildah-commit", 0.50),
    ("strata-commit", "buildah-commit-oci", 0.50),
    ("strata-copy", "skopeo-copy", 0.50),
    ("strata-rootless-cold", "strata-root-cold", 1.10),
    ("strata-rootless-cold", "podman-rootless", 0.50),
]
# The per-file issue's targets for its two images, where they differ.
targets = {
    ("layered", "strata-cold", "tar-limit"): 0.60,
    ("layered", "strata-cold", "skopeo-umoci"): 0.15,
    ("smallfiles", "strata-cold", "tar-limit"): 0.80,
    ("smallfiles", "strata-flatten", "tar-limit"): 0.70,
}
print("| image | ratio | measured | target | met |")
print("|---|---|---:|---:|---|")
for image in images:
    for a, b, target in pairs:
        ra, rb = load(image, a), load(image, b)
        if ra is None or rb is None:
            continue
        ratio = ra["median"] / rb["median"]
        target = targets.get((image, a, b), target)
        print(f"| {image} | {a} / {b} | {ratio:.2f} | {target:.2f} | {'yes' if ratio <= target else 'no'} |")
print()
for image in images:
    path = os.path.join(results, f"{image}--strata-rss.txt")
    if os.path.exists(path):
        kib = int(open(path).read().split()[-1])
        what = "commit" if image == "commit" else "pull-and-mount"
        print(f"peak RSS of strata {what} ({image}): {kib / 1024:.1f} MiB")
one = load("commit", "strata-commit-one-file")
if one is not None:
    print(f"one-file commit on the layered image: {one['median'] * 1000:.0f} ms (target < 50 ms)")
push = os.path.join(results, "transfer--push.json")
if os.path.exists(push):
    sent = json.load(open(push))
    new = sum(b["size"] for b in sent["blobs"] if b["outcome"] == "uploaded")
    print(f"push of a one-file commit to the registry holding its base: {sent['uploaded_bytes']} bytes uploaded, "
          f"the new blobs are {new} bytes ({sent['uploaded']} uploaded, {sent['present']} already there, {sent['mounted']} mounted)")
for mode in ("cache", "origin"):
    path = os.path.join(results, f"fleet--{mode}-origin-bytes.txt")
    if os.path.exists(path):
        n = float(open(path).read().split()[0])
        print(f"six nodes pulling the layered image ({'through a pull-through cache' if mode == 'cache' else 'from the origin'}): the origin served {n / 1e6:.1f} MB of blobs")
floor, skopeo = load("transfer", "registry-ingest"), load("transfer", "skopeo-copy")
if floor is not None and skopeo is not None:
    print(f"the destination registry's own floor (curl PUTs of every blob at once): {floor['median']:.3f} s, "
          f"{floor['median'] / skopeo['median']:.2f} x skopeo copy")
