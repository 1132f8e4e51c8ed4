//! Helpers of the companion-command tests (`repo`, `discover`, `verify`, `copy`, completion,
//! man pages): a catalog-capping relay, damaging backups on purpose, and reading command output.

use super::relay::{Behaviour, Forwarding, Match, Plan, Relay, Seen};
use super::Run;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Caps the pages of `/v2/_catalog` at this many repositories, whatever `n` the client asks for
/// (as hosted registries that cap their page size do): a relay with this rule lowers `n` before
/// forwarding, so the pages and their `Link` headers are the upstream registry's own.
#[derive(Clone, Debug)]
pub struct CatalogCap(pub usize);

impl Behaviour for CatalogCap {
    fn plan(&self, request: &Seen) -> Plan {
        let mut url = url::Url::parse(&format!("http://upstream{}", request.path)).unwrap();
        let pairs: Vec<(String, String)> =
            url.query_pairs().into_owned().filter(|(k, _)| k != "n").collect();
        let asked =
            url.query_pairs().find(|(k, _)| k == "n").and_then(|(_, v)| v.parse::<usize>().ok());
        url.query_pairs_mut()
            .clear()
            .extend_pairs(&pairs)
            .append_pair("n", &asked.map_or(self.0, |a| a.min(self.0)).to_string());
        Plan::Forward(Forwarding {
            path: Some(format!("{}?{}", url.path(), url.query().unwrap_or_default())),
            ..Forwarding::default()
        })
    }
}

/// A relay in front of `upstream` whose catalog pages hold at most `cap` repositories.
pub fn catalog_cap_proxy(upstream: &str, cap: usize) -> Relay<CatalogCap> {
    let proxy = Relay::start(upstream);
    proxy.always(Match::method("GET").path("/v2/_catalog"), CatalogCap(cap));
    proxy
}

/// stdout parsed as one JSON document (the whole of stdout).
#[track_caller]
pub fn stdout_json(run: &Run) -> Value {
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of `oras {}` is not one JSON document ({e}):\n{}",
            run.args.join(" "),
            run.stdout_str()
        )
    })
}

/// Non-empty stdout lines.
pub fn stdout_lines(run: &Run) -> Vec<String> {
    run.stdout_str().lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The `problem: ...` lines `oras verify` printed (without the prefix).
pub fn problems(run: &Run) -> Vec<String> {
    run.stdout_str()
        .lines()
        .filter_map(|l| l.strip_prefix("problem: "))
        .map(str::to_string)
        .collect()
}

/// `oras verify <path>` (text).
pub fn verify(path: &Path) -> Run {
    super::oras(&["verify", super::s(path)])
}

/// `oras verify --format json <path>`: the run and its parsed document.
pub fn verify_json(path: &Path) -> (Run, Value) {
    let run = super::oras(&["verify", "--format", "json", super::s(path)]);
    let v = stdout_json(&run);
    (run, v)
}

/// The file of a blob in a layout directory.
pub fn blob_file(dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').expect("digest");
    dir.join("blobs").join(alg).join(hex)
}

/// Flip every bit of the byte at `offset` of a file, in place.
pub fn flip_byte_at(path: &Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
}

/// Entry name -> (data offset, size) of every regular file of a tar.
pub fn tar_entries(path: &Path) -> BTreeMap<String, (u64, u64)> {
    let f = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(f);
    let mut out = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
        out.insert(name, (e.raw_file_position(), e.size()));
    }
    out
}

/// Flip a byte in the middle of a blob stored in a tar, in place (headers stay valid).
pub fn flip_byte_in_tar_blob(tar: &Path, digest: &str) {
    let (alg, hex) = digest.split_once(':').unwrap();
    let name = format!("blobs/{alg}/{hex}");
    let entries = tar_entries(tar);
    let (off, size) = *entries
        .get(&name)
        .unwrap_or_else(|| panic!("{name} not in {}: {:?}", tar.display(), entries.keys()));
    assert!(size > 0, "{name} is empty");
    flip_byte_at(tar, off + size / 2);
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Rewrite a layout directory's index.json through `edit`.
pub fn edit_index(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let p = dir.join("index.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Every digest in a discover JSON tree below the root, depth-first, with its depth (1 =
/// direct referrer).
pub fn discover_nodes(v: &Value) -> Vec<(usize, String, Option<String>)> {
    fn walk(v: &Value, depth: usize, out: &mut Vec<(usize, String, Option<String>)>) {
        for r in v["referrers"].as_array().into_iter().flatten() {
            let d = r["digest"]
                .as_str()
                .unwrap_or_else(|| panic!("referrer without digest: {r}"))
                .to_string();
            out.push((depth, d, r["artifactType"].as_str().map(str::to_string)));
            walk(r, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(v, 1, &mut out);
    out
}
