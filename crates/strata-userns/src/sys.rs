//! The one call this crate makes that rustix marks unsafe.

use rustix::thread::UnshareFlags;

/// Moves the calling process into a new user namespace and a new mount
/// namespace (`unshare(CLONE_NEWUSER | CLONE_NEWNS)`).
///
/// The kernel refuses this in a multi-threaded process, so it is only
/// called by the holder at the start of `main`, before any thread exists.
pub(crate) fn unshare_user_and_mount() -> std::io::Result<()> {
    // SAFETY: rustix marks `unshare` unsafe because `CLONE_FILES` can leave
    // threads with diverging descriptor tables. These flags do not unshare
    // the descriptor table, and the process has one thread here.
    #[allow(
        unsafe_code,
        reason = "see the SAFETY comment: no CLONE_FILES, one thread"
    )]
    unsafe {
        rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS)?;
    }
    Ok(())
}
