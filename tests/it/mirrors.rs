//! Mirrors and pull-through caches, configured the way fleets already do
//! (containers-registries.conf, containerd's hosts.toml), against real
//! registries: Debian's docker-registry as origin and as a pull-through
//! cache (`proxy: remoteurl:`). What each side served is read from the
//! registries' own access logs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::registry::{Auth, Registry};
use crate::util::{busybox_layout, run_err, run_ok, strata};

/// The origin's blob downloads so far (its access log).
fn blob_gets(registry: &Registry) -> usize {
    registry
        .requests_with("\"GET /v2/")
        .iter()
        .filter(|l| l.contains("/blobs/sha256:"))
        .count()
}

fn registries_conf(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("registries.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn mirror_conf(origin: &Registry, mirror: &str, mode: &str) -> String {
    format!(
        "[[registry]]\nprefix = \"{o}\"\nlocation = \"{o}\"\n[[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\npull-from-mirror = \"{mode}\"\n",
        o = origin.addr
    )
}

fn pull(store: &Path, conf: Option<&Path>, image: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = strata();
    cmd.arg("--store").arg(store).arg("--json");
    if let Some(c) = conf {
        cmd.env("CONTAINERS_REGISTRIES_CONF", c);
    } else {
        cmd.env("CONTAINERS_REGISTRIES_CONF", "/dev/null");
    }
    cmd.args(extra).args(["pull", image]).output().unwrap()
}

fn pulled(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Pulls the same image with five stores at once, as five nodes would.
fn five_nodes(dir: &Path, image: &str, configure: impl Fn(&mut Command)) -> Vec<serde_json::Value> {
    let children: Vec<_> = (0..5)
        .map(|i| {
            let mut cmd = strata();
            cmd.arg("--store")
                .arg(dir.join(format!("node-{i}")))
                .arg("--json");
            configure(&mut cmd);
            cmd.args(["pull", image])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let out = c.wait_with_output().unwrap();
            let json = pulled(&out);
            run_ok(
                strata()
                    .arg("--store")
                    .arg(dir.join(format!("node-{i}")))
                    .arg("fsck"),
            );
            json
        })
        .collect()
}

#[test]
fn a_fleet_behind_a_pull_through_cache_does_not_ask_the_origin_again() {
    // The origin wants a token (the distribution registry's proxy mode
    // authenticates to its remote with tokens only); the cache holds the
    // credentials, the nodes hold none.
    let tmp = tempfile::tempdir().unwrap();
    let tokens = crate::util::token::start(tmp.path(), &[("pusher", "push-secret")], false);
    let origin = Registry::start(Auth::Token(&tokens), None);
    origin.push_layout(busybox_layout(), "latest", "team/busybox:1");
    let cache = Registry::pull_through(&origin, Some(("pusher", "push-secret")));
    let conf = registries_conf(tmp.path(), &mirror_conf(&origin, &cache.addr, "all"));
    let image = origin.reference("team/busybox:1");

    // The first node fills the cache; the nodes carry no origin
    // credentials at all: the cache has its own.
    let first = pulled(&pull(&tmp.path().join("first"), Some(&conf), &image, &[]));
    assert!(
        first["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["served_by"] == cache.addr.as_str()),
        "{first}"
    );
    let origin_blobs = blob_gets(&origin);
    assert!(origin_blobs > 0, "the cache fetched from the origin");

    let nodes = five_nodes(tmp.path(), &image, |c| {
        c.env("CONTAINERS_REGISTRIES_CONF", &conf);
    });
    for node in &nodes {
        assert_eq!(node["digest"], first["digest"]);
    }
    assert_eq!(
        blob_gets(&origin),
        origin_blobs,
        "the origin served no blob to the five nodes:\n{}",
        origin.logs()
    );

    // The same fleet with containerd's hosts.toml instead.
    let hosts = tmp.path().join("certs.d");
    std::fs::create_dir_all(hosts.join(&origin.addr)).unwrap();
    std::fs::write(
        hosts.join(&origin.addr).join("hosts.toml"),
        format!("server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", origin.addr, cache.addr),
    )
    .unwrap();
    let fleet = tmp.path().join("hosts-fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let nodes = five_nodes(&fleet, &image, |c| {
        c.env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
            .arg("--hosts-dir")
            .arg(&hosts);
    });
    for node in &nodes {
        assert_eq!(node["digest"], first["digest"]);
        assert!(
            node["layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["served_by"] == cache.addr.as_str()),
            "{node}"
        );
    }
    assert_eq!(
        blob_gets(&origin),
        origin_blobs,
        "hosts.toml: the origin served no blob"
    );
    assert!(
        !cache.requests_with("ns=").is_empty(),
        "mirror requests carry ?ns=ORIGIN"
    );

    // By digest, with the origin gone: the cache serves it.
    let digest = first["digest"].as_str().unwrap().to_owned();
    drop(origin);
    let by_digest = format!("{}@{digest}", image.rsplit_once(':').unwrap().0);
    let out = pull(&tmp.path().join("offline"), Some(&conf), &by_digest, &[]);
    assert_eq!(pulled(&out)["digest"], digest.as_str());
}

#[test]
fn a_dead_or_silent_mirror_is_passed_over_within_seconds() {
    let origin = Registry::plain();
    origin.push_layout(busybox_layout(), "latest", "busybox:1");
    let image = origin.reference("busybox:1");
    let tmp = tempfile::tempdir().unwrap();

    let started = Instant::now();
    pulled(&pull(&tmp.path().join("direct"), None, &image, &[]));
    let direct = started.elapsed();

    // Nothing listens on the first; the second accepts and never answers.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    for mirror in [dead, silent_addr] {
        let conf = registries_conf(tmp.path(), &mirror_conf(&origin, &mirror, "all"));
        let started = Instant::now();
        let out = pull(
            &tmp.path().join(format!("via-{}", mirror.replace(':', "-"))),
            Some(&conf),
            &image,
            &[],
        );
        let json = pulled(&out);
        assert!(
            json["layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["served_by"].is_null()),
            "served by the origin: {json}"
        );
        assert!(
            started.elapsed() < direct + Duration::from_secs(10),
            "a failed mirror {mirror} cost {:?} over a direct pull",
            started.elapsed() - direct
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&mirror) && stderr.contains("passing over"),
            "the warning names the mirror:\n{stderr}"
        );
    }
}

#[test]
fn a_digest_only_mirror_is_never_asked_for_a_tag_yet_serves_the_blobs() {
    let origin = Registry::plain();
    origin.push_layout(busybox_layout(), "latest", "busybox:1");
    let cache = Registry::pull_through(&origin, None);
    let tmp = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        tmp.path(),
        &mirror_conf(&origin, &cache.addr, "digest-only"),
    );
    let json = pulled(&pull(
        &tmp.path().join("store"),
        Some(&conf),
        &origin.reference("busybox:1"),
        &[],
    ));
    assert!(
        json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["served_by"] == cache.addr.as_str()),
        "{json}"
    );
    let tag_requests: Vec<String> = cache
        .requests_with("/manifests/")
        .into_iter()
        .filter(|l| !l.contains("/manifests/sha256:"))
        .collect();
    assert!(
        tag_requests.is_empty(),
        "the mirror was asked for a tag: {tag_requests:?}"
    );
    assert!(
        !origin.requests_with("/manifests/1").is_empty(),
        "the tag was resolved at the origin"
    );
}

#[test]
fn a_mirror_serving_a_wrong_blob_is_refused_and_named() {
    let origin = Registry::plain();
    origin.push_layout(busybox_layout(), "latest", "busybox:1");
    let mirror = Registry::plain();
    mirror.push_layout(busybox_layout(), "latest", "busybox:1");
    // Damage every layer blob in the mirror's storage (same length).
    let blobs = mirror
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256");
    let mut damaged = 0;
    for prefix in std::fs::read_dir(&blobs).unwrap() {
        for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let data = blob.unwrap().path().join("data");
            let mut bytes = std::fs::read(&data).unwrap();
            if bytes.starts_with(&[0x1f, 0x8b]) && bytes.len() > 64 {
                let n = bytes.len();
                bytes[n - 20] ^= 0xff;
                std::fs::write(&data, bytes).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0);
    let tmp = tempfile::tempdir().unwrap();
    let conf = registries_conf(tmp.path(), &mirror_conf(&origin, &mirror.addr, "all"));
    let store = tmp.path().join("store");
    let out = pull(&store, Some(&conf), &origin.reference("busybox:1"), &[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("mirror {}", mirror.addr)),
        "the error names the mirror:\n{stderr}"
    );
    let images = run_ok(
        strata()
            .arg("--store")
            .arg(&store)
            .args(["--json", "images"]),
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&images).unwrap(),
        serde_json::json!([])
    );
    run_ok(strata().arg("--store").arg(&store).arg("fsck"));
}

#[test]
fn locations_rewrite_references_and_a_blocked_registry_is_refused_naming_the_file() {
    let real = Registry::plain();
    real.push_layout(busybox_layout(), "latest", "real/busybox:1");
    let tmp = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        tmp.path(),
        &format!(
            "[[registry]]\nprefix = \"registry.example.invalid/team\"\nlocation = \"{}/real\"\n\n[[registry]]\nprefix = \"blocked.example.invalid\"\nblocked = true\n",
            real.addr
        ),
    );
    let json = pulled(&pull(
        &tmp.path().join("store"),
        Some(&conf),
        "registry.example.invalid/team/busybox:1",
        &[],
    ));
    assert_eq!(json["image"], "registry.example.invalid/team/busybox:1");
    assert!(!real.requests_with("/v2/real/busybox/manifests/").is_empty());
    let (code, err) = run_err(
        strata()
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .arg("--store")
            .arg(tmp.path().join("store"))
            .args(["pull", "blocked.example.invalid/x:1"]),
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("blocked") && err.contains(&conf.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_mirror_that_breaks_off_or_answers_garbage_is_passed_over_and_the_origin_finishes() {
    let origin = Registry::plain();
    origin.push_layout(busybox_layout(), "latest", "busybox:1");
    let copy = Registry::plain();
    copy.push_layout(busybox_layout(), "latest", "busybox:1");
    let tmp = tempfile::tempdir().unwrap();
    let image = origin.reference("busybox:1");

    // Every connection to this mirror breaks after 64 kB: manifests and
    // config pass, the 1 MB layer breaks off and goes on from the origin.
    let breaking = crate::util::proxy::Proxy::start(&copy.addr, |_| {
        crate::util::proxy::Fault::ResetAfter(64 << 10)
    });
    let conf = registries_conf(tmp.path(), &mirror_conf(&origin, &breaking.addr, "all"));
    let store = tmp.path().join("broken-off");
    let json = pulled(&pull(&store, Some(&conf), &image, &[]));
    let direct = pulled(&pull(&tmp.path().join("direct"), None, &image, &[]));
    assert_eq!(json["digest"], direct["digest"]);
    run_ok(strata().arg("--store").arg(&store).arg("fsck"));

    // A mirror answering HTML to everything.
    let garbage = crate::util::http::Server::start("127.0.0.1", |_, stream| {
        crate::util::http::respond(
            stream,
            200,
            &[("Content-Type", "text/html".into())],
            b"<html>captive portal</html>",
        );
    });
    let conf = registries_conf(tmp.path(), &mirror_conf(&origin, &garbage.addr, "all"));
    let out = pull(&tmp.path().join("garbage"), Some(&conf), &image, &[]);
    let json = pulled(&out);
    assert_eq!(json["digest"], direct["digest"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&garbage.addr),
        "the warning names the mirror"
    );

    // The origin down too: a network failure, not "not found".
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let conf = registries_conf(
        tmp.path(),
        &format!(
            "[[registry]]\nprefix = \"{dead}\"\nlocation = \"{dead}\"\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            garbage.addr
        ),
    );
    let out = pull(
        &tmp.path().join("down"),
        Some(&conf),
        &format!("{dead}/busybox:1"),
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_block_holds_whichever_file_picks_the_hosts_and_bad_configs_name_their_file() {
    let origin = Registry::plain();
    origin.push_layout(busybox_layout(), "latest", "busybox:1");
    let tmp = tempfile::tempdir().unwrap();
    let conf = registries_conf(
        tmp.path(),
        &format!(
            "[[registry]]\nprefix = \"{}\"\nblocked = true\n",
            origin.addr
        ),
    );
    let hosts = tmp.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("_default")).unwrap();
    std::fs::write(
        hosts.join("_default/hosts.toml"),
        "[host.\"http://127.0.0.1:9\"]\n  capabilities = [\"pull\"]\n",
    )
    .unwrap();
    let out = pull(
        &tmp.path().join("store"),
        Some(&conf),
        &origin.reference("busybox:1"),
        &["--hosts-dir", hosts.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (text, words) in [
        ("[registries.block]\nregistries = [\"x\"]\n", "v1 format"),
        (
            "[[registry]]\nprefix = \"a.example\"\n[[registry.mirror]]\nlocation = \"http://m.example\"\n",
            "scheme",
        ),
        (
            "[[registry]]\nprefix = \"a.example\"\nlocaton = \"b.example\"\n",
            "unknown field",
        ),
    ] {
        let conf = registries_conf(tmp.path(), text);
        let out = pull(&tmp.path().join("bad"), Some(&conf), "a.example/x:1", &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(words)
                && err.contains(&conf.display().to_string()),
            "{text}: {err}"
        );
        // A local layout needs no registry: a broken registry file does not stop it.
        let local = strata()
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .args([
                "manifest",
                &format!("oci:{}:latest", busybox_layout().display()),
            ])
            .output()
            .unwrap();
        assert!(
            local.status.success(),
            "{}",
            String::from_utf8_lossy(&local.stderr)
        );
    }
    std::fs::write(
        hosts.join("_default/hosts.toml"),
        "[host.\"http://127.0.0.1:9\"]\n  capabilties = [\"pull\"]\n",
    )
    .unwrap();
    let out = pull(
        &tmp.path().join("bad"),
        None,
        "a.example/x:1",
        &["--hosts-dir", hosts.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field") && err.contains("hosts.toml"),
        "{err}"
    );
}
