//! A small in-process fake OCI registry.
//!
//! Distribution 2.8 has no referrers API; this fake exists only to cover that path.
//! (Its request log and counters are also used by a few tests to observe what a client
//! sent: tag pagination under a page-size cap, blob mounts, skipped uploads.)
//!
//! It speaks plain HTTP/1.1 on a loopback port (std::net, a thread per connection, keep-alive,
//! `Content-Length` and chunked request bodies) and implements just enough of the
//! distribution spec: `/v2/`, blob HEAD/GET, blob upload (POST with optional
//! `?mount=&from=` or `?digest=`, PATCH, PUT `?digest=` with digest verification),
//! manifest GET/HEAD/PUT by tag or digest (bytes and content type stored verbatim,
//! `OCI-Subject` on PUT of a manifest with `subject`, referenced blobs/manifests must exist),
//! `tags/list` with `n`/`last` pagination and `Link`, `_catalog`, and
//! `GET /v2/<name>/referrers/<digest>[?artifactType=]`.
//! Counters let a test check what a client did (e.g. that no tag-schema tag was pushed).

use super::client::{is_tag_schema_tag, sha256_digest, OCI_INDEX};
use super::relay::{reason, Server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Repo {
    blobs: BTreeSet<String>,
    /// digest -> (content type, bytes)
    manifests: BTreeMap<String, (String, Vec<u8>)>,
    tags: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    content: HashMap<String, Vec<u8>>,
    repos: BTreeMap<String, Repo>,
    uploads: HashMap<String, (String, Vec<u8>)>,
    next_upload: u64,
    page_size: Option<usize>,
    /// Referrers listed per page of the referrers API (pages linked by `Link`), when set.
    referrers_page: Option<usize>,
    counters: Counters,
    log: Vec<String>,
}

/// What clients did so far.
#[derive(Default, Clone, Debug)]
pub struct Counters {
    /// PUT of a manifest under a `sha256-<hex>` tag (the referrers tag schema)
    pub tag_schema_pushes: usize,
    /// GET of `/v2/<name>/referrers/<digest>`
    pub referrers_calls: usize,
    /// successful cross-repository mounts
    pub mounts: usize,
    /// completed blob uploads (not counting mounts)
    pub blob_uploads: usize,
    /// successful manifest PUTs
    pub manifest_puts: usize,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn new(status: u16) -> Resp {
        Resp { status, headers: Vec::new(), body: Vec::new() }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Resp {
        self.headers.push((k.to_string(), v.into()));
        self
    }
    fn body(mut self, b: Vec<u8>) -> Resp {
        self.body = b;
        self
    }
    fn json(status: u16, v: &Value) -> Resp {
        Resp::new(status)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
    fn error(status: u16, code: &str, message: &str) -> Resp {
        Resp::json(status, &json!({"errors": [{"code": code, "message": message, "detail": null}]}))
    }
}

/// The running fake; stopped on Drop.
pub struct FakeRegistry {
    server: Server,
    state: Arc<Mutex<State>>,
    /// Ends the connections kept alive, when set.
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    /// A fake that returns every tag in one page unless `n` is given.
    pub fn start() -> FakeRegistry {
        Self::start_with_page_size(None)
    }

    /// A fake that returns at most `page` tags per page, whatever `n` the client asks for
    /// (like hosted registries that cap their page size).
    pub fn start_with_page_size(page: Option<usize>) -> FakeRegistry {
        let state = Arc::new(Mutex::new(State { page_size: page, ..Default::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let server = Server::start(move |conn, _| serve_connection(conn, st.clone(), sp.clone()));
        FakeRegistry { server, state, stop }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port())
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().unwrap().counters.clone()
    }

    /// Number of tag-schema (`sha256-<hex>`) tags ever pushed.
    pub fn tag_schema_pushes(&self) -> usize {
        self.counters().tag_schema_pushes
    }

    /// Number of referrers API requests served.
    pub fn referrers_calls(&self) -> usize {
        self.counters().referrers_calls
    }

    /// `METHOD /path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Lists at most `n` referrers per page of the referrers API, the next page named by a `Link`
    /// header (as Harbor and zot page their answers).
    pub fn page_referrers(&self, n: usize) {
        self.state.lock().unwrap().referrers_page = Some(n.max(1));
    }

    pub fn reset_counters(&self) {
        let mut s = self.state.lock().unwrap();
        s.counters = Counters::default();
        s.log.clear();
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // trailers until an empty line
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).ok()? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().ok()?;
        body.resize(len, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some(Request { method, target, headers, body })
}

fn serve_connection(conn: TcpStream, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    while !stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut reader) else {
            break;
        };
        let close = req.headers.get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let head = req.method == "HEAD";
        let resp = {
            let mut s = state.lock().unwrap();
            s.log.push(format!("{} {}", req.method, req.target));
            handle(&mut s, &req)
        };
        let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
        for (k, v) in &resp.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
        out.push_str("Docker-Distribution-API-Version: registry/2.0\r\n");
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head {
            bytes.extend_from_slice(&resp.body);
        }
        if writer.write_all(&bytes).is_err() || writer.flush().is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn is_digest(s: &str) -> bool {
    s.len() == 71
        && s.starts_with("sha256:")
        && s[7..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn handle(s: &mut State, req: &Request) -> Resp {
    let url = url::Url::parse(&format!("http://fake{}", req.target)).unwrap();
    let path = url.path().to_string();
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let m = req.method.as_str();
    if path == "/v2/" || path == "/v2" {
        return Resp::json(200, &json!({}));
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Resp::error(404, "NOT_FOUND", "not found");
    };
    if rest == "_catalog" {
        let repos: Vec<&String> = s.repos.keys().collect();
        return Resp::json(200, &json!({ "repositories": repos }));
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return tags_list(s, name, &query);
    }
    if let Some(i) = rest.rfind("/blobs/uploads") {
        let name = &rest[..i];
        let id = rest[i + "/blobs/uploads".len()..].trim_start_matches('/');
        return upload(s, m, name, id, &query, &req.body);
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let (name, digest) = (&rest[..i], &rest[i + 7..]);
        if m != "GET" && m != "HEAD" {
            return Resp::error(405, "UNSUPPORTED", "method not allowed");
        }
        let has = s.repos.get(name).is_some_and(|r| r.blobs.contains(digest));
        if !has {
            return Resp::error(404, "BLOB_UNKNOWN", "blob unknown");
        }
        let body = s.content[digest].clone();
        return Resp::new(200)
            .header("Content-Type", "application/octet-stream")
            .header("Docker-Content-Digest", digest)
            .body(body);
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let (name, reference) = (&rest[..i], &rest[i + 11..]);
        return manifest(s, m, name, reference, req);
    }
    if let Some(i) = rest.rfind("/referrers/") {
        let (name, digest) = (&rest[..i], &rest[i + 11..]);
        if m != "GET" {
            return Resp::error(405, "UNSUPPORTED", "method not allowed");
        }
        s.counters.referrers_calls += 1;
        return referrers(s, name, digest, &query);
    }
    Resp::error(404, "NOT_FOUND", "not found")
}

fn tags_list(s: &mut State, name: &str, query: &HashMap<String, String>) -> Resp {
    let Some(repo) = s.repos.get(name) else {
        return Resp::error(404, "NAME_UNKNOWN", "repository name not known to registry");
    };
    let tags: Vec<&String> = repo
        .tags
        .keys()
        .filter(|t| match query.get("last") {
            Some(l) => t.as_str() > l.as_str(),
            None => true,
        })
        .collect();
    // A page size cap applies whether or not the client asks for more.
    let asked = query.get("n").and_then(|n| n.parse::<usize>().ok());
    let n = match (asked, s.page_size) {
        (Some(a), Some(cap)) => Some(a.min(cap)),
        (a, cap) => a.or(cap),
    };
    let (page, more) = match n {
        Some(n) if tags.len() > n => (&tags[..n], true),
        _ => (&tags[..], false),
    };
    let mut resp = Resp::json(200, &json!({"name": name, "tags": page}));
    if more {
        if let Some(last) = page.last() {
            let n = n.unwrap();
            resp = resp
                .header("Link", format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""));
        }
    }
    resp
}

fn upload(
    s: &mut State,
    m: &str,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Resp {
    match (m, id) {
        ("POST", "") => {
            if let (Some(d), Some(from)) = (query.get("mount"), query.get("from")) {
                let has = s.repos.get(from.as_str()).is_some_and(|r| r.blobs.contains(d));
                if has {
                    s.repos.entry(name.to_string()).or_default().blobs.insert(d.clone());
                    s.counters.mounts += 1;
                    return Resp::new(201)
                        .header("Location", format!("/v2/{name}/blobs/{d}"))
                        .header("Docker-Content-Digest", d.clone());
                }
            }
            if let Some(d) = query.get("digest") {
                return finish_upload(s, name, d, body.to_vec());
            }
            s.next_upload += 1;
            let id = format!("upload-{}", s.next_upload);
            s.uploads.insert(id.clone(), (name.to_string(), body.to_vec()));
            Resp::new(202)
                .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
                .header("Docker-Upload-UUID", id)
                .header("Range", "0-0")
        }
        ("PATCH", id) => {
            let Some((_, data)) = s.uploads.get_mut(id) else {
                return Resp::error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown");
            };
            data.extend_from_slice(body);
            let end = data.len().saturating_sub(1);
            Resp::new(202)
                .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
                .header("Docker-Upload-UUID", id)
                .header("Range", format!("0-{end}"))
        }
        ("PUT", id) => {
            let Some((_, mut data)) = s.uploads.remove(id) else {
                return Resp::error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown");
            };
            data.extend_from_slice(body);
            let Some(d) = query.get("digest") else {
                return Resp::error(400, "DIGEST_INVALID", "digest missing");
            };
            finish_upload(s, name, d, data)
        }
        ("DELETE", id) => {
            s.uploads.remove(id);
            Resp::new(204)
        }
        ("GET", id) => match s.uploads.get(id) {
            Some((_, data)) => Resp::new(204)
                .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
                .header("Range", format!("0-{}", data.len().saturating_sub(1))),
            None => Resp::error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown"),
        },
        _ => Resp::error(405, "UNSUPPORTED", "method not allowed"),
    }
}

fn finish_upload(s: &mut State, name: &str, digest: &str, data: Vec<u8>) -> Resp {
    if sha256_digest(&data) != digest {
        return Resp::error(
            400,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
        );
    }
    s.content.insert(digest.to_string(), data);
    s.repos.entry(name.to_string()).or_default().blobs.insert(digest.to_string());
    s.counters.blob_uploads += 1;
    Resp::new(201)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest)
}

fn manifest(s: &mut State, m: &str, name: &str, reference: &str, req: &Request) -> Resp {
    match m {
        "GET" | "HEAD" => {
            let Some(repo) = s.repos.get(name) else {
                return Resp::error(404, "NAME_UNKNOWN", "repository name not known to registry");
            };
            let digest = if is_digest(reference) {
                reference.to_string()
            } else {
                match repo.tags.get(reference) {
                    Some(d) => d.clone(),
                    None => return Resp::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
                }
            };
            let Some((ct, bytes)) = repo.manifests.get(&digest) else {
                return Resp::error(404, "MANIFEST_UNKNOWN", "manifest unknown");
            };
            Resp::new(200)
                .header("Content-Type", ct.clone())
                .header("Docker-Content-Digest", digest)
                .body(bytes.clone())
        }
        "PUT" => {
            let bytes = req.body.clone();
            let digest = sha256_digest(&bytes);
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                return Resp::error(400, "MANIFEST_INVALID", "manifest invalid: not JSON");
            };
            if is_digest(reference) && reference != digest {
                return Resp::error(400, "DIGEST_INVALID", "digest does not match manifest");
            }
            let ct = req
                .headers
                .get("content-type")
                .cloned()
                .or_else(|| v["mediaType"].as_str().map(str::to_string))
                .unwrap_or_default();
            let repo = s.repos.entry(name.to_string()).or_default();
            // Referenced content must exist (children are pushed before parents).
            let mut blobs: Vec<&Value> = Vec::new();
            if v["config"].is_object() {
                blobs.push(&v["config"]);
            }
            if let Some(l) = v["layers"].as_array() {
                blobs.extend(l.iter());
            }
            for b in blobs {
                let d = b["digest"].as_str().unwrap_or_default();
                if !repo.blobs.contains(d) {
                    return Resp::error(
                        400,
                        "MANIFEST_BLOB_UNKNOWN",
                        &format!("blob unknown to registry: {d}"),
                    );
                }
            }
            if let Some(children) = v["manifests"].as_array() {
                for c in children {
                    let d = c["digest"].as_str().unwrap_or_default();
                    if !repo.manifests.contains_key(d) {
                        return Resp::error(
                            400,
                            "MANIFEST_UNKNOWN",
                            &format!("manifest unknown: {d}"),
                        );
                    }
                }
            }
            repo.manifests.insert(digest.clone(), (ct, bytes));
            if !is_digest(reference) {
                repo.tags.insert(reference.to_string(), digest.clone());
                if is_tag_schema_tag(reference) {
                    s.counters.tag_schema_pushes += 1;
                }
            }
            s.counters.manifest_puts += 1;
            let mut resp = Resp::new(201)
                .header("Location", format!("/v2/{name}/manifests/{digest}"))
                .header("Docker-Content-Digest", digest);
            if let Some(subject) = v["subject"]["digest"].as_str() {
                resp = resp.header("OCI-Subject", subject);
            }
            resp
        }
        _ => Resp::error(405, "UNSUPPORTED", "method not allowed"),
    }
}

fn referrers(s: &mut State, name: &str, digest: &str, query: &HashMap<String, String>) -> Resp {
    let artifact_type = query.get("artifactType");
    if !is_digest(digest) {
        return Resp::error(400, "DIGEST_INVALID", "invalid digest");
    }
    let mut out = Vec::new();
    if let Some(repo) = s.repos.get(name) {
        for (d, (ct, bytes)) in &repo.manifests {
            let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
                continue;
            };
            if v["subject"]["digest"].as_str() != Some(digest) {
                continue;
            }
            let at = v["artifactType"]
                .as_str()
                .or_else(|| v["config"]["mediaType"].as_str())
                .unwrap_or_default()
                .to_string();
            if artifact_type.is_some_and(|f| *f != at) {
                continue;
            }
            let mut desc = json!({
                "mediaType": v["mediaType"].as_str().unwrap_or(ct),
                "digest": d,
                "size": bytes.len(),
                "artifactType": at,
            });
            if v["annotations"].is_object() {
                desc["annotations"] = v["annotations"].clone();
            }
            out.push(desc);
        }
    }
    // One page of them when paged: `page` counts from 0.
    let mut next = None;
    if let Some(per) = s.referrers_page {
        let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let rest: Vec<Value> = out.into_iter().skip(page * per).collect();
        if rest.len() > per {
            let filter = artifact_type
                .map(|t| {
                    format!(
                        "&artifactType={}",
                        url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
                    )
                })
                .unwrap_or_default();
            next = Some(format!(
                "</v2/{name}/referrers/{digest}?page={}{filter}>; rel=\"next\"",
                page + 1
            ));
        }
        out = rest.into_iter().take(per).collect();
    }
    let mut resp = Resp::new(200).header("Content-Type", OCI_INDEX).body(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": out,
        }))
        .unwrap(),
    );
    if let Some(link) = next {
        resp = resp.header("Link", link);
    }
    if artifact_type.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    resp
}
