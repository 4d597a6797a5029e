# strata's tasks. `just --list` shows them with these comments.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes
default:
    @just --list

# Run every test tier that needs no internet: the unprivileged tier as nobody, then the privileged one as root (needs the Debian tools .ci/run installs); prints "N passed, N failed" even when tests fail
test:
    #!/usr/bin/env bash
    set -uo pipefail
    mkdir -p target
    just test-unprivileged 2>&1 | tee target/test.log
    unprivileged=${PIPESTATUS[0]}
    cargo test --workspace --locked --all-targets --no-fail-fast 2>&1 | tee -a target/test.log
    privileged=${PIPESTATUS[0]}
    awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' target/test.log
    [[ $unprivileged == 0 && $privileged == 0 ]]

# The unprivileged tier: every test not named privileged_* (the unit tests of registry, layer, stack, CLI and the integration tests that need no root), run as nobody when called as root (they must never need root)
test-unprivileged:
    #!/usr/bin/env bash
    set -euo pipefail
    mapfile -t tests < <(cargo test --locked --no-run --message-format=json -p strata-registry -p strata-layer -p strata-stack -p strata-userns -p strata --lib --test it 2>/dev/null \
        | grep -o '"executable":"[^"]*/deps/[^"]*"' | cut -d'"' -f4)
    [[ ${#tests[@]} -gt 0 ]] || { echo "no unprivileged test binaries were built"; exit 1; }
    as_user=()
    if [[ $(id -u) == 0 ]]; then
        # Test images are built by the tier's own user, in a cache it owns.
        mkdir -p target/tmp-nobody/images
        chown -R 65534:65534 target/tmp-nobody
        as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp STRATA_TEST_IMAGES="$PWD/target/tmp-nobody/images")
    fi
    failed=0
    for t in "${tests[@]}"; do
        echo "== $(basename "$t") as $([[ ${#as_user[@]} -gt 0 ]] && echo nobody || id -un)"
        "${as_user[@]}" "$t" --skip privileged_ --skip internet_ || failed=1
    done
    exit $failed

# Formatting, lints, docs, the fuzz targets and tests: what a change must pass (what .ci/run runs)
check: fmt-check clippy doc fuzz-build test

# Format the code
fmt:
    cargo fmt --all

# Fail if the code is not formatted
fmt-check:
    cargo fmt --all -- --check

# Clippy on everything, warnings are errors
clippy:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Build the docs, warnings are errors
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# Check that the fuzz targets (fuzz/, outside the workspace) still compile against the libraries
fuzz-build:
    cargo check --manifest-path fuzz/Cargo.toml --locked --bins

# Tests that pull from Docker Hub and ghcr.io for real (needs internet; off by default)
test-internet:
    cargo test --locked -p strata --features internet-tests --test it internet_

# Install the Debian packages and tools the tests use (as root)
deps:
    bash .ci/deps

# Run it: build strata, serve a test image from a local registry, pull-and-mount it into ./rootfs (as root)
demo:
    bash scripts/demo.sh

# Benchmark strata against skopeo+umoci, containerd and plain tar (as root; ~20 min; prints the table)
bench:
    bash bench/run.sh

# Fuzz each target (reference, manifest, extract) for SECONDS, on stable Rust via RUSTC_BOOTSTRAP (as root; crashes land in fuzz/artifacts/)
fuzz seconds="600" *targets="reference manifest extract":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cd fuzz
    for t in {{targets}}; do
        mkdir -p corpus/$t
        seeds=(); [[ -d seeds/$t ]] && seeds=(seeds/$t)
        # extract's scoped threads may still run their TLS destructors when
        # libFuzzer checks for leaks: std's own thread records look leaked
        # (google/sanitizers#757). Leak checks stay on for the others.
        leaks=1; [[ $t == extract ]] && leaks=0
        echo "== fuzzing $t for {{seconds}} s"
        RUSTC_BOOTSTRAP=1 cargo fuzz run $t corpus/$t "${seeds[@]}" -- \
            -max_total_time={{seconds}} -timeout=10 -rss_limit_mb=2048 -detect_leaks=$leaks -print_final_stats=1
    done
