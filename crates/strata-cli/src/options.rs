//! Options shared by every command, and how they become library options.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use strata_registry::{Credentials, Options, PlainHttp, Platform};

/// How to reach registries (every command that reads an image takes these).
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// Platform to pick from a multi-platform image [default: the host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", global = true)]
    pub platform: Option<String>,

    /// Speak plain HTTP to the registry (default only for loopback registries that fail HTTPS)
    #[arg(long, global = true)]
    pub plain_http: bool,

    /// Trust this PEM CA bundle in addition to the system's (repeatable)
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Vec<PathBuf>,

    /// Accept any TLS certificate (dangerous; for testing)
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Credentials for the registry; default: $REGISTRY_AUTH_FILE, containers' auth.json, ~/.docker/config.json
    #[arg(
        long,
        value_name = "USER[:PASSWORD]",
        env = "STRATA_CREDS",
        hide_env_values = true,
        global = true
    )]
    pub creds: Option<String>,

    /// Fetch foreign (non-distributable) layers from the URLs in their descriptors
    #[arg(long, global = true)]
    pub allow_foreign_layers: bool,
}

impl RegistryArgs {
    /// The library options these flags describe.
    pub fn options(&self) -> Result<Options> {
        Ok(Options {
            plain_http: if self.plain_http {
                PlainHttp::Always
            } else {
                PlainHttp::Auto
            },
            ca_files: self.ca_file.clone(),
            insecure: self.insecure,
            creds: self
                .creds
                .as_deref()
                .map(Credentials::from_flag)
                .transpose()?,
            foreign_urls: self.allow_foreign_layers,
            ..Options::default()
        })
    }

    /// The platform asked for, if any.
    pub fn platform(&self) -> Result<Option<Platform>> {
        Ok(self.platform.as_deref().map(str::parse).transpose()?)
    }
}
