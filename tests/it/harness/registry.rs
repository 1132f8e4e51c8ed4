//! A real CNCF Distribution 2.8 registry (`/usr/bin/docker-registry`, Debian package
//! `docker-registry`) started on a free loopback port with its own temporary storage.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry; the process is killed when the guard is dropped.
pub struct Registry {
    child: Child,
    port: u16,
    storage: tempfile::TempDir,
    _config_dir: tempfile::TempDir,
    /// Storage shared with another registry (`RegistryOptions::storage`), used instead of `storage`.
    shared_storage: Option<PathBuf>,
}

/// Extra settings for `Registry::start_with`: TLS, mutual TLS, authentication, shared storage.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require client certificates issued by one of these CAs (`http.tls.clientcas`); needs `tls`.
    pub client_cas: Vec<PathBuf>,
    /// The body of the top-level `auth:` section, each line indented by two spaces, e.g.
    /// `  htpasswd:\n    realm: r\n    path: /x\n`.
    pub auth: Option<String>,
    /// Serve this storage directory (e.g. another registry's `storage()`) instead of a fresh one,
    /// so fixtures can be pushed through a plain registry and read through a guarded one.
    pub storage: Option<PathBuf>,
    /// More top-level configuration, appended as is (e.g. `"catalog:\n  maxentries: 2\n"`).
    pub extra: Option<String>,
}

/// Runs `docker-registry serve <config>`, its log going to `log`.
fn spawn(config: &std::path::Path, log: std::fs::File) -> std::io::Result<std::process::Child> {
    Command::new(BINARY)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

impl Registry {
    /// Start a fresh, empty registry (no auth, plain HTTP, deletes enabled).
    pub fn start() -> Registry {
        Self::start_with(&RegistryOptions::default())
    }

    /// Start a registry with TLS, authentication or shared storage as `opts` say.
    pub fn start_with(opts: &RegistryOptions) -> Registry {
        if !Path::new(BINARY).exists() {
            panic!("docker-registry not found: run scripts/test.sh, which installs it");
        }
        let mut last_err = String::new();
        // The port is picked by binding :0 and dropping the listener; another process may
        // take it before the registry binds it, so retry a few times on early exit.
        for _ in 0..5 {
            match Self::try_start(opts) {
                Ok(reg) => return reg,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start docker-registry: {last_err}");
    }

    fn try_start(opts: &RegistryOptions) -> Result<Registry, String> {
        let storage = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let root = opts.storage.clone().unwrap_or_else(|| storage.path().to_path_buf());
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{}\n  secret: oras-test-secret\n",
            root.display(),
            port
        );
        if let Some((cert, key)) = &opts.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            if !opts.client_cas.is_empty() {
                config.push_str("    clientcas:\n");
                for ca in &opts.client_cas {
                    config.push_str(&format!("      - {}\n", ca.display()));
                }
            }
        }
        if let Some(auth) = &opts.auth {
            config.push_str("auth:\n");
            config.push_str(auth);
            if !auth.ends_with('\n') {
                config.push('\n');
            }
        }
        if let Some(extra) = &opts.extra {
            config.push_str(extra);
        }
        let config_path = config_dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(config_dir.path().join("registry.log"))
            .map_err(|e| e.to_string())?;
        let child = spawn(&config_path, log).map_err(|e| format!("spawn {BINARY}: {e}"))?;
        let mut reg = Registry {
            child,
            port,
            storage,
            _config_dir: config_dir,
            shared_storage: opts.storage.clone(),
        };
        // A guarded registry does not answer a plain anonymous GET with 200: accept a 401, or
        // (TLS) a listening port.
        let guarded = opts.tls.is_some() || opts.auth.is_some();
        let http =
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://127.0.0.1:{port}/v2/");
        loop {
            if let Ok(Some(status)) = reg.child.try_wait() {
                let log = std::fs::read_to_string(reg._config_dir.path().join("registry.log"))
                    .unwrap_or_default();
                return Err(format!("docker-registry exited early ({status}): {log}"));
            }
            if opts.tls.is_some() {
                if std::net::TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_secs(1),
                )
                .is_ok()
                {
                    return Ok(reg);
                }
            } else if let Ok(resp) = http.get(&url).send() {
                let code = resp.status().as_u16();
                if code == 200 || (guarded && code == 401) {
                    return Ok(reg);
                }
            }
            if Instant::now() > deadline {
                let _ = reg.child.kill();
                return Err(format!("docker-registry on port {port} not ready after 60 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's storage root (filesystem driver).
    pub fn storage(&self) -> PathBuf {
        self.shared_storage.clone().unwrap_or_else(|| self.storage.path().to_path_buf())
    }

    /// The registry's own log (stderr), for diagnosing a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._config_dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Failure-safety helpers: the registry dies (as if killed) and comes back on the same port and
/// storage, so a client's references to it stay valid.
impl Registry {
    /// Kills the registry process (SIGKILL): connections are reset, new ones refused.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the registry if it runs, then starts it again with the same configuration (same
    /// port, same storage) and waits until it answers. Plain-HTTP registries only.
    pub fn restart(&mut self) {
        self.kill();
        let config_path = self._config_dir.path().join("config.yml");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self._config_dir.path().join("registry.log"))
            .expect("registry log");
        self.child = spawn(&config_path, log).expect("restart docker-registry");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{}/v2/", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("restarted docker-registry exited ({status}): {}", self.log());
            }
            if let Ok(resp) = http.get(&url).send() {
                if resp.status().as_u16() == 200 || resp.status().as_u16() == 401 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "restarted docker-registry on port {} not ready after 60 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
