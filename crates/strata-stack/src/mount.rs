//! Stacking layer directories: the mount plan (pure, testable without
//! root) and carrying it out with the kernel's mount API.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount,
};

use crate::{Error, Result};

/// The most lower layers one overlay stacks (the kernel's
/// `OVL_MAX_STACK`; checked: the 501st `lowerdir+` is refused).
pub const MAX_LOWER_LAYERS: usize = 500;

/// Options every writable mount names, whatever the kernel's defaults: a
/// renamed directory is then copied up whole (no `redirect` xattr pointing
/// into a lower layer) and a chmod copies the data up (no metadata-only
/// copy), so that every upper can be written as a layer by `strata commit`.
pub(crate) const WRITABLE_OPTIONS: [(&str, &str); 2] =
    [("redirect_dir", "off"), ("metacopy", "off")];

/// The same for a `userxattr` mount: there the kernel takes `redirect_dir=off`
/// as `follow` (with its default `redirect_always_follow`) and refuses it
/// beside `userxattr`; `nofollow` neither makes nor follows redirects.
pub(crate) const WRITABLE_USERXATTR_OPTIONS: [(&str, &str); 2] =
    [("redirect_dir", "nofollow"), ("metacopy", "off")];

fn writable_options(spec: &MountSpec) -> [(&'static str, &'static str); 2] {
    if spec.userxattr {
        WRITABLE_USERXATTR_OPTIONS
    } else {
        WRITABLE_OPTIONS
    }
}

/// What to mount where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The mountpoint.
    pub target: PathBuf,
    /// Layer directories, bottom first (as images list them).
    pub layers: Vec<PathBuf>,
    /// Upper and work directories for a writable mount.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// For kernels without `lowerdir+` (before 6.8): a directory holding short
    /// symlinks to the layers, one per entry of `layers`, in the same order,
    /// so that the whole `lowerdir=` string fits mount(2)'s one page.
    pub short_links: Option<(PathBuf, Vec<String>)>,
    /// Mount with `userxattr`: the overlay reads `user.overlay.*`, as it
    /// must inside a user namespace (a rootless store's layers carry those).
    pub userxattr: bool,
}

/// How a spec is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A single read-only layer: a read-only bind mount.
    Bind {
        /// The layer directory.
        source: PathBuf,
    },
    /// An overlay.
    Overlay {
        /// `lowerdir+` values in the order they are given: topmost first.
        lowers: Vec<PathBuf>,
        /// `upperdir` and `workdir`.
        upper: Option<(PathBuf, PathBuf)>,
    },
}

/// Decides how to mount a spec. Pure.
///
/// # Errors
/// [`Error::TooManyLayers`] past the kernel's limit; an empty image.
pub fn plan(spec: &MountSpec) -> Result<Plan> {
    if spec.layers.len() > MAX_LOWER_LAYERS {
        return Err(Error::TooManyLayers {
            layers: spec.layers.len(),
            limit: MAX_LOWER_LAYERS,
        });
    }
    match (spec.layers.as_slice(), &spec.upper) {
        ([], None) => Err(Error::Mount {
            path: spec.target.clone(),
            reason: "the image has no layers; nothing to mount read-only (use --rw for an empty writable rootfs)".into(),
            source: None,
        }),
        // Overlay needs two lowers without an upper.
        ([only], None) => Ok(Plan::Bind { source: only.clone() }),
        (layers, upper) => Ok(Plan::Overlay { lowers: layers.iter().rev().cloned().collect(), upper: upper.clone() }),
    }
}

fn mount_error(target: &Path, reason: impl Into<String>, source: impl Into<io::Error>) -> Error {
    Error::Mount {
        path: target.to_owned(),
        reason: reason.into(),
        source: Some(source.into()),
    }
}

/// Carries out [`plan`]`(spec)`.
///
/// # Errors
/// With a hint for the common causes: not root, no overlayfs, a store on a
/// filesystem that cannot hold an upper directory.
pub fn mount(spec: &MountSpec) -> Result<()> {
    let target = &spec.target;
    match plan(spec)? {
        Plan::Bind { source } => {
            rustix::mount::mount_bind(&source, target)
                .map_err(|e| mount_error(target, permission_hint(e, "bind mount"), e))?;
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "").map_err(
                |e| {
                    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
                    mount_error(target, "making the bind mount read-only", e)
                },
            )
        }
        Plan::Overlay { lowers, upper } => {
            let legacy = std::env::var_os("STRATA_MOUNT_API").is_some_and(|v| v == "legacy");
            if legacy {
                return mount_legacy(spec, upper.as_ref());
            }
            let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
                let reason = match e {
                    rustix::io::Errno::NODEV => "the kernel has no overlayfs (try `modprobe overlay`), or use `strata flatten`".to_owned(),
                    e => permission_hint(e, "overlay mount"),
                };
                mount_error(target, reason, e)
            })?;
            let set = |key: &str, value: &Path| {
                fsconfig_set_string(&fs, key, value).map_err(|e| {
                    mount_error(
                        target,
                        format!("overlay option {key}={} refused", value.display()),
                        e,
                    )
                })
            };
            for (i, lower) in lowers.iter().enumerate() {
                match fsconfig_set_string(&fs, "lowerdir+", lower) {
                    Ok(()) => {}
                    // Before Linux 6.8 there is no `lowerdir+`.
                    Err(rustix::io::Errno::INVAL) if i == 0 && spec.short_links.is_some() => {
                        return mount_legacy(spec, upper.as_ref());
                    }
                    Err(_) => set("lowerdir+", lower)?,
                }
            }
            if let Some((upper, work)) = &upper {
                set("upperdir", upper)?;
                set("workdir", work)?;
                for (key, value) in writable_options(spec) {
                    fsconfig_set_string(&fs, key, value).map_err(|e| {
                        mount_error(target, format!("overlay option {key}={value} refused"), e)
                    })?;
                }
            }
            if spec.userxattr {
                rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(|e| {
                    mount_error(
                        target,
                        "overlay option userxattr refused (Linux 5.11 or later needed)",
                        e,
                    )
                })?;
            }
            // One lower directory may serve many mounts at once.
            let _ = fsconfig_set_string(&fs, "index", "off");
            fsconfig_create(&fs).map_err(|e| {
                let reason = if upper.is_some() && e == rustix::io::Errno::INVAL {
                    "the kernel refused the overlay; the store's filesystem may not support an upper directory (overlayfs on overlayfs, or no xattrs): put --store on ext4, xfs or btrfs"
                } else {
                    "the kernel refused the overlay"
                };
                mount_error(target, reason, e)
            })?;
            let attrs = if upper.is_some() {
                MountAttrFlags::empty()
            } else {
                MountAttrFlags::MOUNT_ATTR_RDONLY
            };
            let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
                .map_err(|e| mount_error(target, "creating the mount", e))?;
            move_mount(
                &mnt,
                "",
                CWD,
                target,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| mount_error(target, "attaching the mount", e))
        }
    }
}

/// mount(2) with `lowerdir=a:b:c` of short names relative to the links
/// directory (the process changes into it for the call, as Docker's `l/`
/// links do): kernels before 6.8 take the options in one page.
fn mount_legacy(spec: &MountSpec, upper: Option<&(PathBuf, PathBuf)>) -> Result<()> {
    let target = &spec.target;
    let Some((dir, names)) = &spec.short_links else {
        return Err(Error::Mount {
            path: target.clone(),
            reason: "this kernel has no `lowerdir+` and no short layer links were given".into(),
            source: None,
        });
    };
    let mut data = String::from("lowerdir=");
    data.push_str(&names.iter().rev().cloned().collect::<Vec<_>>().join(":"));
    if let Some((up, work)) = upper {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            up.display(),
            work.display()
        ));
        for (key, value) in writable_options(spec) {
            data.push_str(&format!(",{key}={value}"));
        }
    }
    data.push_str(",index=off");
    if spec.userxattr {
        data.push_str(",userxattr");
    }
    const PAGE: usize = 4096;
    if data.len() >= PAGE {
        return Err(Error::Mount {
            path: target.clone(),
            reason: format!(
                "{} layers do not fit mount(2)'s one page of options on this kernel (Linux < 6.8 has no `lowerdir+`); use `strata flatten`",
                names.len()
            ),
            source: None,
        });
    }
    let target_abs = std::path::absolute(target).map_err(|e| Error::io("resolving", target, e))?;
    let previous =
        std::env::current_dir().map_err(|e| Error::io("reading the working directory", ".", e))?;
    std::env::set_current_dir(dir).map_err(|e| Error::io("entering", dir, e))?;
    let flags = if upper.is_some() {
        MountFlags::empty()
    } else {
        MountFlags::RDONLY
    };
    let data = std::ffi::CString::new(data).expect("paths hold no NUL");
    let result = rustix::mount::mount("overlay", &target_abs, "overlay", flags, data.as_c_str());
    let _ = std::env::set_current_dir(previous);
    result.map_err(|e| mount_error(target, permission_hint(e, "overlay mount (mount(2))"), e))
}

fn permission_hint(e: rustix::io::Errno, what: &str) -> String {
    if e == rustix::io::Errno::PERM {
        format!(
            "a {what} needs root (CAP_SYS_ADMIN); run as root, or use `strata flatten` which needs no mount"
        )
    } else {
        format!("{what} failed")
    }
}

/// Unmounts `target`.
///
/// # Errors
/// When the kernel refuses (busy: a process has its cwd or a file in it).
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::empty()).map_err(|e| {
        let reason = if e == rustix::io::Errno::BUSY {
            "the mount is busy (a process uses a file or its working directory in it)"
        } else {
            "unmounting failed"
        };
        mount_error(target, reason, e)
    })
}

/// Whether `path` is a mountpoint (per `/proc/self/mountinfo`).
///
/// # Errors
/// When mountinfo cannot be read.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading", "/proc/self/mountinfo", e))?;
    let Ok(path) = std::fs::canonicalize(path) else {
        return Ok(false);
    };
    Ok(info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| Path::new(&unescape(mp)) == path)
    }))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(n) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("x"), 8)
        {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, rw: bool) -> MountSpec {
        MountSpec {
            target: "/mnt".into(),
            layers: (0..n).map(|i| PathBuf::from(format!("/s/l{i}"))).collect(),
            upper: rw.then(|| ("/s/u".into(), "/s/w".into())),
            short_links: None,
            userxattr: false,
        }
    }

    #[test]
    fn one_layer_is_a_bind_mount_and_more_are_an_overlay_topmost_first() {
        assert_eq!(
            plan(&spec(1, false)).unwrap(),
            Plan::Bind {
                source: "/s/l0".into()
            }
        );
        assert_eq!(
            plan(&spec(3, false)).unwrap(),
            Plan::Overlay {
                lowers: vec!["/s/l2".into(), "/s/l1".into(), "/s/l0".into()],
                upper: None
            }
        );
        let Plan::Overlay { lowers, upper } = plan(&spec(1, true)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (lowers.len(), upper.is_some()),
            (1, true),
            "--rw on one layer is an overlay with an upper"
        );
    }

    #[test]
    fn the_kernel_limit_is_named() {
        assert!(plan(&spec(500, false)).is_ok());
        let err = plan(&spec(501, false)).unwrap_err().to_string();
        assert_eq!(
            err,
            "the image has 501 layers; overlayfs stacks at most 500 lower layers"
        );
        assert!(plan(&spec(0, false)).is_err());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b\011c\\"), "/a b\tc\\\\");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
