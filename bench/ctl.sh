#!/usr/bin/env bash
# Per-run set-up and tear-down for bench/run.sh (hyperfine --prepare calls
# these; they are not timed). Paths come from the environment run.sh exports.
set -uo pipefail
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
unmount_all() {
    # Everything mounted under the bench directory, deepest first.
    awk -v w="$W" '$5 ~ "^"w"/" {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
}
start_containerd() {
    mkdir -p "$W/containerd"
    cat > "$W/containerd/config.toml" <<TOML
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/containerd/sock"
TOML
    containerd --config "$W/containerd/config.toml" >"$W/containerd/log" 2>&1 &
    echo $! > "$W/containerd/pid"
    for _ in $(seq 100); do ctr -a "$W/containerd/sock" version >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "containerd did not start; see $W/containerd/log" >&2
    return 1
}
stop_containerd() {
    [ -f "$W/containerd/pid" ] && kill "$(cat "$W/containerd/pid")" 2>/dev/null
    for _ in $(seq 50); do [ -S "$W/containerd/sock" ] && sleep 0.1 || break; done
    sleep 0.2
    rm -f "$W/containerd/pid"
}
fresh_destination() {
    # An empty registry for each copy run (bench/transfer.sh writes its config).
    pkill -f "serve $W/dest-registry.yml" 2>/dev/null
    for _ in $(seq 50); do pgrep -f "serve $W/dest-registry.yml" >/dev/null || break; sleep 0.1; done
    rm -rf "$W/dest-registry"
    setsid docker-registry serve "$W/dest-registry.yml" >"$W/dest-registry.log" 2>&1 < /dev/null &
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$DEST_PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "the destination registry did not start; see $W/dest-registry.log" >&2
    return 1
}
fresh_cache() {
    # An empty pull-through cache for each fleet run (bench/fleet.sh writes its config).
    pkill -f "serve $W/cache-registry.yml" 2>/dev/null
    for _ in $(seq 50); do pgrep -f "serve $W/cache-registry.yml" >/dev/null || break; sleep 0.1; done
    rm -rf "$W/cache-registry" "$W/fleet"
    setsid docker-registry serve "$W/cache-registry.yml" >"$W/cache-registry.log" 2>&1 < /dev/null &
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$CACHE_PORT") 2>/dev/null && return 0; sleep 0.1; done
    echo "the cache registry did not start; see $W/cache-registry.log" >&2
    return 1
}
case "$1" in
    strata-cold)  unmount_all; rm -rf "$W/strata-store" "$W/rootfs"; drop_caches ;;
    strata-warm)  unmount_all; rm -rf "$W/rootfs"; drop_caches ;;
    flatten)      rm -rf "$W/strata-empty-store" "$W/flat"; drop_caches ;;
    umoci)        rm -rf "$W/oci" "$W/bundle"; drop_caches ;;
    umoci-local)  rm -rf "$W/bundle"; drop_caches ;;
    ctr-cold)     unmount_all; stop_containerd; rm -rf "$W/containerd/root" "$W/containerd/state"; start_containerd; drop_caches ;;
    ctr-warm)     unmount_all; ctr -a "$W/containerd/sock" -n bench snapshots rm bench-mount >/dev/null 2>&1; rm -rf "$W/ctr-mnt"; mkdir -p "$W/ctr-mnt"; drop_caches ;;
    tar)          rm -rf "$W/tar-out"; drop_caches ;;
    podman-cold)  $PODMAN image unmount --all >/dev/null 2>&1; $PODMAN rmi -af >/dev/null 2>&1; unmount_all; rm -rf "$W/podman"; drop_caches ;;
    rootless-cold)
        # The user's mounts go with its holder; the store's files are partly
        # the user's subordinate ids, which root removes.
        pkill -u "$RL_USER" -x strata-holder 2>/dev/null; sleep 0.2
        rm -rf "$RL/home/.local/share/strata" "$RL/rootfs"; drop_caches ;;
    podman-rootless-cold)
        $AS_USER podman unshare podman image unmount --all >/dev/null 2>&1
        $AS_USER podman rmi -af >/dev/null 2>&1
        $AS_USER podman system reset -f >/dev/null 2>&1
        pkill -u "$RL_USER" 2>/dev/null; sleep 0.2
        rm -rf "$RL/home/.local/share/containers" "$RL/run/"*; drop_caches ;;
    copy)         fresh_destination; drop_caches ;;
    fleet)        fresh_cache; drop_caches ;;
    stop)         unmount_all; stop_containerd; pkill -f "serve $W/dest-registry.yml" 2>/dev/null; pkill -f "serve $W/cache-registry.yml" 2>/dev/null ;;
    drop)         drop_caches ;;
    *) echo "usage: ctl.sh strata-cold|strata-warm|flatten|umoci|umoci-local|ctr-cold|ctr-warm|tar|podman-cold|rootless-cold|podman-rootless-cold|copy|fleet|stop|drop" >&2; exit 2 ;;
esac
exit 0
