//! Registry authentication: the `WWW-Authenticate` challenge, where
//! credentials come from, and the token they are exchanged for.

mod challenge;
mod credentials;

pub(crate) use challenge::Challenge;
pub(crate) use credentials::lookup;
pub use credentials::{Credentials, auth_files};
