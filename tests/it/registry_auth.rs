//! Authentication and TLS against the real registry: htpasswd Basic auth,
//! Bearer tokens from a token server (Docker Hub's flow), a private CA.

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::util::registry::{Auth, Registry};
use crate::util::{busybox_layout, run_err, run_ok, strata, tls, token};

fn docker_config(dir: &std::path::Path, json: &str) -> std::path::PathBuf {
    let config_dir = dir.join("docker");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("config.json"), json).unwrap();
    config_dir
}

#[test]
fn basic_auth_with_credentials_from_docker_config() {
    let registry = Registry::start(
        Auth::Basic {
            user: "alice",
            password: "wonder land",
        },
        None,
    );
    registry.push_layout(busybox_layout(), "latest", "private/app:1");
    let reference = registry.reference("private/app:1");
    let tmp = tempfile::tempdir().unwrap();

    let auth = STANDARD.encode("alice:wonder land");
    let good = docker_config(
        tmp.path(),
        &format!(
            r#"{{"auths":{{"http://{}/v2/":{{"auth":"{auth}"}}}}}}"#,
            registry.addr
        ),
    );
    let config = run_ok(
        strata()
            .env("DOCKER_CONFIG", &good)
            .args(["config", &reference]),
    );
    assert!(String::from_utf8_lossy(&config).contains("\"diff_ids\""));

    // $REGISTRY_AUTH_FILE (containers' auth.json) works the same way.
    let auth_file = tmp.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.addr),
    )
    .unwrap();
    run_ok(
        strata()
            .env("REGISTRY_AUTH_FILE", &auth_file)
            .args(["manifest", &reference]),
    );

    // A wrong password: a clear 401 that names the user and where the credentials came from.
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = docker_config(
        bad_dir.path(),
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            registry.addr,
            STANDARD.encode("alice:wrong")
        ),
    );
    let (code, stderr) = run_err(
        strata()
            .env("DOCKER_CONFIG", &bad)
            .args(["manifest", &reference]),
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("401 Unauthorized for user \"alice\"") && stderr.contains("config.json"),
        "{stderr}"
    );

    // No credentials at all: say how to provide them.
    let (code, stderr) = run_err(strata().args(["manifest", &reference]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--creds USER:PASSWORD"), "{stderr}");

    // --creds wins.
    run_ok(strata().args(["manifest", "--creds", "alice:wonder land", &reference]));
}

#[test]
fn credential_helper_from_docker_config() {
    let registry = Registry::start(
        Auth::Basic {
            user: "helped",
            password: "by-helper",
        },
        None,
    );
    registry.push_layout(busybox_layout(), "latest", "private/helped:1");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-strata-test");
    let expected_server = registry.addr.clone();
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{expected_server}\" ] || exit 1\n\
             echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"helped\",\"Secret\":\"by-helper\"}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = docker_config(
        tmp.path(),
        &format!(r#"{{"credHelpers":{{"{}":"strata-test"}}}}"#, registry.addr),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    run_ok(
        strata()
            .env("DOCKER_CONFIG", &config)
            .env("PATH", path)
            .args(["manifest", &registry.reference("private/helped:1")]),
    );
}

#[test]
fn tls_with_a_generated_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tls::generate(tmp.path());
    let registry = Registry::start(Auth::None, Some(&certs));
    registry.push_layout(busybox_layout(), "latest", "tls/app:1");
    let reference = registry.reference("tls/app:1");

    let ca = certs.ca_pem.to_str().unwrap();
    run_ok(strata().args(["manifest", "--ca-file", ca, &reference]));

    // Without the CA the certificate is not trusted, and the error says so
    // (not a confusing plain-HTTP fallback).
    let (code, stderr) = run_err(strata().args(["manifest", &reference]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("https://{}/v2/", registry.addr)),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // --insecure accepts it anyway.
    run_ok(strata().args(["manifest", "--insecure", &reference]));

    // A --ca-file that is not PEM is named.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let (_, stderr) =
        run_err(strata().args(["manifest", "--ca-file", junk.to_str().unwrap(), &reference]));
    assert!(stderr.contains("junk.pem"), "{stderr}");
}

#[test]
fn bearer_token_flow_with_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = token::start(
        tmp.path(),
        &[("pusher", "push-secret"), ("reader", "read-secret")],
        false,
    );
    let registry = Registry::start(Auth::Token(&tokens), None);
    registry.push_layout(busybox_layout(), "latest", "org/app:1");
    let reference = registry.reference("org/app:1");
    tokens.requests.lock().unwrap().clear();

    let config = run_ok(strata().args(["config", "--creds", "reader:read-secret", &reference]));
    assert!(String::from_utf8_lossy(&config).contains("\"diff_ids\""));

    // strata asked only for pull, for this repository, with the registry's service.
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the token server was never asked");
    for r in &requests {
        assert_eq!(
            r.query("scope").as_deref(),
            Some("repository:org/app:pull"),
            "{r:?}"
        );
        assert_eq!(r.query("service").as_deref(), Some(token::SERVICE), "{r:?}");
    }
    assert_eq!(
        requests.len(),
        1,
        "one token serves the whole pull: {requests:?}"
    );

    let (code, stderr) = run_err(strata().args(["config", "--creds", "reader:wrong", &reference]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("401 Unauthorized for user \"reader\""),
        "{stderr}"
    );

    let (code, stderr) = run_err(strata().args(["config", &reference]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("no credentials were found"), "{stderr}");
}

#[test]
fn bearer_token_flow_anonymous() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = token::start(tmp.path(), &[("pusher", "push-secret")], true);
    let registry = Registry::start(Auth::Token(&tokens), None);
    registry.push_layout(busybox_layout(), "multi", "library/public:1");
    tokens.requests.lock().unwrap().clear();

    let config = run_ok(strata().args([
        "config",
        "--platform",
        "linux/arm64",
        &registry.reference("library/public:1"),
    ]));
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["architecture"], "arm64");
    let requests = tokens.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.header("authorization").is_none()),
        "anonymous pulls send no credentials"
    );
}
