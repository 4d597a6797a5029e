//! One file per subcommand (or per family of them).

pub mod bundle;
pub mod config;
pub mod flatten;
pub mod fsck;
pub mod images;
pub mod inspect;
pub mod manifest;
pub mod mount;
pub mod pull;
