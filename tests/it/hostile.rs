//! Hostile and damaged backups: every case is refused by `oras restore` (from a file, and from
//! standard input where that applies) and by `oras verify`, with exit code 1, exactly one
//! `Error:` line naming the problem, no panic, and nothing pushed to the target registry.
//! Nothing is ever read from outside the backup or written outside it, and memory stays small
//! whatever sizes the input claims.

use crate::harness;

use harness::client::{sha256_digest, OCI_INDEX, OCI_MANIFEST};
use harness::fixtures::{Desc, OCI_LAYER_GZIP};
use harness::layout::{LayoutBuilder, REF_NAME};
use harness::{s, tempdir, Client, Failures, Oras, Registry, Run};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TB: u64 = 1 << 40;

// ---------------------------------------------------------------------------------------------
// The valid backup every case starts from, and ways to damage it.

/// One image (config + 2 layers) tagged `v1`, as a list of layout files.
#[derive(Clone)]
struct Base {
    /// (name, bytes) of every file: oci-layout, index.json, blobs/sha256/...
    files: Vec<(String, Vec<u8>)>,
    manifest: Desc,
    manifest_bytes: Vec<u8>,
    layer: Desc,
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap())
}

impl Base {
    fn new() -> Base {
        let mut b = LayoutBuilder::default();
        let (manifest, manifest_bytes) = b.add_image("hostile");
        b.add_entry(&manifest, &[(REF_NAME, "v1")]);
        let m: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let desc_of = |v: &Value| Desc {
            media_type: v["mediaType"].as_str().unwrap().to_string(),
            digest: v["digest"].as_str().unwrap().to_string(),
            size: v["size"].as_u64().unwrap() as usize,
            artifact_type: None,
            annotations: Default::default(),
        };
        let layer = desc_of(&m["layers"][0]);
        let mut files = vec![
            ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json".to_string(), b.index_json()),
        ];
        for (d, bytes) in &b.blobs {
            files.push((blob_name(d), bytes.clone()));
        }
        Base { files, manifest, manifest_bytes, layer }
    }

    fn get(&self, name: &str) -> Option<&Vec<u8>> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, b)| b)
    }

    fn set(&mut self, name: &str, bytes: Vec<u8>) {
        match self.files.iter_mut().find(|(n, _)| n == name) {
            Some(f) => f.1 = bytes,
            None => self.files.push((name.to_string(), bytes)),
        }
    }

    fn remove(&mut self, name: &str) {
        self.files.retain(|(n, _)| n != name);
    }

    /// index.json with one entry per given descriptor (JSON values), tag v1 on the first.
    fn set_index(&mut self, entries: Vec<Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.set("index.json", serde_json::to_vec(&index).unwrap());
    }

    /// Replaces the manifest with `value` (stored under its own digest) and points the tag at it.
    fn replace_manifest(&mut self, value: &Value) -> String {
        self.replace_manifest_bytes(serde_json::to_vec(value).unwrap())
    }

    fn replace_manifest_bytes(&mut self, bytes: Vec<u8>) -> String {
        let old = blob_name(&self.manifest.digest);
        self.remove(&old);
        let digest = sha256_digest(&bytes);
        let entry = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": bytes.len(), "annotations": {REF_NAME: "v1"}});
        self.set(&blob_name(&digest), bytes);
        self.set_index(vec![entry]);
        digest
    }

    fn manifest_json(&self) -> Value {
        serde_json::from_slice(&self.manifest_bytes).unwrap()
    }

    fn write_dir(&self, dir: &Path) {
        for (name, bytes) in &self.files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    }

    /// The files in the order this tool writes them: oci-layout, index.json, manifests, blobs.
    fn ordered(&self) -> Vec<(String, Vec<u8>)> {
        let rank = |(name, bytes): &(String, Vec<u8>)| match name.as_str() {
            "oci-layout" => 0,
            "index.json" => 1,
            _ if bytes.windows(13).any(|w| w == b"schemaVersion") => 2,
            _ => 3,
        };
        let mut files = self.files.clone();
        files.sort_by_key(|f| (rank(f), f.0.clone()));
        files
    }

    /// The files as tar bytes.
    fn tar(&self) -> Vec<u8> {
        let mut t = RawTar::default();
        for (name, bytes) in self.ordered() {
            t.file(&name, &bytes);
        }
        t.finish()
    }
}

/// A tar written header by header, so that any field can lie.
#[derive(Default)]
struct RawTar {
    out: Vec<u8>,
}

impl RawTar {
    /// One entry: the name goes into the ustar name field verbatim (absolute, `..`, anything);
    /// the header claims `claimed` bytes; `data` is what follows (padded to a block).
    fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        claimed: u64,
        data: &[u8],
        link: Option<&str>,
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            assert!(name.len() <= 100, "name too long for a raw ustar name");
            u.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                u.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(kind);
        h.set_size(claimed);
        if kind == tar::EntryType::Char || kind == tar::EntryType::Block {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular entry cut short: the header claims `claimed` bytes, only `data` follows, and the
    /// archive ends there (no padding, no end blocks).
    fn cut(&mut self, name: &str, claimed: u64, data: &[u8]) -> Vec<u8> {
        self.entry(name, tar::EntryType::Regular, claimed, &[], None);
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(data);
        out
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, data.len() as u64, data, None)
    }

    /// A PAX extended header (type `x`) with the given records, applying to the next entry.
    fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            // The length prefix counts itself.
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        self.entry("PaxHeaders/x", tar::EntryType::XHeader, data.len() as u64, &data, None)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// gzip and zip, written by hand (stored, uncompressed) so no external tool is needed.

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A valid gzip member holding `data` in stored deflate blocks.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let chunks: Vec<&[u8]> =
        if data.is_empty() { vec![&[][..]] } else { data.chunks(65535).collect() };
    for (i, c) in chunks.iter().enumerate() {
        out.push(if i + 1 == chunks.len() { 1 } else { 0 });
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A valid zip archive with one stored file.
fn zip(name: &str, data: &[u8]) -> Vec<u8> {
    let crc = crc32(data);
    let mut out = Vec::new();
    let local = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
    };
    local(&mut out);
    out.extend_from_slice(data);
    let cd_start = out.len() as u32;
    out.extend_from_slice(b"PK\x01\x02");
    out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let cd_len = out.len() as u32 - cd_start;
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

// ---------------------------------------------------------------------------------------------
// Running the cases.

/// A hostile input and what the error must mention.
struct Case {
    name: String,
    path: PathBuf,
    /// Case-insensitive keyword expected in the error (or, for verify, in its report).
    keyword: &'static str,
    /// Also feed the input to `restore --input -` (tar cases).
    stdin: bool,
    /// What `verify` says instead, where it words the problem differently.
    verify_keyword: Option<&'static str>,
}

/// Refused cleanly ([`Run::check_failure`], exit 1), the error naming `keyword`; for verify, whose
/// report names the problems on stdout, the keyword may be anywhere in its output.
fn refused(run: &Run, keyword: &str, in_report: bool) -> Result<(), String> {
    if !in_report {
        return run.check_failure(1, &[keyword]);
    }
    run.check_failure(1, &[])?;
    if !run.output().to_lowercase().contains(&keyword.to_lowercase()) {
        return Err(format!("expected {keyword:?} in the report:\n{}", run.describe()));
    }
    Ok(())
}

/// Nothing pushed to `repo`: not even a blob (the backup is checked whole before anything is sent).
fn untouched(reg: &Registry, repo: &str, root: &str) -> Result<(), String> {
    no_tags_or_manifests(reg, repo, root)?;
    let c = Client::new(&reg.host());
    if c.catalog().iter().any(|r| r == repo) {
        return Err(format!("something was pushed to {repo}"));
    }
    Ok(())
}

/// No tags and no root manifest (a stream restore may have uploaded blobs before the damage showed).
fn no_tags_or_manifests(reg: &Registry, repo: &str, root: &str) -> Result<(), String> {
    let c = Client::new(&reg.host());
    let tags = c.list_tags(repo);
    if !tags.is_empty() {
        return Err(format!("tags were pushed to {repo}: {tags:?}"));
    }
    if c.manifest_exists(repo, root) {
        return Err(format!("manifest {root} was pushed to {repo}"));
    }
    Ok(())
}

/// Runs restore (file, and stdin when the case says so) and verify on every case.
fn run_cases(cases: &[Case], root: &str) {
    let reg = Registry::start();
    let mut failures = Failures::default();
    for (i, case) in cases.iter().enumerate() {
        let repo = format!("hostile/case{i}");
        let target = format!("{}/{repo}", reg.host());
        let run = harness::restore(&["--input", s(&case.path), &target]);
        failures.check(
            &format!("restore {}", case.name),
            refused(&run, case.keyword, false).and_then(|_| untouched(&reg, &repo, root)),
        );
        let run = harness::oras(&["verify", s(&case.path)]);
        failures.check(
            &format!("verify {}", case.name),
            refused(&run, case.verify_keyword.unwrap_or(case.keyword), true),
        );
        if case.stdin {
            let repo = format!("hostile/stdin{i}");
            let target = format!("{}/{repo}", reg.host());
            let bytes = std::fs::read(&case.path).unwrap();
            let run =
                Oras::new(&["restore", "--no-tty", "--input", "-", &target]).stdin(&bytes).run();
            failures.check(&format!("restore --input - {}", case.name), {
                // A stream's damage may only show after blobs were sent: they were held back, nothing is visible.
                refused(&run, "", false).and_then(|_| untouched(&reg, &repo, root))
            });
        }
    }
    failures.assert_none();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// Archive structure.

#[test]
fn hostile_tar_structure_is_refused() {
    let dir = tempdir();
    let base = Base::new();
    let d = dir.path();
    let layer_name = blob_name(&base.layer.digest);
    let root = base.manifest.digest.clone();
    let with_first = |first: &dyn Fn(&mut RawTar)| -> Vec<u8> {
        let mut t = RawTar::default();
        first(&mut t);
        for (name, bytes) in &base.ordered() {
            t.file(name, bytes);
        }
        t.finish()
    };
    let without_layer = |extra: &dyn Fn(&mut RawTar)| -> Vec<u8> {
        let mut t = RawTar::default();
        extra(&mut t);
        for (name, bytes) in &base.ordered() {
            if *name != layer_name {
                t.file(name, bytes);
            }
        }
        t.finish()
    };
    let evil = format!("oras-hostile-{}", std::process::id());
    let mut cases = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, keyword: &'static str, stdin: bool| {
        let path = write(d, &format!("{name}.tar"), &bytes);
        cases.push(Case { name: name.to_string(), path, keyword, stdin, verify_keyword: None });
    };

    let abs = format!("/tmp/{evil}-abs");
    add(
        "absolute",
        with_first(&|t| {
            let _ = t.file(&abs, b"evil\n");
        }),
        "absolute",
        true,
    );
    let up = format!("../{evil}-up");
    add(
        "dotdot",
        with_first(&|t| {
            let _ = t.file(&up, b"evil\n");
        }),
        "..",
        true,
    );
    add(
        "dotdot-inside",
        with_first(&|t| {
            let _ = t.file("blobs/sha256/../../../x", b"evil\n");
        }),
        "..",
        true,
    );
    add(
        "symlink-blob",
        without_layer(&|t| {
            let _ = t.entry(&layer_name, tar::EntryType::Symlink, 0, b"", Some("/etc/passwd"));
        }),
        "link",
        true,
    );
    add(
        "hardlink-blob",
        without_layer(&|t| {
            let _ = t.entry(&layer_name, tar::EntryType::Link, 0, b"", Some("index.json"));
        }),
        "link",
        true,
    );
    add(
        "char-device",
        with_first(&|t| {
            let _ = t.entry("null", tar::EntryType::Char, 0, b"", None);
        }),
        "regular file",
        true,
    );
    add(
        "block-device",
        with_first(&|t| {
            let _ = t.entry("disk", tar::EntryType::Block, 0, b"", None);
        }),
        "regular file",
        true,
    );
    add(
        "fifo",
        with_first(&|t| {
            let _ = t.entry("pipe", tar::EntryType::Fifo, 0, b"", None);
        }),
        "regular file",
        true,
    );
    add(
        "pax-path-dotdot",
        with_first(&|t| {
            let _ = t.pax(&[("path", &format!("../{evil}-pax"))]).file("harmless", b"evil\n");
        }),
        "..",
        true,
    );
    add(
        "gnu-longname-absolute",
        with_first(&|t| {
            let long = format!("/tmp/{evil}-gnu\0");
            t.entry(
                "././@LongLink",
                tar::EntryType::GNULongName,
                long.len() as u64,
                long.as_bytes(),
                None,
            );
            t.file("harmless", b"evil\n");
        }),
        "absolute",
        true,
    );
    // The same blob twice: the good copy first, then a different one of the same size.
    let mut flipped = base.get(&layer_name).unwrap().clone();
    flipped[10] ^= 0xff;
    add(
        "duplicate-blob",
        {
            let mut t = RawTar::default();
            for (name, bytes) in &base.ordered() {
                t.file(name, bytes);
            }
            t.file(&layer_name, &flipped);
            t.finish()
        },
        "twice",
        true,
    );
    add(
        "duplicate-index",
        {
            let mut t = RawTar::default();
            for (name, bytes) in &base.ordered() {
                t.file(name, bytes);
            }
            t.file("index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
            t.finish()
        },
        "twice",
        true,
    );
    // Truncation: inside the data of the last entry, and inside a header.
    let whole = base.tar();
    let cut = {
        let mut t = RawTar::default();
        for (name, bytes) in base.ordered().iter().filter(|(n, _)| *n != layer_name) {
            t.file(name, bytes);
        }
        let layer = base.get(&layer_name).unwrap();
        t.cut(&layer_name, layer.len() as u64, &layer[..layer.len() / 2])
    };
    // Compressed archives are read (gzip and zstd, by their magic), so the damage inside one, or
    // to the compressed stream itself, is what gets refused.
    add("gzip-of-a-truncated-tar", gzip(&cut), "truncated", true);
    let squeezed = gzip(&whole);
    add("gzip-stream-cut", squeezed[..squeezed.len() / 2].to_vec(), "gzip", true);
    add("truncated-data", cut, "truncated", true);
    let second_header = 512 + 512;
    add("truncated-header", whole[..second_header + 100].to_vec(), "truncated", true);
    add("zip-named-tar", zip("backup.tar", &whole), "zip", true);
    add("empty-file", Vec::new(), "neither", true);
    add("zeros", vec![0u8; 10240], "no index.json", true);
    // A header claiming a 1 TB layer in a file of a few KB.
    add(
        "layer-header-lies",
        without_layer(&|t| {
            let _ = t.entry(
                &layer_name,
                tar::EntryType::Regular,
                TB,
                base.get(&layer_name).unwrap(),
                None,
            );
        }),
        "truncated",
        true,
    );
    add(
        "no-index-json",
        {
            let mut t = RawTar::default();
            for (name, bytes) in base.ordered().iter().filter(|(n, _)| n != "index.json") {
                t.file(name, bytes);
            }
            t.finish()
        },
        "index.json",
        true,
    );
    run_cases(&cases, &root);
    // Nothing landed where the evil names point.
    for p in [
        PathBuf::from(&abs),
        d.parent().unwrap().join(format!("{evil}-up")),
        d.parent().unwrap().join(format!("{evil}-pax")),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
}

/// index.json entries too large to be an index: a tar whose header says so (the data is a sparse
/// hole), and a sparse file in a directory. Refused before anything is read.
#[test]
fn enormous_index_json_is_refused() {
    let dir = tempdir();
    let base = Base::new();
    let d = dir.path();
    let big: u64 = 300 << 20;
    // Tar: oci-layout, then an index.json header claiming 300 MiB; the file is extended sparsely.
    let mut t = RawTar::default();
    t.file("oci-layout", base.get("oci-layout").unwrap());
    let mut bytes = t.finish();
    bytes.truncate(bytes.len() - 1024);
    let mut h = tar::Header::new_ustar();
    h.set_path("index.json").unwrap();
    h.set_size(big);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    bytes.extend_from_slice(h.as_bytes());
    let tar_path = write(d, "big-index.tar", &bytes);
    let f = std::fs::OpenOptions::new().write(true).open(&tar_path).unwrap();
    f.set_len(bytes.len() as u64 + big + 1024).unwrap();
    // Directory: a sparse 300 MiB index.json.
    let layout = d.join("big-index-dir");
    base.write_dir(&layout);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(layout.join("index.json"))
        .unwrap();
    f.set_len(big).unwrap();
    let cases = vec![
        Case {
            name: "tar".into(),
            path: tar_path.clone(),
            keyword: "limit",
            stdin: false,
            verify_keyword: None,
        },
        Case {
            name: "dir".into(),
            path: layout.clone(),
            keyword: "limit",
            stdin: false,
            verify_keyword: None,
        },
    ];
    run_cases(&cases, &base.manifest.digest);
    for p in [&tar_path, &layout] {
        let (run, rss) = restore_measuring_rss(p, "127.0.0.1:1/x/y");
        assert_eq!(run.code, Some(1), "{}", run.describe());
        assert!(rss < MAX_RSS_KB, "restore of {} peaked at {rss} KiB", p.display());
    }
}

// ---------------------------------------------------------------------------------------------
// Damaged content, in a directory and in a tar.

/// Every content-level case, as layouts.
fn content_cases(base: &Base) -> Vec<(&'static str, Base, &'static str)> {
    let mut out = Vec::new();
    let layer_name = blob_name(&base.layer.digest);
    let manifest_name = blob_name(&base.manifest.digest);
    let m = base.manifest_json();
    let entry = |digest: &str, size: usize, media_type: &str| json!({"mediaType": media_type, "digest": digest, "size": size, "annotations": {REF_NAME: "v1"}});

    let mut b = base.clone();
    let mut bytes = b.get(&layer_name).unwrap().clone();
    bytes[100] ^= 0xff;
    b.set(&layer_name, bytes);
    out.push(("blob-bytes-do-not-match-name", b, "does not match"));

    let mut b = base.clone();
    let mut bytes = b.get(&manifest_name).unwrap().clone();
    let i = bytes.len() - 3;
    bytes[i] = b' ';
    b.set(&manifest_name, bytes);
    out.push(("manifest-bytes-do-not-match-name", b, "does not match"));

    let mut b = base.clone();
    b.set_index(vec![entry("sha256:XYZ", base.manifest.size, OCI_MANIFEST)]);
    out.push(("index-malformed-digest", b, "malformed digest"));

    let mut b = base.clone();
    b.set_index(vec![entry(
        &format!("sha512:{}", "ab".repeat(64)),
        base.manifest.size,
        OCI_MANIFEST,
    )]);
    out.push(("index-sha512-digest", b, "algorithm"));

    let mut b = base.clone();
    b.set_index(vec![entry(
        &format!("sha256:{}", "A".repeat(64)),
        base.manifest.size,
        OCI_MANIFEST,
    )]);
    out.push(("index-uppercase-digest", b, "malformed digest"));

    let mut b = base.clone();
    b.set_index(vec![entry(
        &format!("sha256:{}/../../../../etc/passwd", "a".repeat(64)),
        10,
        OCI_MANIFEST,
    )]);
    out.push(("index-digest-with-path", b, "malformed digest"));

    let mut b = base.clone();
    let mut mm = m.clone();
    mm["layers"][0]["digest"] = json!("sha256:XYZ");
    b.replace_manifest(&mm);
    out.push(("layer-malformed-digest", b, "malformed digest"));

    let mut b = base.clone();
    let mut mm = m.clone();
    mm["layers"][0]["digest"] = json!(format!("sha512:{}", "cd".repeat(64)));
    b.replace_manifest(&mm);
    out.push(("layer-sha512-digest", b, "algorithm"));

    let mut b = base.clone();
    let mut mm = m.clone();
    mm["layers"][0]["size"] = json!(base.layer.size + 1);
    b.replace_manifest(&mm);
    out.push(("layer-size-disagrees", b, "bytes"));

    let mut b = base.clone();
    let mut mm = m.clone();
    mm["layers"][0]["size"] = json!(TB);
    b.replace_manifest(&mm);
    out.push(("layer-claims-1tb", b, "bytes"));

    let mut b = base.clone();
    let mut mm = m.clone();
    mm["layers"][0]["size"] = json!(-1);
    b.replace_manifest(&mm);
    out.push(("layer-negative-size", b, "manifest"));

    let mut b = base.clone();
    b.set_index(vec![entry(&base.manifest.digest, base.manifest.size + 1, OCI_MANIFEST)]);
    out.push(("manifest-size-disagrees", b, "bytes"));

    let mut b = base.clone();
    b.set_index(vec![entry(&base.manifest.digest, TB as usize, OCI_MANIFEST)]);
    out.push(("manifest-claims-1tb", b, "limit"));

    let mut b = base.clone();
    b.replace_manifest_bytes(b"this is not json at all".to_vec());
    out.push(("manifest-not-json", b, "JSON"));

    let mut b = base.clone();
    b.replace_manifest_bytes(
        br#"{"schemaVersion":1,"name":"x","tag":"v1","fsLayers":[]}"#.to_vec(),
    );
    out.push(("manifest-schema1", b, "schema 1"));

    // A manifest that names itself as its layer: stored under the digest it names, so its bytes
    // cannot match (a real self-reference would need a hash fixpoint).
    let mut b = base.clone();
    let fake = sha256_digest(b"the digest this manifest claims");
    let mut mm = m.clone();
    mm["layers"][0] = json!({"mediaType": OCI_LAYER_GZIP, "digest": fake, "size": 10});
    let bytes = serde_json::to_vec(&mm).unwrap();
    b.remove(&manifest_name);
    b.set(&blob_name(&fake), bytes.clone());
    b.set_index(vec![entry(&fake, bytes.len(), OCI_MANIFEST)]);
    out.push(("manifest-references-itself", b, "does not match"));

    // An index that lists itself as a child (same trick), and a child index listing its parent.
    let mut b = base.clone();
    let fake = sha256_digest(b"cycle");
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_INDEX, "digest": fake, "size": 300}]});
    let bytes = serde_json::to_vec(&idx).unwrap();
    b.set(&blob_name(&fake), bytes.clone());
    b.set_index(vec![entry(&fake, bytes.len(), OCI_INDEX)]);
    out.push(("index-cycle", b, "does not match"));

    let mut b = base.clone();
    b.remove(&layer_name);
    out.push(("blob-missing", b, "missing"));

    let mut b = base.clone();
    b.remove(&manifest_name);
    out.push(("manifest-missing", b, "missing"));

    let mut b = base.clone();
    b.set_index(vec![entry(&base.layer.digest, base.layer.size, OCI_LAYER_GZIP)]);
    out.push(("root-is-a-layer", b, "manifest"));

    let mut b = base.clone();
    let other = sha256_digest(b"another manifest");
    b.set_index(vec![
        entry(&base.manifest.digest, base.manifest.size, OCI_MANIFEST),
        entry(&other, 10, OCI_MANIFEST),
    ]);
    out.push(("index-json-one-tag-two-manifests", b, "twice"));

    let mut b = base.clone();
    b.set("index.json", b"{\"manifests\": [".to_vec());
    out.push(("index-json-not-json", b, "index.json"));

    let mut b = base.clone();
    b.set("index.json", b"[1, 2, 3]".to_vec());
    out.push(("index-json-wrong-shape", b, "index.json"));

    let mut b = base.clone();
    b.set("index.json", br#"{"manifests": [{"digest": 5}]}"#.to_vec());
    out.push(("index-json-wrong-types", b, "index.json"));

    let mut b = base.clone();
    b.remove("index.json");
    out.push(("index-json-missing", b, "index.json"));

    let mut b = base.clone();
    let nested = (0..200).fold(String::from("0"), |acc, _| format!("[{acc}]"));
    b.set("index.json", format!(r#"{{"manifests": {nested}}}"#).into_bytes());
    out.push(("index-json-deeply-nested", b, "index.json"));

    out
}

#[test]
fn damaged_directory_content_is_refused() {
    let dir = tempdir();
    let base = Base::new();
    let cases: Vec<Case> = content_cases(&base)
        .into_iter()
        .map(|(name, b, keyword)| {
            let path = dir.path().join(name);
            b.write_dir(&path);
            Case { name: format!("dir {name}"), path, keyword, stdin: false, verify_keyword: None }
        })
        .collect();
    run_cases(&cases, &base.manifest.digest);
}

#[test]
fn damaged_tar_content_is_refused() {
    let dir = tempdir();
    let base = Base::new();
    let cases: Vec<Case> = content_cases(&base)
        .into_iter()
        .map(|(name, b, keyword)| {
            let path = write(dir.path(), &format!("{name}.tar"), &b.tar());
            Case { name: format!("tar {name}"), path, keyword, stdin: true, verify_keyword: None }
        })
        .collect();
    run_cases(&cases, &base.manifest.digest);
}

// ---------------------------------------------------------------------------------------------
// Links and special files in a layout directory: never followed, never read.

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(st.success());
}

#[test]
fn layout_directory_links_and_special_files_are_refused() {
    let dir = tempdir();
    let base = Base::new();
    let layer_name = blob_name(&base.layer.digest);
    let manifest_name = blob_name(&base.manifest.digest);
    let d = dir.path();
    let mut cases = Vec::new();

    // A layer that is a symlink to /etc/passwd (the manifest names that file's own digest and
    // size, so only the link check can stop it being read and pushed).
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let mut b = base.clone();
    let mut mm = base.manifest_json();
    let pd = sha256_digest(&passwd);
    mm["layers"][0] = json!({"mediaType": OCI_LAYER_GZIP, "digest": pd, "size": passwd.len()});
    b.replace_manifest(&mm);
    let p = d.join("blob-symlink-passwd");
    b.write_dir(&p);
    std::os::unix::fs::symlink("/etc/passwd", p.join(blob_name(&pd))).unwrap();
    cases.push(Case {
        name: "blob symlink to /etc/passwd".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: Some("missing"),
    });

    // A layer that is a symlink to a file with the right content elsewhere.
    let outside = d.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("layer"), base.get(&layer_name).unwrap()).unwrap();
    let p = d.join("blob-symlink-outside");
    base.write_dir(&p);
    std::fs::remove_file(p.join(&layer_name)).unwrap();
    std::os::unix::fs::symlink(outside.join("layer"), p.join(&layer_name)).unwrap();
    cases.push(Case {
        name: "blob symlink to a good copy outside".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: Some("missing"),
    });

    // The manifest is a symlink.
    std::fs::write(outside.join("manifest"), &base.manifest_bytes).unwrap();
    let p = d.join("manifest-symlink");
    base.write_dir(&p);
    std::fs::remove_file(p.join(&manifest_name)).unwrap();
    std::os::unix::fs::symlink(outside.join("manifest"), p.join(&manifest_name)).unwrap();
    cases.push(Case {
        name: "manifest symlink".into(),
        path: p,
        keyword: "manifest",
        stdin: false,
        verify_keyword: None,
    });

    // The whole blobs directory is a symlink to a complete copy elsewhere.
    let elsewhere = d.join("elsewhere");
    base.write_dir(&elsewhere);
    let p = d.join("blobs-dir-symlink");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("oci-layout"), base.get("oci-layout").unwrap()).unwrap();
    std::fs::write(p.join("index.json"), base.get("index.json").unwrap()).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("blobs"), p.join("blobs")).unwrap();
    cases.push(Case {
        name: "blobs dir symlink".into(),
        path: p,
        keyword: "outside",
        stdin: false,
        verify_keyword: Some("missing"),
    });

    // index.json is a symlink (to a valid index elsewhere).
    let p = d.join("index-symlink");
    base.write_dir(&p);
    std::fs::write(outside.join("index.json"), base.get("index.json").unwrap()).unwrap();
    std::fs::remove_file(p.join("index.json")).unwrap();
    std::os::unix::fs::symlink(outside.join("index.json"), p.join("index.json")).unwrap();
    cases.push(Case {
        name: "index.json symlink".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: None,
    });

    // index.json is a fifo: must not block.
    let p = d.join("index-fifo");
    base.write_dir(&p);
    std::fs::remove_file(p.join("index.json")).unwrap();
    mkfifo(&p.join("index.json"));
    cases.push(Case {
        name: "index.json fifo".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: None,
    });

    // index.json is a directory.
    let p = d.join("index-dir");
    base.write_dir(&p);
    std::fs::remove_file(p.join("index.json")).unwrap();
    std::fs::create_dir(p.join("index.json")).unwrap();
    cases.push(Case {
        name: "index.json directory".into(),
        path: p,
        keyword: "index.json",
        stdin: false,
        verify_keyword: None,
    });

    // A layer that is a fifo, and one that is a directory.
    let p = d.join("blob-fifo");
    base.write_dir(&p);
    std::fs::remove_file(p.join(&layer_name)).unwrap();
    mkfifo(&p.join(&layer_name));
    cases.push(Case {
        name: "layer fifo".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: Some("missing"),
    });
    let p = d.join("blob-dir");
    base.write_dir(&p);
    std::fs::remove_file(p.join(&layer_name)).unwrap();
    std::fs::create_dir(p.join(&layer_name)).unwrap();
    cases.push(Case {
        name: "layer directory".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: Some("missing"),
    });

    // The input itself is a fifo.
    let p = d.join("input-fifo");
    mkfifo(&p);
    cases.push(Case {
        name: "input is a fifo".into(),
        path: p,
        keyword: "regular file",
        stdin: false,
        verify_keyword: None,
    });

    let started = Instant::now();
    run_cases(&cases, &base.manifest.digest);
    assert!(started.elapsed() < Duration::from_secs(120), "a fifo made a run block");
}

/// A backup never writes outside its output, even into a directory whose structure is links.
#[test]
fn backup_into_a_directory_with_linked_structure_is_refused() {
    let reg = Registry::start();
    let c = Client::new(&reg.host());
    harness::fixtures::push_signed_image(&c, "team/app");
    let dir = tempdir();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("sha256")).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("blobs")).unwrap();
    let run = harness::backup(&["-o", s(&out), &format!("{}/team/app", reg.host())]);
    run.fails(1, &["symbolic link"]);
    assert_eq!(
        std::fs::read_dir(elsewhere.join("sha256")).unwrap().count(),
        0,
        "blobs were written through the link"
    );

    // index.json a symlink to a file elsewhere: not followed, not overwritten.
    let out2 = dir.path().join("out2");
    std::fs::create_dir_all(&out2).unwrap();
    let victim = dir.path().join("victim.json");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out2.join("index.json")).unwrap();
    harness::backup(&["-o", s(&out2), &format!("{}/team/app", reg.host())])
        .fails(1, &["symbolic link"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // index.json a fifo (or /dev/zero): never read without bound.
    let out3 = dir.path().join("out3");
    std::fs::create_dir_all(&out3).unwrap();
    mkfifo(&out3.join("index.json"));
    harness::backup(&["-o", s(&out3), &format!("{}/team/app", reg.host())])
        .fails(1, &["regular file"]);
}

// ---------------------------------------------------------------------------------------------
// Memory: sizes the input claims are never allocated.

/// Peak resident memory allowed for a run against a hostile input (the binary alone is ~20 MiB).
const MAX_RSS_KB: u64 = 64 * 1024;

/// Runs `oras <args>` (stdin from the file `stdin`, or none) and returns the run and its peak RSS in KiB.
fn run_measuring_rss(args: &[&str], stdin: Option<&Path>) -> (Run, u64) {
    let mut oras = Oras::new(args);
    if let Some(p) = stdin {
        oras = oras.stdin(&std::fs::read(p).unwrap());
    }
    let m = oras.measure(Duration::from_secs(120));
    assert!(!m.killed, "oras {args:?} did not finish:\n{:?}", m.run);
    (m.run, m.peak_rss_kib)
}

fn restore_measuring_rss(input: &Path, target: &str) -> (Run, u64) {
    run_measuring_rss(&["restore", "--no-tty", "--input", s(input), target], None)
}

#[test]
fn claimed_sizes_are_never_allocated() {
    let reg = Registry::start();
    let dir = tempdir();
    let base = Base::new();
    let layer_name = blob_name(&base.layer.digest);
    let mut inputs: Vec<(String, PathBuf, bool)> = Vec::new();

    // A tar whose header claims a 1 TB layer (the file is a few KB).
    let mut t = RawTar::default();
    for (name, bytes) in &base.ordered() {
        if *name == layer_name {
            t.entry(name, tar::EntryType::Regular, TB, bytes, None);
        } else {
            t.file(name, bytes);
        }
    }
    inputs.push((
        "tar header claims 1 TB".into(),
        write(dir.path(), "lying-header.tar", &t.finish()),
        true,
    ));

    // Descriptors claiming 1 TB: the manifest in index.json, a layer in the manifest.
    let by_case: std::collections::BTreeMap<&str, Base> =
        content_cases(&base).into_iter().map(|(n, b, _)| (n, b)).collect();
    for name in ["manifest-claims-1tb", "layer-claims-1tb"] {
        let b = &by_case[name];
        inputs.push((
            format!("{name} (tar)"),
            write(dir.path(), &format!("{name}.tar"), &b.tar()),
            true,
        ));
        let p = dir.path().join(name);
        b.write_dir(&p);
        inputs.push((format!("{name} (dir)"), p, false));
    }
    // A stream whose manifest-sized entries claim 1 TB for index.json.
    let mut t = RawTar::default();
    t.file("oci-layout", base.get("oci-layout").unwrap());
    t.entry("index.json", tar::EntryType::Regular, TB, base.get("index.json").unwrap(), None);
    inputs.push((
        "index.json header claims 1 TB".into(),
        write(dir.path(), "lying-index.tar", &t.finish()),
        true,
    ));

    let mut failures = Failures::default();
    for (i, (name, path, stdin)) in inputs.iter().enumerate() {
        let target = format!("{}/rss/case{i}", reg.host());
        let (run, rss) = restore_measuring_rss(path, &target);
        failures.check(
            name,
            refused(&run, "", false)
                .and_then(|_| untouched(&reg, &format!("rss/case{i}"), &base.manifest.digest)),
        );
        if rss >= MAX_RSS_KB {
            failures.fail(name, format!("peak RSS {rss} KiB"));
        }
        let (run, rss) = run_measuring_rss(&["verify", s(path)], None);
        failures.check(&format!("verify {name}"), refused(&run, "", true));
        if rss >= MAX_RSS_KB {
            failures.fail(&format!("verify {name}"), format!("peak RSS {rss} KiB"));
        }
        if *stdin {
            let (run, rss) =
                run_measuring_rss(&["restore", "--no-tty", "--input", "-", &target], Some(path));
            failures.check(
                &format!("stdin {name}"),
                refused(&run, "", false).and_then(|_| {
                    no_tags_or_manifests(&reg, &format!("rss/case{i}"), &base.manifest.digest)
                }),
            );
            if rss >= MAX_RSS_KB {
                failures.fail(&format!("stdin {name}"), format!("peak RSS {rss} KiB"));
            }
        }
    }
    failures.assert_none();
}

/// A valid backup of the same shape passes every check these tests make (so refusals above are
/// about the damage, not about the base).
#[test]
fn the_undamaged_base_restores() {
    let reg = Registry::start();
    let dir = tempdir();
    let base = Base::new();
    let tar = write(dir.path(), "good.tar", &base.tar());
    let layout = dir.path().join("good");
    base.write_dir(&layout);
    for (i, input) in [&tar, &layout].into_iter().enumerate() {
        harness::oras(&["verify", s(input)]).ok();
        let repo = format!("good/case{i}");
        harness::restore(&["--input", s(input), &format!("{}/{repo}", reg.host())]).ok();
        let c = Client::new(&reg.host());
        assert_eq!(c.list_tags(&repo), vec!["v1".to_string()]);
        assert_eq!(c.get_manifest(&repo, "v1").unwrap().digest, base.manifest.digest);
    }
    let bytes = std::fs::read(&tar).unwrap();
    Oras::new(&["restore", "--no-tty", "--input", "-", &format!("{}/good/stdin", reg.host())])
        .stdin(&bytes)
        .run()
        .ok();
    // A tar from another tool: pax global header first (git archive), identical duplicate entries.
    let mut t = RawTar::default();
    t.entry(
        "pax_global_header",
        tar::EntryType::XGlobalHeader,
        52,
        b"52 comment=0123456789abcdef0123456789abcdef01234567\n",
        None,
    );
    for (name, bytes) in &base.ordered() {
        t.file(name, bytes);
    }
    t.file(&blob_name(&base.layer.digest), base.get(&blob_name(&base.layer.digest)).unwrap());
    let other = write(dir.path(), "other-tool.tar", &t.finish());
    harness::oras(&["verify", s(&other)]).ok();
    harness::restore(&["--input", s(&other), &format!("{}/good/other", reg.host())]).ok();
}
