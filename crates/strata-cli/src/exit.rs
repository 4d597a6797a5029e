//! Exit codes, one place, documented in `--help`.

use strata_registry::Error as RegistryError;

/// Success.
pub const OK: u8 = 0;
/// Any failure not listed below.
pub const FAILURE: u8 = 1;
/// The command line is wrong (clap's own code).
pub const USAGE: u8 = 2;
/// The image, tag or platform does not exist, or the registry refused access.
pub const NOT_FOUND: u8 = 3;
/// Bytes did not match their digest or size: the source is corrupt or hostile.
pub const INTEGRITY: u8 = 4;

/// Chooses the exit code for an error chain from its typed causes.
#[must_use]
pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(strata_layer::Error::DiffIdMismatch { .. }) =
            cause.downcast_ref::<strata_layer::Error>()
        {
            return INTEGRITY;
        }
        if let Some(strata_stack::Error::UnknownImage { .. }) =
            cause.downcast_ref::<strata_stack::Error>()
        {
            return NOT_FOUND;
        }
        let registry = cause.downcast_ref::<RegistryError>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(strata_registry::integrity_error)
        });
        match registry {
            Some(e) if e.is_integrity() => return INTEGRITY,
            Some(
                RegistryError::NotFound { .. }
                | RegistryError::Unauthorized { .. }
                | RegistryError::Blocked { .. }
                | RegistryError::NoMatchingPlatform { .. },
            ) => return NOT_FOUND,
            Some(
                RegistryError::InvalidReference { .. } | RegistryError::InvalidPlatform { .. },
            ) => return USAGE,
            _ => {}
        }
    }
    FAILURE
}
