//! Debian's `docker-registry` (the distribution registry), started on a free
//! loopback port with a generated config, seeded with `skopeo copy`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_tool, tls::TestTls, token::TokenServer};

/// How the registry authenticates.
pub enum Auth<'a> {
    None,
    /// htpasswd (bcrypt) with one user.
    Basic {
        user: &'a str,
        password: &'a str,
    },
    /// Bearer tokens from a [`TokenServer`].
    Token(&'a TokenServer),
}

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
    /// Credentials `skopeo` uses to seed it.
    push_creds: Option<String>,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// A plain-HTTP registry without auth.
    pub fn plain() -> Self {
        Self::start(Auth::None, None)
    }

    pub fn start(auth: Auth<'_>, tls: Option<&TestTls>) -> Self {
        Self::start_with(auth, tls, "")
    }

    /// A pull-through cache of `origin` (distribution's proxy mode), with
    /// the origin's credentials when it has them.
    pub fn pull_through(origin: &Registry, creds: Option<(&str, &str)>) -> Self {
        let creds = creds
            .map(|(u, p)| format!("  username: {u}\n  password: {p}\n"))
            .unwrap_or_default();
        Self::start_with(
            Auth::None,
            None,
            &format!("proxy:\n  remoteurl: http://{}\n{creds}", origin.addr),
        )
    }

    fn start_with(auth: Auth<'_>, tls: Option<&TestTls>, extra_yaml: &str) -> Self {
        require_tool("docker-registry", "docker-registry");
        require_tool("skopeo", "skopeo");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut push_creds = None;
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let hash = bcrypt::hash(password, 5).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                push_creds = Some(format!("{user}:{password}"));
                format!(
                    "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            Auth::Token(server) => {
                push_creds = Some("pusher:push-secret".into());
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.realm,
                    super::token::SERVICE,
                    super::token::ISSUER,
                    server.cert.display()
                )
            }
        };
        let tls_yaml = tls.map_or_else(String::new, |t| {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert_pem.display(),
                t.key_pem.display()
            )
        });
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls_yaml}{auth_yaml}{extra_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("registry.err")).unwrap(),
            ))
            .spawn()
            .expect("starting docker-registry");
        let mut registry = Self {
            child,
            addr,
            dir,
            push_creds,
            log,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", self.logs());
            }
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 20 s:\n{}",
            self.addr,
            self.logs()
        );
    }

    pub fn logs(&self) -> String {
        let err = std::fs::read_to_string(self.dir.path().join("registry.err")).unwrap_or_default();
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{out}{err}")
    }

    /// The blob files the registry holds (layers, configs and manifests
    /// alike: the distribution registry stores manifests as blobs too).
    pub fn blob_count(&self) -> usize {
        let root = self.dir.path().join("data/docker/registry/v2/blobs/sha256");
        let Ok(prefixes) = std::fs::read_dir(&root) else {
            return 0;
        };
        prefixes
            .flat_map(|p| std::fs::read_dir(p.unwrap().path()).unwrap())
            .filter(|b| b.as_ref().unwrap().path().join("data").is_file())
            .count()
    }

    /// The access log's request lines that contain `needle`.
    pub fn requests_with(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// `127.0.0.1:PORT/NAME`
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// Copies `source` (a skopeo reference such as `oci:DIR:TAG`) to `name`
    /// in this registry, every platform included.
    pub fn push(&self, source: &str, name: &str) {
        let mut cmd = super::skopeo();
        cmd.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = &self.push_creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}", self.reference(name)))
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {source} to {name} failed:\n{}\nregistry log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// Pushes the busybox test layout's tag.
    pub fn push_layout(&self, layout: &Path, tag: &str, name: &str) {
        self.push(&format!("oci:{}:{tag}", layout.display()), name);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
