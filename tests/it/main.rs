//! Integration tests of the `strata` binary against real parts.
