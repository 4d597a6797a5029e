//! Options shared by every command, and how they become library options.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use strata_registry::hosts::HostConfig;
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

    /// containerd hosts directory (DIR/REGISTRY/hosts.toml) naming mirrors; default: /etc/containerd/certs.d when it exists; '' for none. Mirrors are also read from containers-registries.conf ($CONTAINERS_REGISTRIES_CONF, ~/.config/containers, /etc/containers)
    #[arg(long, value_name = "DIR", env = "STRATA_HOSTS_DIR", global = true)]
    pub hosts_dir: Option<String>,

    /// Seconds a mirror may take to connect or answer before it is passed over for the rest of the pull
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, global = true)]
    pub mirror_timeout: f64,
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
            hosts: HostConfig::usual(self.hosts_dir.as_deref().map(std::path::Path::new))?
                .with_mirror_timeout(Duration::from_secs_f64(self.mirror_timeout.max(0.1))),
            ..Options::default()
        })
    }

    /// The platform asked for, if any.
    pub fn platform(&self) -> Result<Option<Platform>> {
        Ok(self.platform.as_deref().map(str::parse).transpose()?)
    }
}
