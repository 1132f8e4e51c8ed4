//! Shared helpers of the end-to-end tests: registries, a test client, fixtures, hand-made
//! layouts, and running the `oras` binary.
#![allow(dead_code)]

pub mod client;
pub mod companion;
pub mod evil_proxy;
pub mod fake_referrers;
pub mod fault_proxy;
pub mod fault_proxy_safety;
pub mod fixtures;
pub mod layout;
pub mod measured_run;
pub mod registry;
pub mod tls;
pub mod token_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use client::Client;
pub use registry::Registry;

/// How long one `oras` run may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The result of one `oras` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout and stderr together (for "the output mentions X" checks).
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout_str(), self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "oras {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            truncate(&self.stdout_str(), 4000),
            truncate(&self.stderr, 4000)
        )
    }

    /// Exit code 0.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.describe());
        assert_no_panic(self);
        self
    }

    /// A clean failure: exit `code`, no panic, exactly one error line on stderr, and
    /// `keyword` (case-insensitive) in stderr.
    #[track_caller]
    pub fn fails(&self, code: i32, keyword: &str) -> &Run {
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{}", self.describe());
        assert_no_panic(self);
        let error_lines: Vec<&str> = self.stderr.lines().filter(|l| l.trim_start().to_ascii_lowercase().starts_with("error")).collect();
        assert_eq!(error_lines.len(), 1, "expected exactly one error line on stderr:\n{}", self.describe());
        assert!(self.stderr.to_lowercase().contains(&keyword.to_lowercase()), "expected {keyword:?} in stderr:\n{}", self.describe());
        self
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [{} bytes cut]", &s[..end], s.len() - end)
    }
}

#[track_caller]
fn assert_no_panic(run: &Run) {
    assert!(!run.stderr.contains("panicked") && !run.stdout_str().contains("panicked"), "oras panicked:\n{}", run.describe());
}

/// An empty docker config directory, so that no credentials of the machine are used.
fn docker_config_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("oras-test-docker-config").tempdir().unwrap().keep();
        std::fs::write(dir.join("config.json"), "{\"auths\":{}}").unwrap();
        dir
    })
}

/// The `oras` binary as every test runs it: an empty docker config, no proxies from the environment,
/// no colour. The caller adds stdin, stdout, stderr and any other environment.
pub fn oras_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oras"));
    cmd.args(args)
        .env("DOCKER_CONFIG", docker_config_dir())
        .env("NO_COLOR", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .env("NO_PROXY", "*");
    cmd
}

/// Run `oras <args>` with no stdin.
pub fn oras(args: &[&str]) -> Run {
    oras_with_stdin(args, None)
}

/// Run `oras <args>`, feeding `stdin` if given. Fails the test after a timeout.
pub fn oras_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Run {
    oras_env(args, stdin, &[])
}

/// Run `oras <args>` with `env` set on top of the defaults (an empty docker config, no
/// proxies): e.g. `PATH` with a credential helper, `DOCKER_CONFIG`, `HTTPS_PROXY`/`NO_PROXY`.
pub fn oras_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut cmd = oras_command(args);
    cmd.envs(env.iter().copied())
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()));
    let stdin_file;
    if let Some(bytes) = stdin {
        let p = out_dir.path().join("stdin");
        std::fs::write(&p, bytes).unwrap();
        stdin_file = std::fs::File::open(&p).unwrap();
        cmd.stdin(Stdio::from(stdin_file));
    } else {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd.spawn().expect("spawn oras");
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(status.is_some(), "oras timed out after {RUN_TIMEOUT:?}:\n{}", run.describe());
    if std::env::var_os("ORAS_TEST_ECHO").is_some() {
        // Debugging aid: `ORAS_TEST_ECHO=1 cargo test -- --nocapture` shows every run.
        eprintln!("{}", run.describe());
    }
    run
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("oras-e2e").tempdir().unwrap()
}

/// `path` as &str.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Does `path` look like a complete layout (a directory with index.json, or a tar with an
/// index.json entry)?
pub fn looks_complete(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("index.json").exists();
    }
    if let Ok(bytes) = std::fs::read(path) {
        let mut archive = tar::Archive::new(&bytes[..]);
        if let Ok(entries) = archive.entries() {
            for e in entries.flatten() {
                if e.path().map(|p| p.to_string_lossy().trim_start_matches("./") == "index.json").unwrap_or(false) {
                    return true;
                }
            }
        }
    }
    false
}

/// Referrer digests of `subject` in a registry: the referrers API where the registry has it,
/// the `sha256-<hex>` tag schema otherwise.
pub fn referrers_in(client: &Client, repo: &str, subject: &str) -> Vec<String> {
    if let Some(index) = client.referrers_api(repo, subject, None) {
        return index["manifests"]
            .as_array()
            .map(|m| m.iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
    }
    client.tag_schema_referrers(repo, subject)
}

/// Check that `dst_repo` in `dst` holds exactly what `fx` describes: the same tags pointing
/// at the same digests, every manifest byte-identical by digest (with its media type), every
/// blob, and (with `referrers`) every referrer findable from its subject; without
/// `referrers`, no referrer manifest and no `sha256-` tag.
#[track_caller]
pub fn assert_repo_matches(dst: &Client, dst_repo: &str, fx: &fixtures::RepoFixture, referrers: bool) {
    let mut tags = dst.user_tags(dst_repo);
    tags.sort();
    let expected: Vec<String> = fx.tags.keys().cloned().collect();
    assert_eq!(tags, expected, "tags of {dst_repo}");
    for (tag, digest) in &fx.tags {
        let got = dst.get_manifest(dst_repo, tag).unwrap_or_else(|| panic!("{dst_repo}:{tag} missing"));
        assert_eq!(&got.digest, digest, "digest of {dst_repo}:{tag}");
    }
    let tagged = fx.tagged_manifests();
    let referrer_manifests = fx.referrer_manifests();
    for (digest, pushed) in &fx.manifests {
        let wanted = referrers || tagged.contains(digest);
        let got = dst.get_manifest(dst_repo, digest);
        if !wanted {
            assert!(got.is_none(), "referrer {digest} must not be in {dst_repo} (referrers excluded)");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("manifest {digest} missing from {dst_repo}"));
        assert!(got.bytes == pushed.bytes, "manifest {digest} in {dst_repo} is not byte-identical");
        assert_eq!(got.media_type.split(';').next().unwrap().trim(), pushed.media_type, "media type of {digest} in {dst_repo}");
    }
    // Blobs: every blob of every wanted manifest.
    for (digest, pushed) in &fx.manifests {
        if !(referrers || tagged.contains(digest)) {
            continue;
        }
        let v = pushed.json();
        let mut blobs = Vec::new();
        if v["config"].is_object() {
            blobs.push(v["config"]["digest"].as_str().unwrap().to_string());
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for b in blobs {
            let got = dst.get_blob(dst_repo, &b).unwrap_or_else(|| panic!("blob {b} (of {digest}) missing from {dst_repo}"));
            assert!(got == fx.blobs[&b], "blob {b} in {dst_repo} differs");
        }
    }
    if referrers {
        for (subject, refs) in &fx.referrers {
            let mut found = referrers_in(dst, dst_repo, subject);
            found.sort();
            for r in refs {
                assert!(found.contains(&r.digest), "referrer {} of {subject} not findable in {dst_repo} (found {found:?})", r.digest);
            }
        }
    } else {
        let schema: Vec<String> = dst.list_tags(dst_repo).into_iter().filter(|t| client::is_tag_schema_tag(t)).collect();
        assert!(schema.is_empty(), "referrers excluded but {dst_repo} has {schema:?}");
        for r in &referrer_manifests {
            assert!(!dst.manifest_exists(dst_repo, r), "referrer {r} present in {dst_repo}");
        }
    }
}

/// `oras backup --no-tty <args>`
pub fn backup(args: &[&str]) -> Run {
    let mut all = vec!["backup", "--no-tty"];
    all.extend_from_slice(args);
    oras(&all)
}

/// `oras restore --no-tty <args>`
pub fn restore(args: &[&str]) -> Run {
    let mut all = vec!["restore", "--no-tty"];
    all.extend_from_slice(args);
    oras(&all)
}

/// Check a backup of one or more repositories against the fixtures: every manifest and blob
/// stored byte-identical under its digest, every blob file hashing to its name, one index
/// entry per tag with the ref name rules of format.md, one entry without ref name per
/// referrer manifest, no `sha256-` tag stored as a tag.
/// `repos` are (full `<registry>/<repo>` name, fixture); `multi` selects full ref names.
#[track_caller]
pub fn assert_layout_holds(layout: &layout::Layout, repos: &[(&str, &fixtures::RepoFixture)], referrers: bool) {
    use layout::{CONTAINERD_NAME, REF_NAME};
    let multi = repos.len() > 1;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(layout.files.get("oci-layout").expect("oci-layout file")).unwrap()
            ["imageLayoutVersion"],
        "1.0.0"
    );
    for d in layout.blob_digests() {
        let bytes = layout.blob(&d).unwrap();
        assert_eq!(client::sha256_digest(bytes), d, "blob file {d} does not hash to its name");
    }
    let entries = layout.entries();
    for (full, fx) in repos {
        let wanted: std::collections::BTreeSet<String> =
            if referrers { fx.manifests.keys().cloned().collect() } else { fx.tagged_manifests() };
        for d in &wanted {
            let got = layout.blob(d).unwrap_or_else(|| panic!("manifest {d} of {full} missing from the backup"));
            assert!(*got == fx.manifests[d].bytes, "manifest {d} re-serialised in the backup");
        }
        for (d, bytes) in &fx.blobs {
            if referrers {
                let got = layout.blob(d).unwrap_or_else(|| panic!("blob {d} of {full} missing from the backup"));
                assert!(got == bytes, "blob {d} differs in the backup");
            }
        }
        for (tag, digest) in &fx.tags {
            let want_ref = if multi { format!("{full}:{tag}") } else { tag.clone() };
            let e = entries
                .iter()
                .find(|e| e["annotations"][REF_NAME] == want_ref.as_str())
                .unwrap_or_else(|| panic!("no index.json entry with ref name {want_ref}: {entries:#?}"));
            assert_eq!(e["digest"], digest.as_str(), "digest of {want_ref}");
            assert_eq!(e["mediaType"], fx.manifests[digest].media_type.as_str(), "mediaType of {want_ref}");
            assert_eq!(e["size"], fx.manifests[digest].bytes.len(), "size of {want_ref}");
            assert_eq!(e["annotations"][CONTAINERD_NAME], format!("{full}:{tag}").as_str(), "containerd name of {want_ref}");
        }
        if referrers {
            for r in fx.referrer_manifests() {
                let e = entries
                    .iter()
                    .find(|e| e["digest"] == r.as_str())
                    .unwrap_or_else(|| panic!("referrer {r} of {full} not listed in index.json"));
                assert!(e["annotations"][REF_NAME].is_null(), "referrer entry {r} must have no ref name: {e}");
            }
        } else {
            for r in fx.referrer_manifests() {
                assert!(layout.blob(&r).is_none(), "referrer {r} in a backup without referrers");
            }
        }
    }
    for name in layout.ref_names() {
        let tag = name.rsplit(':').next().unwrap();
        assert!(!client::is_tag_schema_tag(tag), "tag schema tag stored as a tag: {name}");
    }
}

/// Check the referrers tag schema of `repo` for every subject of `fx`: the tag
/// `sha256-<hex>` is an OCI index whose descriptors carry each referrer's mediaType, digest,
/// size, artifactType and annotations.
#[track_caller]
pub fn assert_tag_schema_descriptors(dst: &Client, repo: &str, fx: &fixtures::RepoFixture) {
    for (subject, refs) in &fx.referrers {
        let index = dst
            .get_manifest(repo, &client::tag_schema_tag(subject))
            .unwrap_or_else(|| panic!("no tag schema index for {subject} in {repo}"));
        assert_eq!(index.media_type.split(';').next().unwrap().trim(), client::OCI_INDEX, "tag schema index media type");
        let v = index.json();
        let listed = v["manifests"].as_array().expect("manifests");
        for r in refs {
            let e = listed
                .iter()
                .find(|e| e["digest"] == r.digest.as_str())
                .unwrap_or_else(|| panic!("{} not in the tag schema index of {subject}", r.digest));
            assert_eq!(e["mediaType"], r.media_type.as_str(), "mediaType of {}", r.digest);
            assert_eq!(e["size"], r.size, "size of {}", r.digest);
            assert_eq!(e["artifactType"], r.artifact_type.as_deref().unwrap_or_default(), "artifactType of {}", r.digest);
            assert_eq!(e["annotations"], serde_json::json!(r.annotations), "annotations of {}", r.digest);
        }
    }
}
