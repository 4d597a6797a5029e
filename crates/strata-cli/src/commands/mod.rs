//! One file per subcommand (or per family of them).

pub mod bundle;
pub mod commit;
pub mod config;
pub mod copy;
pub mod diff;
pub mod flatten;
pub mod format;
pub mod fsck;
pub mod images;
pub mod inspect;
pub mod ls;
pub mod manifest;
pub mod mount;
pub mod pull;
pub mod push;
pub mod unshare;
pub mod waste;
pub mod which;
