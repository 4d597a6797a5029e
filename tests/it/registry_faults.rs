//! What a real registry will not do on demand: wrong bytes, bodies cut off,
//! 429s, 500s, redirects to another host. An in-process fault server serves
//! the busybox test image over the distribution API and misbehaves on its
//! largest layer blob; strata's library is driven against it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use strata_registry::{
    Credentials, Error, ImageRef, ImageSource, Options, PlainHttp, Platform, integrity_error,
};

use crate::util::http::{Request, Server, respond};
use crate::util::{busybox_layout, fast_options};

const REPO: &str = "test/faulty";
const USER: &str = "fault";
const PASSWORD: &str = "injector";

#[derive(Clone)]
enum Fault {
    /// Serve the blob with one byte flipped.
    Corrupt,
    /// Promise the whole blob, send this many bytes, close.
    CutOff(usize),
    /// Answer with this status the first N times (with `Retry-After: 1` for 429).
    Status(u16, usize),
    /// 307 to the same blob on another host.
    Redirect(String),
}

struct FaultServer {
    server: Server,
    /// The digest of the blob the fault applies to.
    target: String,
    target_hits: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Request>>>,
}

fn layout() -> PathBuf {
    busybox_layout().to_owned()
}

fn read_blob(digest: &str) -> Vec<u8> {
    std::fs::read(
        layout()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

fn latest_manifest() -> (String, Vec<u8>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout().join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let bytes = read_blob(&digest);
    (digest, bytes)
}

/// The largest layer: the one the fault hits.
fn largest_layer(manifest: &[u8]) -> String {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Serves a blob, honouring `Range: bytes=N-`.
fn serve_blob(req: &Request, stream: &mut TcpStream, bytes: &[u8]) {
    match req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
    {
        Some(start) => {
            let start: usize = start.parse().unwrap();
            let range = format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len());
            respond(stream, 206, &[("Content-Range", range)], &bytes[start..]);
        }
        None => respond(stream, 200, &[], bytes),
    }
}

fn start(fault: Fault) -> FaultServer {
    let (manifest_digest, manifest) = latest_manifest();
    let target = largest_layer(&manifest);
    let target_hits = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}")
        )
    );
    let (hits, log2, target2) = (target_hits.clone(), log.clone(), target.clone());
    let server = Server::start("127.0.0.1", move |req, stream| {
        log2.lock().unwrap().push(req.clone());
        if req.header("authorization") != Some(basic.as_str()) {
            respond(
                stream,
                401,
                &[("WWW-Authenticate", r#"Basic realm="faults""#.into())],
                b"",
            );
            return;
        }
        let path = req.path();
        if path == "/v2/" {
            respond(stream, 200, &[], b"{}");
        } else if let Some(reference) = path.strip_prefix(&format!("/v2/{REPO}/manifests/")) {
            if reference != "latest" && reference != manifest_digest {
                respond(
                    stream,
                    404,
                    &[],
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#,
                );
                return;
            }
            let headers = [
                (
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".to_owned(),
                ),
                ("Docker-Content-Digest", manifest_digest.clone()),
            ];
            let body: &[u8] = if req.method == "HEAD" { b"" } else { &manifest };
            if req.method == "HEAD" {
                // A HEAD has the GET's Content-Length but no body.
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: {}\r\nDocker-Content-Digest: {}\r\nConnection: close\r\n\r\n",
                    manifest.len(),
                    headers[0].1,
                    headers[1].1
                );
                let _ = stream.write_all(head.as_bytes());
                return;
            }
            respond(stream, 200, &headers, body);
        } else if let Some(digest) = path.strip_prefix(&format!("/v2/{REPO}/blobs/")) {
            let bytes = read_blob(digest);
            if digest != target2 {
                serve_blob(req, stream, &bytes);
                return;
            }
            let hit = hits.fetch_add(1, Ordering::SeqCst);
            match &fault {
                Fault::Corrupt => {
                    let mut bad = bytes.clone();
                    let mid = bad.len() / 2;
                    bad[mid] ^= 0xff;
                    serve_blob(req, stream, &bad);
                }
                Fault::CutOff(at) if req.header("range").is_none() => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&bytes[..*at]);
                    let _ = stream.flush();
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
                Fault::Status(code, times) if hit < *times => {
                    let headers = if *code == 429 {
                        vec![("Retry-After", "1".to_owned())]
                    } else {
                        vec![]
                    };
                    respond(stream, *code, &headers, b"injected failure");
                }
                Fault::Redirect(other) => {
                    respond(
                        stream,
                        307,
                        &[("Location", format!("http://{other}/storage/{digest}"))],
                        b"",
                    );
                }
                _ => serve_blob(req, stream, &bytes),
            }
        } else {
            respond(stream, 404, &[], b"");
        }
    });
    FaultServer {
        server,
        target,
        target_hits,
        log,
    }
}

fn options() -> Options {
    Options {
        plain_http: PlainHttp::Always,
        creds: Some(Credentials::from_flag(&format!("{USER}:{PASSWORD}")).unwrap()),
        ..fast_options()
    }
}

/// Resolves the image and reads its target layer; returns the bytes or the error.
fn pull_target(server: &FaultServer, options: &Options) -> Result<Vec<u8>, std::io::Error> {
    let reference: ImageRef = format!("{}/{REPO}:latest", server.server.addr)
        .parse()
        .unwrap();
    let source = ImageSource::open(&reference, options).expect("opening the fault server");
    let image = source
        .resolve(&Platform::host())
        .expect("resolving the image");
    let layer = image
        .layers()
        .unwrap()
        .into_iter()
        .find(|l| l.descriptor.digest().to_string() == server.target)
        .unwrap();
    let mut bytes = Vec::new();
    source
        .blob(&layer.descriptor, "layer 0")
        .unwrap()
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[test]
fn a_blob_that_does_not_match_its_digest_fails_naming_both_digests() {
    let server = start(Fault::Corrupt);
    let err = pull_target(&server, &options()).expect_err("corrupt bytes were accepted");
    let inner = integrity_error(&err).expect("an integrity error");
    assert!(matches!(inner, Error::DigestMismatch { .. }), "{inner}");
    let message = inner.to_string();
    assert!(
        message.contains(&format!("expected {}", server.target)),
        "{message}"
    );
    assert!(message.contains("got sha256:"), "{message}");
    assert!(message.contains("layer 0 of"), "{message}");
}

#[test]
fn a_body_cut_off_half_way_resumes_with_range_and_verifies() {
    let full = read_blob(&largest_layer(&latest_manifest().1));
    let half = full.len() / 2;
    let server = start(Fault::CutOff(half));
    let bytes = pull_target(&server, &options()).expect("the pull should resume");
    assert_eq!(bytes, full);
    let ranges: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r.header("range").map(str::to_owned))
        .collect();
    assert_eq!(
        ranges,
        vec![format!("bytes={half}-")],
        "one resume, from the byte reached"
    );
}

#[test]
fn too_many_requests_then_success() {
    let server = start(Fault::Status(429, 2));
    pull_target(&server, &options()).expect("the pull should succeed after 429s");
    assert_eq!(server.target_hits.load(Ordering::SeqCst), 3);
}

#[test]
fn too_many_requests_for_good_says_how_long_to_wait() {
    let server = start(Fault::Status(429, usize::MAX));
    let mut opts = options();
    opts.retry.attempts = 2;
    let reference: ImageRef = format!("{}/{REPO}:latest", server.server.addr)
        .parse()
        .unwrap();
    let source = ImageSource::open(&reference, &opts).unwrap();
    let image = source.resolve(&Platform::host()).unwrap();
    let layer = image
        .layers()
        .unwrap()
        .into_iter()
        .find(|l| l.descriptor.digest().to_string() == server.target)
        .unwrap();
    let Err(err) = source.blob(&layer.descriptor, "layer") else {
        panic!("a permanent 429 succeeded")
    };
    assert!(
        matches!(
            err,
            Error::RateLimited {
                retry_after: Some(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("asks to wait 1 s"), "{err}");
}

#[test]
fn server_errors_three_times_then_success() {
    let server = start(Fault::Status(500, 3));
    let bytes = pull_target(&server, &options()).expect("the pull should succeed after 500s");
    assert_eq!(bytes, read_blob(&server.target));
    assert_eq!(server.target_hits.load(Ordering::SeqCst), 4);
}

#[test]
fn a_redirect_to_another_host_does_not_leak_the_authorization_header() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    // 127.0.0.2 is another host as far as HTTP is concerned (blob storage).
    let storage = Server::start("127.0.0.2", move |req, stream| {
        seen2.lock().unwrap().push(req.clone());
        let digest = req.path().trim_start_matches("/storage/");
        serve_blob(req, stream, &read_blob(digest));
    });
    let server = start(Fault::Redirect(storage.addr.clone()));
    let bytes = pull_target(&server, &options()).expect("the redirected pull should succeed");
    assert_eq!(bytes, read_blob(&server.target));
    let storage_requests = seen.lock().unwrap().clone();
    assert_eq!(storage_requests.len(), 1, "{storage_requests:?}");
    assert_eq!(
        storage_requests[0].header("authorization"),
        None,
        "credentials leaked to the other host"
    );
    let registry_saw_auth = server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.path().contains("/blobs/") && r.header("authorization").is_some());
    assert!(
        registry_saw_auth,
        "the registry itself should get the credentials"
    );
}

#[test]
fn a_warm_pull_asks_the_registry_only_for_the_tag_digest() {
    let server = start(Fault::Status(200, 0));
    let store = tempfile::tempdir().unwrap();
    let reference = format!("{}/{REPO}:latest", server.server.addr);
    let pull = || {
        crate::util::run_ok(
            crate::util::strata()
                .arg("--store")
                .arg(store.path())
                .args([
                    "--plain-http",
                    "--creds",
                    &format!("{USER}:{PASSWORD}"),
                    "--json",
                    "pull",
                    &reference,
                ]),
        )
    };
    let first: serde_json::Value = serde_json::from_slice(&pull()).unwrap();
    assert_eq!(first["extracted"], 4);
    server.log.lock().unwrap().clear();
    let second: serde_json::Value = serde_json::from_slice(&pull()).unwrap();
    assert_eq!(second["extracted"], 0);
    assert_eq!(second["digest"], first["digest"]);
    let asked: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    assert!(
        asked
            .iter()
            .all(|r| r.starts_with("HEAD ") || r == "GET /v2/"),
        "a warm pull fetched more than the tag's digest: {asked:?}"
    );
}
