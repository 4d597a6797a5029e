//! Platform choice from an image index (`--platform os/arch[/variant]`).

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::{Error, Result};

/// An `os/arch[/variant]` triple, spelled as in image indexes (Go's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, …
    pub architecture: String,
    /// `v7`, `v8`, … when the architecture has variants.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine strata runs on.
    #[must_use]
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Whether an index entry's platform satisfies this one. A wanted variant
    /// must match (arm64's implicit `v8` counts); no wanted variant accepts any.
    #[must_use]
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        match (&self.variant, variant) {
            (None, _) => true,
            (Some(w), Some(v)) => w == v,
            (Some(w), None) => self.architecture == "arm64" && w == "v8",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let parts: Vec<&str> = input.split('/').collect();
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(Error::InvalidPlatform {
                input: input.to_owned(),
            }),
        }
    }
}

fn describe(d: &Descriptor) -> Option<String> {
    let p = d.platform().as_ref()?;
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant() {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

/// Picks the manifest for `wanted` from an index, as Docker does: the first
/// entry whose platform matches (attestation entries, `unknown/unknown`, never
/// match).
///
/// # Errors
/// [`Error::NoMatchingPlatform`] listing what the index offers.
pub(crate) fn choose<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    index
        .manifests()
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                wanted.matches(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref(),
                )
            })
        })
        .ok_or_else(|| Error::NoMatchingPlatform {
            reference: reference.to_owned(),
            wanted: wanted.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(describe)
                .filter(|p| p != "unknown/unknown")
                .collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[&str]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let parts: Vec<&str> = p.split('/').collect();
                let mut plat = serde_json::json!({"os": parts[0], "architecture": parts[1]});
                if let Some(v) = parts.get(2) {
                    plat["variant"] = (*v).into();
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{i:064x}"),
                    "size": 1,
                    "platform": plat,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    #[test]
    fn parse_and_display() {
        for p in [
            "linux/amd64",
            "linux/arm64/v8",
            "windows/amd64",
            "linux/arm/v7",
        ] {
            assert_eq!(p.parse::<Platform>().unwrap().to_string(), p);
        }
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            let err = bad.parse::<Platform>().unwrap_err().to_string();
            assert!(err.contains("expected os/arch[/variant]"), "{err}");
        }
    }

    #[test]
    fn choose_by_platform() {
        let idx = index(&[
            "linux/amd64",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
            "unknown/unknown",
        ]);
        let pick = |p: &str| {
            choose(&idx, &p.parse().unwrap(), "img").map(|d| d.digest().digest()[60..].to_owned())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "0000");
        assert_eq!(pick("linux/arm/v7").unwrap(), "0002");
        assert_eq!(
            pick("linux/arm").unwrap(),
            "0001",
            "no variant asked: the first arm"
        );
        assert_eq!(pick("linux/arm64").unwrap(), "0003");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "0003");
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert_eq!(
            err,
            "img has no image for platform linux/s390x; it has: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8"
        );
    }

    #[test]
    fn arm64_without_variant_matches_v8() {
        let idx = index(&["linux/amd64", "linux/arm64"]);
        let d = choose(&idx, &"linux/arm64/v8".parse().unwrap(), "img").unwrap();
        assert!(d.digest().digest().ends_with('1'));
    }

    #[test]
    fn host_is_well_formed() {
        let h = Platform::host();
        assert_eq!(h.to_string().parse::<Platform>().unwrap(), h);
    }
}
