//! Broken networks between strata and a real registry (a TCP proxy in the
//! harness breaks the connections): every fault ends in a complete, verified
//! pull or a clear error within a bounded time, never a hang or a bad layer.

use std::io::Read;
use std::time::{Duration, Instant};

use strata_registry::{ImageRef, ImageSource, Options, PlainHttp, Platform};

use crate::util::proxy::{Fault, Proxy};
use crate::util::registry::Registry;
use crate::util::{busybox_layout, fast_options, run_err, run_ok, strata};

fn registry() -> Registry {
    let registry = Registry::plain();
    registry.push_layout(busybox_layout(), "latest", "net/busybox:1");
    registry
}

/// Pulls every blob through the library; returns the bytes read.
fn pull_all(addr: &str, options: &Options) -> Result<u64, String> {
    let reference: ImageRef = format!("{addr}/net/busybox:1").parse().unwrap();
    let source = ImageSource::open(&reference, options).map_err(|e| e.to_string())?;
    let image = source
        .resolve(&Platform::host())
        .map_err(|e| e.to_string())?;
    let mut total = 0;
    for (i, layer) in image.layers().unwrap().iter().enumerate() {
        let mut stream = source
            .blob(&layer.descriptor, &format!("layer {i}"))
            .map_err(|e| e.to_string())?;
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).map_err(|e| e.to_string())?;
        total += sink.len() as u64;
    }
    Ok(total)
}

fn options() -> Options {
    Options {
        plain_http: PlainHttp::Always,
        ..fast_options()
    }
}

#[test]
fn resets_mid_blob_resume_and_the_pull_verifies() {
    let registry = registry();
    // The first three connections break after 300 kB; the big layer is 1.1 MB.
    let proxy = Proxy::start(&registry.addr, |i| {
        if i < 3 {
            Fault::ResetAfter(300_000)
        } else {
            Fault::None
        }
    });
    let bytes = pull_all(&proxy.addr, &options()).expect("the pull should resume and complete");
    assert!(bytes > 1_000_000);
    assert!(proxy.connections.load(std::sync::atomic::Ordering::SeqCst) > 1);
    // Through the CLI too, into a store.
    let tmp = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&registry.addr, |i| {
        if i < 2 {
            Fault::ResetAfter(500_000)
        } else {
            Fault::None
        }
    });
    run_ok(strata().arg("--store").arg(tmp.path()).args([
        "-q",
        "pull",
        &format!("{}/net/busybox:1", proxy.addr),
    ]));
    for entry in std::fs::read_dir(tmp.path().join("layers")).unwrap() {
        assert!(entry.unwrap().path().join("layer.json").is_file());
    }
}

#[test]
fn a_stalled_connection_times_out_and_resumes() {
    let registry = registry();
    let proxy = Proxy::start(&registry.addr, |i| {
        if i == 0 {
            Fault::StallAfter(400_000, Duration::from_secs(30))
        } else {
            Fault::None
        }
    });
    let mut opts = options();
    opts.stall_timeout = Duration::from_secs(2);
    let started = Instant::now();
    pull_all(&proxy.addr, &opts).expect("the stalled body should be resumed on a new connection");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_throttled_registry_still_completes() {
    let registry = registry();
    let proxy = Proxy::start(&registry.addr, |_| Fault::Throttle(2_000_000));
    pull_all(&proxy.addr, &options()).expect("a slow registry is still a registry");
}

#[test]
fn service_unavailable_is_retried_and_a_dead_registry_is_a_clear_error() {
    let registry = registry();
    let proxy = Proxy::start(&registry.addr, |i| {
        if i < 3 {
            Fault::Unavailable
        } else {
            Fault::None
        }
    });
    pull_all(&proxy.addr, &options()).expect("503s then success");

    // Always 503: a clear error after the retries, in bounded time.
    let dead = Proxy::start(&registry.addr, |_| Fault::Unavailable);
    let started = Instant::now();
    let err = pull_all(&dead.addr, &options()).expect_err("a registry that is always down");
    assert!(err.contains("503"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (code, stderr) = run_err(strata().args([
        "--store",
        "/nonexistent/x",
        "manifest",
        &format!("{}/net/busybox:1", dead.addr),
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("returned 503"), "{stderr}");
}
