//! Integration tests of `strata` against real parts: Debian's distribution
//! registry, images built with umoci and skopeo, `docker save` archives made
//! by Docker. One binary (ripgrep's layout); helpers live in `util`.
#![allow(
    unreachable_pub,
    reason = "a test binary exports nothing; pub marks the helpers' API"
)]

mod util;

mod commit;
mod hostile;
mod inspect;
mod layers;
mod limits;
mod local_sources;
mod mirrors;
mod network_faults;
mod registry_auth;
mod registry_faults;
mod registry_pull;
mod rootless;
mod rules;
mod stack;
mod store_integrity;
mod transfer;

#[cfg(feature = "internet-tests")]
mod internet;
