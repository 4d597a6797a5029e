//! The `strata` binary: everything lives in the library, so tests and the
//! `pull-and-mount` binary share one entry point.

use std::process::ExitCode;

fn main() -> ExitCode {
    strata_cli::main_with_args(std::env::args_os())
}
