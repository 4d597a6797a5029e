//! `pull-and-mount IMAGE DIR`: the same as `strata pull-and-mount IMAGE DIR`.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    // `pull-and-mount [options] IMAGE DIR` → `strata pull-and-mount [options] IMAGE DIR`
    args.splice(
        0..1,
        [OsString::from("strata"), OsString::from("pull-and-mount")],
    );
    strata_cli::main_with_args(args)
}
