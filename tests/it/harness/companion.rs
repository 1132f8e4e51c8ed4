//! Helpers of the companion-command tests (`repo`, `discover`, `verify`, `copy`, completion,
//! man pages): a catalog-capping proxy,
//! damaging backups on purpose, and reading command output.

use super::Run;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A loopback HTTP proxy in front of a registry that answers `/v2/_catalog` in pages of at
/// most `cap` repositories, whatever `n` the client asks for (as hosted registries that cap
/// their page size do): it lowers `n` before forwarding, so the pages and their `Link`
/// headers are the upstream registry's own. GET and HEAD only.
pub struct CatalogCapProxy {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CatalogCapProxy {
    pub fn start(upstream: &str, cap: usize) -> CatalogCapProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (lg, sp, up) = (log.clone(), stop.clone(), upstream.to_string());
        let accept = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (lg, http, up) = (lg.clone(), http.clone(), up.clone());
                std::thread::spawn(move || proxy_connection(conn, &http, &up, cap, &lg));
            }
        });
        CatalogCapProxy { port, log, stop, accept: Some(accept) }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `METHOD target` as the client sent it, for every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for CatalogCapProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn proxy_connection(conn: TcpStream, http: &reqwest::blocking::Client, upstream: &str, cap: usize, log: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next().map(str::to_string), parts.next().map(str::to_string)) else { break };
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        log.lock().unwrap().push(format!("{method} {target}"));
        let mut url = url::Url::parse(&format!("http://{upstream}{target}")).unwrap();
        if url.path() == "/v2/_catalog" {
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let asked = pairs.iter().find(|(k, _)| k == "n").and_then(|(_, v)| v.parse::<usize>().ok());
            let n = asked.map_or(cap, |a| a.min(cap));
            let mut q = url.query_pairs_mut();
            q.clear();
            for (k, v) in pairs.iter().filter(|(k, _)| k != "n") {
                q.append_pair(k, v);
            }
            q.append_pair("n", &n.to_string());
            drop(q);
        }
        let mut req = match method.as_str() {
            "GET" => http.get(url),
            "HEAD" => http.head(url),
            _ => {
                let _ = writer.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                break;
            }
        };
        for (k, v) in &headers {
            if k == "accept" || k == "authorization" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let Ok(resp) = req.send() else { break };
        let mut out = format!("HTTP/1.1 {} Status\r\n", resp.status().as_u16());
        for (k, v) in resp.headers() {
            let k = k.as_str();
            if k == "content-length" || k == "connection" || k == "transfer-encoding" {
                continue;
            }
            out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
        }
        let head = method == "HEAD";
        let len = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
        let len = if head { len.unwrap_or_else(|| "0".into()) } else { body.len().to_string() };
        out.push_str(&format!("Content-Length: {len}\r\n\r\n"));
        let mut bytes = out.into_bytes();
        if !head {
            bytes.extend_from_slice(&body);
        }
        if writer.write_all(&bytes).is_err() || writer.flush().is_err() {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// stdout parsed as one JSON document (the whole of stdout).
#[track_caller]
pub fn stdout_json(run: &Run) -> Value {
    serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout of `oras {}` is not one JSON document ({e}):\n{}", run.args.join(" "), run.stdout_str()))
}

/// Non-empty stdout lines.
pub fn stdout_lines(run: &Run) -> Vec<String> {
    run.stdout_str().lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The `problem: ...` lines `oras verify` printed (without the prefix).
pub fn problems(run: &Run) -> Vec<String> {
    run.stdout_str().lines().filter_map(|l| l.strip_prefix("problem: ")).map(str::to_string).collect()
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
    let (off, size) = *entries.get(&name).unwrap_or_else(|| panic!("{name} not in {}: {:?}", tar.display(), entries.keys()));
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
            let d = r["digest"].as_str().unwrap_or_else(|| panic!("referrer without digest: {r}")).to_string();
            out.push((depth, d, r["artifactType"].as_str().map(str::to_string)));
            walk(r, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(v, 1, &mut out);
    out
}
