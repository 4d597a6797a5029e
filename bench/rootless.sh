# Sourced by bench/run.sh: the rootless rows. A real user with a subuid
# range (made here, as the tests make theirs) pull-and-mounts the 7-layer
# image cold into its own store, against root's cold pull-and-mount in the
# same run and against rootless podman in the user's own storage
# (`podman pull` + `podman unshare podman image mount`).
# Uses run.sh's $W, $strata, $layered, $port, bench() and $ctl.

echo "== rootless" >&2
user=strata-bench
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 400000-465535 --add-subgids 400000-465535 "$user"
export RL=$W/rootless RL_USER=$user
rm -rf "$RL"; mkdir -p "$RL/home" "$RL/run"; chown -R "$user:" "$RL"; chmod 700 "$RL/run"
# strata's release binary where the user can run it.
install -m 755 "$strata" "$RL/strata"
export AS_USER="setpriv --reuid=$(id -u $user) --regid=$(id -g $user) --clear-groups env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=$RL/home XDG_DATA_HOME=$RL/home/.local/share XDG_RUNTIME_DIR=$RL/run XDG_CONFIG_HOME=$RL/home/.config"
ref=127.0.0.1:$port/bench/layered:latest
skopeo copy --quiet --dest-tls-verify=false "oci:$layered:latest" "docker://$ref"
cd "$RL"
bench rootless strata-root-cold "$ctl strata-cold" "$strata --store $W/strata-store -q pull-and-mount $ref $W/rootfs"
bench rootless strata-rootless-cold "$ctl rootless-cold" "$AS_USER $RL/strata -q pull-and-mount $ref $RL/rootfs"
bench rootless podman-rootless "$ctl podman-rootless-cold" "$AS_USER podman pull -q --tls-verify=false $ref >/dev/null && $AS_USER podman unshare podman image mount $ref >/dev/null"
$ctl rootless-cold
$ctl podman-rootless-cold
cd - >/dev/null
