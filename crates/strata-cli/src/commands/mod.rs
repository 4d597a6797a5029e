//! One file per subcommand.

pub mod config;
pub mod manifest;
