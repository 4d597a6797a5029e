//! Privilege, decided once, and strata's user namespace.
//!
//! [`Privilege::probe`] looks at the process once (its euid, the user
//! namespace it is in, the user's subuid and subgid ranges) and the result
//! is passed down: the CLI turns it into strata-layer's options (who owns
//! extracted files, whether devices are made, which overlay xattr namespace)
//! and strata-stack's mount spec (`userxattr`). Nothing below asks the euid.
//!
//! An ordinary user works inside strata's own user and mount namespace,
//! as podman does: [`Namespace::enter`] finds or starts a small *holder*
//! process for the store (mapped with `newuidmap`/`newgidmap` from the
//! user's ranges, or to the user alone without one) and moves the calling
//! process into its namespaces with `setns`. Mounts made there live as long
//! as the holder does; `strata unshare` enters the same namespaces.
//!
//! It knows nothing of images, layers or stores beyond the directory it is
//! given for its record.

mod error;
mod holder;
mod preflight;
mod privilege;
mod subid;
mod sys;

pub use error::{Error, Result};
pub use holder::{Holder, Namespace, serve_if_holder};
pub use preflight::check_user_xattrs;
pub use privilege::{Mapping, Privilege, User};
pub use subid::SubIds;
