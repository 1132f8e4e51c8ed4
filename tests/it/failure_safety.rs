//! Failure safety against real registries: flaky networks (error storms, resets, stalls,
//! corrupted bytes) either leave a run successful with identical digests or make it fail
//! cleanly with nothing half-written; a registry that dies mid-transfer gives a clear error,
//! never a hang, and the same command resumes once it is back; Ctrl-C/SIGTERM stop a run
//! within a second or two with exit code 130 and no temporary files, and a re-run completes
//! (a restore pushing only what is missing).

use crate::harness;

use harness::client::{digest_hex, sha256_digest};
use harness::fault_proxy::{Fault, FaultProxy};
use harness::fault_proxy_safety::{Direction, SafetyProxy};
use harness::fixtures::{
    self, pseudo_random, Builder, RepoFixture, OCI_LAYER_GZIP, SIGNATURE_TYPE,
};
use harness::layout::Layout;
use harness::relay::Match;
use harness::run::Running;
use harness::{
    assert_layout_holds, assert_repo_matches, backup, restore, s, tempdir, Client, Oras, Registry,
    Run,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Size of the layer that is in flight when the tests strike, and the relay's pace for it.
const BIG: usize = 16 << 20;
const SLOW: u64 = 3 << 20;
/// How far the big layer has got when a test strikes: well under way, far from done.
const UNDER_WAY: u64 = 1 << 20;

/// The longest a signalled run may take to exit: the binary's own limits for deleting the upload
/// sessions it left open and for letting its tasks drop, with room for a loaded 2-core machine.
fn exit_bound() -> Duration {
    oras::interrupt::ABANDON_LIMIT + oras::interrupt::SHUTDOWN_LIMIT + Duration::from_secs(3)
}

/// The longest a run may take to give up on a registry that went away: the transport's retry budget
/// (no retry starts after it), with room for the attempt in flight and a loaded machine.
fn give_up_bound() -> Duration {
    oras::registry::transport::RetryPolicy::default().max_elapsed + Duration::from_secs(30)
}

/// The longest a test waits for something it expects to happen while a run goes on.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `v1`: an image with a 16 MiB layer and a small one, signed; `v2`: a small image.
fn push_big(c: &Client, repo: &str) -> (RepoFixture, String) {
    let mut b = Builder::new(c, repo);
    let big = b.blob(OCI_LAYER_GZIP, &pseudo_random("big-layer", BIG));
    let small = b.blob(OCI_LAYER_GZIP, &pseudo_random("small-layer", 4096));
    let v1 = b.oci_image_with_layers(Some("v1"), "big", "amd64", &[small, big.clone()]);
    b.referrer(&v1, SIGNATURE_TYPE, b"signature-of-big", "sig");
    b.oci_image(Some("v2"), "small", "amd64");
    (b.finish(), big.digest)
}

/// Every file under `dir` whose name marks it as temporary.
fn partial_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(partial_files(&p));
        } else if e.file_name().to_string_lossy().contains(".partial") {
            out.push(p);
        }
    }
    out
}

/// The blobs an interrupted directory backup kept: every one must hash to its name.
#[track_caller]
fn kept_blobs(out: &Path) -> Vec<String> {
    let dir = out.join("blobs/sha256");
    let mut kept = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            format!("sha256:{name}"),
            "kept blob {name} does not hash to its name"
        );
        kept.push(format!("sha256:{name}"));
    }
    kept
}

/// After a failed or interrupted backup to `out` (a .tar, or a directory that did not exist):
/// nothing that could pass for a backup, and no temporary file, is left.
#[track_caller]
fn nothing_half_written(out: &Path) -> Vec<String> {
    let parent = out.parent().unwrap();
    assert!(
        partial_files(parent).is_empty(),
        "temporary files left behind: {:?}",
        partial_files(parent)
    );
    if out.extension().is_some_and(|e| e == "tar") {
        assert!(!out.exists(), "an incomplete archive was left at {}", out.display());
        return Vec::new();
    }
    assert!(!out.join("index.json").exists(), "an incomplete directory backup has an index.json");
    if out.exists() {
        kept_blobs(out)
    } else {
        Vec::new()
    }
}

/// `oras <args>` in the background, to be struck while it works.
fn spawn(args: &[&str]) -> Running {
    Oras::new(args).spawn()
}

/// Waits up to `limit` for a struck run to end; the run and how long it took to end.
#[track_caller]
fn ended(bg: Running, limit: Duration) -> (Run, Duration) {
    let started = Instant::now();
    let run = bg.wait(limit);
    (run, started.elapsed())
}

/// Waits until `cond` holds (the background run must still be going), up to [`PATIENCE`].
#[track_caller]
fn wait_until(bg: &Running, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(bg.is_running(), "oras ended before {what}");
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Exit 130 within [`exit_bound`] of the signal, saying it was interrupted, without an error line.
#[track_caller]
fn assert_interrupted(run: &Run, took: Duration) {
    assert_eq!(run.code, Some(130), "expected exit code 130:\n{run:?}");
    assert!(
        took <= exit_bound(),
        "took {took:?} to stop after the signal (bound {:?}):\n{run:?}",
        exit_bound()
    );
    assert!(!run.output().contains("panicked"), "panicked:\n{run:?}");
    assert!(run.stderr.contains("Interrupted"), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Flaky registries: error storms, resets, stalls.

#[test]
fn error_storms_resets_and_stalls_still_give_identical_backups_and_restores() {
    let src = Registry::start();
    let fx = fixtures::push_all_kinds(&Client::new(&src.host()), "team/app");
    let proxy = FaultProxy::start(&src.host());
    let dir = tempdir();
    let name = format!("{}/team/app", proxy.host());
    for out in [dir.path().join("storm.tar"), dir.path().join("storm-dir")] {
        proxy.clear();
        proxy.inject(Match::method("GET").path("/tags/list"), Fault::too_many_requests("1"), 2);
        proxy.inject(Match::method("GET").path("/manifests/"), Fault::unavailable(), 3);
        proxy.inject(Match::method("GET").path("/blobs/"), Fault::cut_body(100), 3);
        proxy.inject(Match::method("GET").path("/blobs/"), Fault::status(502), 2);
        proxy.inject(Match::method("GET").path("/blobs/"), Fault::Close, 2);
        proxy.inject(Match::method("GET").path("/blobs/"), Fault::Delay(Duration::from_secs(2)), 1);
        proxy.inject(Match::method("GET").path("/manifests/"), Fault::cut_body(10), 2);
        proxy.inject(Match::any(), Fault::status(504), 2);
        let before = proxy.fired();
        backup(&["--include-referrers", "-o", s(&out), &name]).ok();
        assert!(
            proxy.fired() - before >= 10,
            "the faults did not fire ({} of them)",
            proxy.fired() - before
        );
        assert!(partial_files(dir.path()).is_empty());
        assert_layout_holds(&Layout::read(&out), &[(&name, &fx)], true);
    }

    // Restore through a flaky proxy in front of an empty registry.
    let dst = Registry::start();
    let dproxy = FaultProxy::start(&dst.host());
    dproxy.inject(Match::method("POST").path("/blobs/uploads/"), Fault::unavailable(), 2);
    dproxy.inject(Match::method("HEAD").path("/blobs/"), Fault::too_many_requests("1"), 2);
    dproxy.inject(Match::method("PUT").path("/blobs/uploads/"), Fault::unavailable(), 2);
    dproxy.inject(Match::method("PUT").path("/blobs/uploads/"), Fault::Close, 1);
    dproxy.inject(Match::method("PUT").path("/manifests/"), Fault::unavailable(), 3);
    dproxy.inject(Match::method("PUT").path("/manifests/"), Fault::Close, 1);
    dproxy.inject(
        Match::method("HEAD").path("/manifests/"),
        Fault::Delay(Duration::from_secs(2)),
        1,
    );
    restore(&["--input", s(&dir.path().join("storm.tar")), &format!("{}/team/app", dproxy.host())])
        .ok();
    assert!(dproxy.fired() >= 8, "the faults did not fire ({})", dproxy.fired());
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);
}

#[test]
fn a_registry_that_keeps_failing_fails_the_run_cleanly() {
    let src = Registry::start();
    let fx = fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let proxy = FaultProxy::start(&src.host());
    let dir = tempdir();
    let name = format!("{}/team/app", proxy.host());
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::unavailable(), 100_000);
    for out in [dir.path().join("fail.tar"), dir.path().join("fail-dir")] {
        let started = Instant::now();
        let run = backup(&["--include-referrers", "-o", s(&out), &name]);
        run.fails(1, &[&proxy.host(), "blob", "503"]);
        assert!(started.elapsed() < give_up_bound(), "gave up only after {:?}", started.elapsed());
        nothing_half_written(&out);
    }
    // Resets on every blob transfer.
    proxy.clear();
    proxy.inject(Match::method("GET").path("/blobs/"), Fault::cut_body(50), 100_000);
    let out = dir.path().join("reset.tar");
    backup(&["-o", s(&out), &name]).fails(1, &[&proxy.host(), "blob"]);
    nothing_half_written(&out);

    // A restore whose manifests are always refused pushes no tag.
    proxy.clear();
    let good = dir.path().join("good.tar");
    backup(&["--include-referrers", "-o", s(&good), &format!("{}/team/app", src.host())]).ok();
    let dst = Registry::start();
    let dproxy = FaultProxy::start(&dst.host());
    dproxy.inject(Match::method("PUT").path("/manifests/"), Fault::unavailable(), 100_000);
    let run = restore(&["--input", s(&good), &format!("{}/team/app", dproxy.host())]);
    run.fails(1, &[&dproxy.host(), "manifest", "503"]);
    let d = Client::new(&dst.host());
    assert!(d.list_tags("team/app").is_empty(), "tags were pushed: {:?}", d.list_tags("team/app"));
    assert!(!d.manifest_exists("team/app", fx.tag("v1")));
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where this process may not mount (it takes root).
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempdir();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", s(dir.path())])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|st| st.success());
        mounted.then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
#[ignore = "mounts a tmpfs, which takes root: scripts/test.sh runs it when root (or: cargo test -- --ignored)"]
fn a_backup_that_cannot_fit_is_refused_before_its_blobs_are_downloaded() {
    let disk = SmallDisk::mount("4m").expect("mounting a 4 MiB tmpfs failed: this test needs root");
    let src = Registry::start();
    let (_, big) = push_big(&Client::new(&src.host()), "team/app");
    let proxy = FaultProxy::start(&src.host());
    let name = format!("{}/team/app", proxy.host());
    for out in [disk.dir.path().join("app.tar"), disk.dir.path().join("app-dir")] {
        let run = backup(&["--include-referrers", "-o", s(&out), &name]);
        run.fails(1, &["not enough free space", s(&out), "MiB", "--output"]);
        let fetched: Vec<String> = proxy
            .seen()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains(&big))
            .map(|r| r.path)
            .collect();
        assert!(
            fetched.is_empty(),
            "the 16 MiB layer was downloaded before the refusal: {fetched:?}"
        );
        assert!(!out.exists(), "{} was left behind", out.display());
        assert!(partial_files(disk.dir.path()).is_empty(), "temporary files were left behind");
    }
    // What fits is written as usual.
    let out = disk.dir.path().join("small.tar");
    backup(&["-o", s(&out), &format!("{name}:v2")]).ok();
    assert!(out.is_file());
}

// ---------------------------------------------------------------------------------------------
// Corrupted bytes.

#[test]
fn corrupted_downloads_are_retried_or_refused() {
    let src = Registry::start();
    let fx = fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let proxy = SafetyProxy::start(&src.host());
    let dir = tempdir();
    let name = format!("{}/team/app", proxy.host());
    let layer =
        fx.manifests[fx.tag("v1")].json()["layers"][0]["digest"].as_str().unwrap().to_string();

    // Corrupted twice: the third attempt is clean; the backup is identical.
    for out in [dir.path().join("once.tar"), dir.path().join("once-dir")] {
        proxy.corrupt("GET", &layer, Direction::Response, 700, 2);
        backup(&["--include-referrers", "-o", s(&out), &name]).ok();
        assert_layout_holds(&Layout::read(&out), &[(&name, &fx)], true);
    }
    assert_eq!(proxy.fired(), 4);

    // Always corrupted: the run fails naming the blob, nothing is left.
    proxy.corrupt("GET", &layer, Direction::Response, 700, 100_000);
    for out in [dir.path().join("always.tar"), dir.path().join("always-dir")] {
        let run = backup(&["--include-referrers", "-o", s(&out), &name]);
        run.fails(1, &[digest_hex(&layer), "digest"]);
        let kept = nothing_half_written(&out);
        assert!(!kept.contains(&layer), "the corrupt blob was kept");
    }
    proxy.clear();

    // A manifest fetched by digest (the referrers are) that is always corrupted.
    let referrer = fx.referrers[fx.tag("v1")][0].digest.clone();
    proxy.corrupt("GET", &format!("/manifests/{referrer}"), Direction::Response, 20, 100_000);
    let out = dir.path().join("manifest.tar");
    backup(&["--include-referrers", "-o", s(&out), &name]).fails(1, &[digest_hex(&referrer)]);
    nothing_half_written(&out);
    proxy.clear();
}

/// A manifest fetched by tag has no digest to check against but the registry's
/// `Docker-Content-Digest` header: a corruption that keeps the JSON valid must not become a
/// backup with a different digest.
#[test]

fn a_corrupted_manifest_fetched_by_tag_is_not_backed_up_under_another_digest() {
    let src = Registry::start();
    let fx = fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let proxy = SafetyProxy::start(&src.host());
    let dir = tempdir();
    let name = format!("{}/team/app", proxy.host());
    let bytes = &fx.manifests[fx.tag("v1")].bytes;
    // Inside the title annotation's value: flipping it keeps the JSON valid.
    let at = bytes.windows(5).position(|w| w == b"-img\"").expect("title annotation") as u64 + 1;
    proxy.corrupt("GET", "/manifests/v1", Direction::Response, at, 100_000);
    let out = dir.path().join("tag.tar");
    let run = backup(&["-o", s(&out), &format!("{name}:v1")]);
    assert!(proxy.fired() > 0);
    if run.code == Some(0) {
        let layout = Layout::read(&out);
        let v1 = layout
            .entries()
            .into_iter()
            .find(|e| e["annotations"][harness::layout::REF_NAME] == "v1")
            .unwrap();
        assert_eq!(
            v1["digest"],
            fx.tag("v1"),
            "a corrupted manifest was backed up under another digest"
        );
    } else {
        run.fails(1, &["v1"]);
        nothing_half_written(&out);
    }
}

#[test]
fn corrupted_uploads_are_retried_or_refused() {
    let src = Registry::start();
    let fx = fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let dir = tempdir();
    let good = dir.path().join("good.tar");
    backup(&["--include-referrers", "-o", s(&good), &format!("{}/team/app", src.host())]).ok();
    let layer =
        fx.manifests[fx.tag("v1")].json()["layers"][0]["digest"].as_str().unwrap().to_string();

    // The closing PUT of the layer's upload carries its digest; corrupt its body twice.
    let dst = Registry::start();
    let proxy = SafetyProxy::start(&dst.host());
    proxy.corrupt("PUT", &format!("digest={layer}"), Direction::Request, 700, 2);
    restore(&["--input", s(&good), &format!("{}/team/app", proxy.host())]).ok();
    assert_eq!(proxy.fired(), 2);
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);

    // Every manifest upload corrupted: the registry refuses them all; no tag appears.
    let dst = Registry::start();
    let proxy = SafetyProxy::start(&dst.host());
    proxy.corrupt("PUT", "/manifests/", Direction::Request, 30, 100_000);
    let run = restore(&["--input", s(&good), &format!("{}/team/app", proxy.host())]);
    run.fails(1, &[&proxy.host(), "manifest"]);
    assert!(Client::new(&dst.host()).list_tags("team/app").is_empty());
}

/// Large blobs are checked while they are sent into upload sessions that stay invisible: a body
/// corrupted on the way is refused at the commit and sent again; a registry that will not take a blob
/// as one PATCH gets the plain upload.
#[test]
fn held_back_uploads_survive_corruption_and_refusal() {
    let src = Registry::start();
    let dir = tempdir();
    let (fx, big, tar) = big_backup(&src, dir.path());

    let dst = Registry::start();
    let proxy = SafetyProxy::start(&dst.host());
    proxy.corrupt("PATCH", "/blobs/uploads/", Direction::Request, 1 << 20, 1);
    restore(&["--input", s(&tar), &format!("{}/big/app", proxy.host())]).ok();
    assert_eq!(proxy.fired(), 1);
    assert_repo_matches(&Client::new(&dst.host()), "big/app", &fx, true);

    let dst = Registry::start();
    let proxy = FaultProxy::start(&dst.host());
    proxy.inject(Match::method("PATCH"), Fault::status(400), 100);
    restore(&["--input", s(&tar), &format!("{}/big/app", proxy.host())]).ok();
    assert!(
        proxy.fired() >= 1,
        "no PATCH was sent (the test needs the big layer to be sent ahead)"
    );
    assert!(proxy
        .seen()
        .iter()
        .any(|r| r.method == "PUT" && r.path.contains(&format!("digest={big}"))));
    assert_repo_matches(&Client::new(&dst.host()), "big/app", &fx, true);
}

/// Damage at the end of a large blob is found by the check while the uploads run beside it: the
/// upload held back meanwhile is abandoned and nothing becomes visible.
#[test]
fn a_damaged_large_blob_found_while_uploading_leaves_nothing_visible() {
    let src = Registry::start();
    let mut b = Builder::new(&Client::new(&src.host()), "big/app");
    let intact = b.blob(OCI_LAYER_GZIP, &pseudo_random("intact-layer", 2 << 20));
    // Large enough that checking it takes longer than sending the intact layer.
    let damaged = pseudo_random("damaged-layer", 128 << 20);
    let bad = b.blob(OCI_LAYER_GZIP, &damaged);
    b.oci_image_with_layers(Some("v1"), "big", "amd64", &[intact, bad.clone()]);
    let fx = b.finish();
    let dir = tempdir();
    let layout = dir.path().join("layout");
    let tar = dir.path().join("backup.tar");
    backup(&["-o", s(&layout), &format!("{}/big/app", src.host())]).ok();
    backup(&["-o", s(&tar), &format!("{}/big/app", src.host())]).ok();
    let last = damaged.len() - 10;
    let in_layout = layout.join("blobs/sha256").join(digest_hex(&bad.digest));
    let mut bytes = std::fs::read(&in_layout).unwrap();
    bytes[last] ^= 0xff;
    std::fs::write(&in_layout, &bytes).unwrap();
    let mut t = std::fs::read(&tar).unwrap();
    let at = t.windows(64).position(|w| w == &damaged[..64]).expect("the layer is in the tar");
    t[at + last] ^= 0xff;
    std::fs::write(&tar, &t).unwrap();

    for input in [&layout, &tar] {
        let dst = Registry::start();
        let proxy = FaultProxy::start(&dst.host());
        let run = restore(&["--input", s(input), &format!("{}/big/app", proxy.host())]);
        run.fails(1, &["the backup is damaged, nothing was pushed", digest_hex(&bad.digest)]);
        let d = Client::new(&dst.host());
        assert!(d.list_tags("big/app").is_empty(), "tags were pushed");
        for blob in fx.blobs.keys() {
            assert!(
                !d.blob_exists("big/app", blob),
                "blob {blob} became visible ({})",
                input.display()
            );
        }
        let seen = proxy.seen();
        assert!(!seen.iter().any(|r| r.method == "PUT"), "something was committed or pushed");
        assert!(
            seen.iter().any(|r| r.method == "PATCH"),
            "no upload was held back while the check ran (the test needs one)"
        );
        assert!(
            seen.iter().any(|r| r.method == "DELETE" && r.path.contains("/blobs/uploads/")),
            "the intact layer's held upload was not abandoned"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The registry dies mid-transfer, and comes back.

/// Kills the source registry while the big layer streams (through a slow relay), checks the
/// failure, restarts it on the same storage and re-runs: the backup completes, identical, and a
/// directory backup does not fetch again what it kept.
fn kill_mid_backup_then_resume(out: &Path) {
    let mut src = Registry::start();
    let (fx, big) = push_big(&Client::new(&src.host()), "big/app");
    let proxy = SafetyProxy::start(&src.host());
    proxy.throttle(SLOW);
    let name = format!("{}/big/app", proxy.host());
    let args = ["backup", "--no-tty", "--include-referrers", "-o", s(out), &name];
    let bg = spawn(&args);
    wait_until(&bg, "the big layer to be well under way", || {
        proxy.relayed("GET", digest_hex(&big)) >= UNDER_WAY
    });
    src.kill();
    let (run, took) = ended(bg, give_up_bound() + PATIENCE);
    run.fails(1, &[&proxy.host(), digest_hex(&big)]);
    assert!(took < give_up_bound(), "took {took:?} to give up on a dead registry");
    let kept = nothing_half_written(out);
    assert!(!kept.contains(&big), "the interrupted layer was kept");

    src.restart();
    proxy.throttle(0);
    proxy.forget();
    backup(&["--include-referrers", "-o", s(out), &name]).ok();
    assert_layout_holds(&Layout::read(out), &[(&name, &fx)], true);
    for d in &kept {
        assert!(!proxy.saw("GET", &format!("/blobs/{d}")), "blob {d} was kept but fetched again");
    }
    assert!(partial_files(out.parent().unwrap()).is_empty());
}

#[test]
fn registry_killed_mid_backup_to_a_directory_then_restarted_resumes() {
    let dir = tempdir();
    kill_mid_backup_then_resume(&dir.path().join("backup"));
}

#[test]
fn registry_killed_mid_backup_to_a_tar_then_restarted_completes() {
    let dir = tempdir();
    kill_mid_backup_then_resume(&dir.path().join("backup.tar"));
}

/// How many bytes of the big layer's upload have gone through: held back (a PATCH into a session,
/// while the backup is being checked; no other blob is large enough to be held) or plain (a PUT
/// carrying its digest).
fn big_upload_relayed(proxy: &SafetyProxy, big: &str) -> u64 {
    proxy.relayed("PATCH", "/blobs/uploads/").max(proxy.relayed("PUT", &format!("digest={big}")))
}

/// A tar backup of the big fixture, made directly (no relay).
fn big_backup(src: &Registry, dir: &Path) -> (RepoFixture, String, PathBuf) {
    let (fx, big) = push_big(&Client::new(&src.host()), "big/app");
    let tar = dir.join("big.tar");
    backup(&["--include-referrers", "-o", s(&tar), &format!("{}/big/app", src.host())]).ok();
    (fx, big, tar)
}

#[test]
fn registry_killed_mid_restore_then_restarted_completes() {
    let src = Registry::start();
    let dir = tempdir();
    let (fx, big, tar) = big_backup(&src, dir.path());
    let mut dst = Registry::start();
    let proxy = SafetyProxy::start(&dst.host());
    proxy.throttle(SLOW);
    let target = format!("{}/big/app", proxy.host());
    let bg = spawn(&["restore", "--no-tty", "--input", s(&tar), &target]);
    wait_until(&bg, "the big layer's upload to be well under way", || {
        big_upload_relayed(&proxy, &big) >= UNDER_WAY
    });
    dst.kill();
    let (run, took) = ended(bg, give_up_bound() + PATIENCE);
    run.fails(1, &[&proxy.host(), digest_hex(&big)]);
    assert!(took < give_up_bound(), "took {took:?} to give up on a dead registry");
    dst.restart();
    let d = Client::new(&dst.host());
    assert!(d.list_tags("big/app").is_empty(), "tags were pushed by a failed restore");
    proxy.throttle(0);
    restore(&["--input", s(&tar), &target]).ok();
    assert_repo_matches(&d, "big/app", &fx, true);
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C and SIGTERM.

fn interrupt_mid_backup(out: &Path, signal: libc::c_int) {
    let src = Registry::start();
    let (fx, big) = push_big(&Client::new(&src.host()), "big/app");
    let proxy = SafetyProxy::start(&src.host());
    proxy.throttle(SLOW);
    let name = format!("{}/big/app", proxy.host());
    let bg = spawn(&["backup", "--no-tty", "--include-referrers", "-o", s(out), &name]);
    wait_until(&bg, "the big layer to be well under way", || {
        proxy.relayed("GET", digest_hex(&big)) >= UNDER_WAY
    });
    if out.extension().is_none() {
        // The directory must have kept something for the checks below: a blob that finished.
        let finished = || {
            std::fs::read_dir(out.join("blobs/sha256"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| !e.file_name().to_string_lossy().contains(".partial"))
        };
        wait_until(&bg, "a blob to be written whole into the directory", finished);
    }
    // Meanwhile: the output is only a temporary file beside the target, named for this process.
    let pid = bg.pid();
    let partial = partial_files(out.parent().unwrap());
    assert!(!partial.is_empty(), "no temporary file while the transfer runs");
    for p in &partial {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with('.') && name.ends_with(&format!(".partial-{pid}")),
            "unexpected temporary name {name}"
        );
    }
    if out.extension().is_some_and(|e| e == "tar") {
        assert!(!out.exists(), "the archive appeared before it was complete");
        assert_eq!(partial, vec![out.with_file_name(format!(".out.tar.partial-{pid}"))]);
    } else {
        assert!(!out.join("index.json").exists(), "index.json was written before the end");
        assert!(
            partial.contains(
                &out.join("blobs/sha256").join(format!(".{}.partial-{pid}", digest_hex(&big)))
            ),
            "{partial:?}"
        );
    }
    bg.signal(signal);
    let (run, took) = ended(bg, exit_bound() + PATIENCE);
    assert_interrupted(&run, took);
    let kept = nothing_half_written(out);
    assert!(!kept.contains(&big), "the interrupted layer was kept");
    if out.is_dir() {
        assert!(!kept.is_empty(), "a directory kept without any blob must have been removed");
    }
    proxy.throttle(0);
    proxy.forget();
    backup(&["--include-referrers", "-o", s(out), &name]).ok();
    assert_layout_holds(&Layout::read(out), &[(&name, &fx)], true);
    for d in &kept {
        assert!(!proxy.saw("GET", &format!("/blobs/{d}")), "blob {d} was kept but fetched again");
    }
}

#[test]
fn ctrl_c_mid_backup_to_a_tar() {
    let dir = tempdir();
    interrupt_mid_backup(&dir.path().join("out.tar"), libc::SIGINT);
}

#[test]
fn ctrl_c_mid_backup_to_a_directory() {
    let dir = tempdir();
    interrupt_mid_backup(&dir.path().join("out"), libc::SIGINT);
}

#[test]
fn sigterm_mid_backup_to_a_directory() {
    let dir = tempdir();
    interrupt_mid_backup(&dir.path().join("out"), libc::SIGTERM);
}

/// Interrupted before any blob landed (the registry stalls on the first manifest): the new
/// directory is removed, not left as an empty skeleton.
#[test]
fn ctrl_c_before_any_blob_leaves_no_skeleton() {
    let src = Registry::start();
    fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let proxy = FaultProxy::start(&src.host());
    proxy.inject(
        Match::method("GET").path("/manifests/"),
        Fault::Delay(Duration::from_secs(20)),
        1,
    );
    let dir = tempdir();
    for (i, out) in [dir.path().join("out"), dir.path().join("out.tar")].into_iter().enumerate() {
        if i > 0 {
            proxy.inject(
                Match::method("GET").path("/manifests/"),
                Fault::Delay(Duration::from_secs(20)),
                1,
            );
        }
        let seen_before = proxy.seen().len();
        let bg =
            spawn(&["backup", "--no-tty", "-o", s(&out), &format!("{}/team/app", proxy.host())]);
        wait_until(&bg, "the stalled manifest request", || {
            proxy
                .seen()
                .iter()
                .skip(seen_before)
                .any(|r| r.method == "GET" && r.path.contains("/manifests/"))
        });
        bg.signal(libc::SIGINT);
        let (run, took) = ended(bg, exit_bound() + PATIENCE);
        assert_interrupted(&run, took);
        nothing_half_written(&out);
        assert!(!out.exists(), "{} was left behind", out.display());
    }
}

#[test]
fn ctrl_c_mid_restore_then_rerun_pushes_only_what_is_missing() {
    let src = Registry::start();
    let dir = tempdir();
    let (fx, big, tar) = big_backup(&src, dir.path());
    let dst = Registry::start();
    let proxy = SafetyProxy::start(&dst.host());
    proxy.throttle(SLOW);
    let target = format!("{}/big/app", proxy.host());
    let bg = spawn(&["restore", "--no-tty", "--input", s(&tar), &target]);
    let d = Client::new(&dst.host());
    // The small blobs go once the backup is checked, while the big one is still on its way.
    let small_blob_pushed = || fx.blobs.keys().any(|b| *b != big && d.blob_exists("big/app", b));
    wait_until(&bg, "a small blob to be pushed while the big layer uploads", small_blob_pushed);
    assert!(
        big_upload_relayed(&proxy, &big) < BIG as u64,
        "the big layer's upload was done before the test could strike"
    );
    bg.signal(libc::SIGINT);
    let (run, took) = ended(bg, exit_bound() + PATIENCE);
    assert_interrupted(&run, took);
    assert!(d.list_tags("big/app").is_empty(), "an interrupted restore pushed tags");
    assert!(!d.blob_exists("big/app", &big), "the interrupted upload completed");
    let there: Vec<String> =
        fx.blobs.keys().filter(|b| d.blob_exists("big/app", b)).cloned().collect();
    assert!(!there.is_empty(), "no blob finished before the interruption (the test needs some)");

    proxy.throttle(0);
    proxy.forget();
    let run = restore(&["--format", "json", "--input", s(&tar), &target]);
    run.ok();
    let doc: serde_json::Value = serde_json::from_slice(&run.stdout).expect("one JSON document");
    let report = &doc["report"];
    assert_eq!(report["blobsSkipped"].as_u64(), Some(there.len() as u64), "{doc}");
    assert_eq!(
        report["blobsCopied"].as_u64(),
        Some((fx.blobs.len() - there.len()) as u64),
        "{doc}"
    );
    for b in &there {
        assert!(
            !proxy.saw("PUT", &format!("digest={b}")),
            "blob {b} was already there but uploaded again"
        );
    }
    assert!(proxy.saw("PUT", &format!("digest={big}")));
    assert_repo_matches(&d, "big/app", &fx, true);
}

/// Where the data of tar entry `name` ends (padded to its 512-byte block), read from the headers.
fn end_of_entry(tar: &[u8], name: &str) -> usize {
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let header = &tar[at..at + 512];
        let entry = String::from_utf8_lossy(&header[..100]).trim_end_matches('\0').to_string();
        let octal = String::from_utf8_lossy(&header[124..136])
            .trim_matches(|c: char| c == '\0' || c == ' ')
            .to_string();
        let size = usize::from_str_radix(&octal, 8).expect("octal size");
        let end = at + 512 + size.div_ceil(512) * 512;
        if entry.trim_start_matches("./") == name {
            return end;
        }
        at = end;
    }
    panic!("{name} is not in the tar");
}

/// Files under `dir`, with their sizes (what a registry keeps of upload sessions).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(tree(&e.path()));
        } else {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(format!("{} ({len})", e.path().display()));
        }
    }
    out
}

/// A stream restore holds every blob in an upload session until the whole stream is in. Stopped while
/// it waits for the rest, it deletes those sessions rather than leave their bytes to the registry's
/// expiry (a week for Distribution), and nothing is visible.
#[test]
fn ctrl_c_during_a_stream_restore_deletes_the_uploads_it_held() {
    let src = Registry::start();
    let dir = tempdir();
    let (fx, big, tar) = big_backup(&src, dir.path());
    let bytes = std::fs::read(&tar).unwrap();
    let cut = end_of_entry(&bytes, &format!("blobs/sha256/{}", digest_hex(&big)));
    let dst = Registry::start();
    let mut bg =
        Oras::new(&["restore", "--no-tty", "--input", "-", &format!("{}/big/app", dst.host())])
            .stdin_pipe()
            .spawn();
    let mut stdin = bg.stdin();
    // Everything up to the end of the big blob, then the stream pauses.
    std::io::Write::write_all(&mut stdin, &bytes[..cut]).unwrap();
    let uploads = dst.storage().join("docker/registry/v2/repositories/big/app/_uploads");
    let held = |size: usize| tree(&uploads).iter().any(|f| f.ends_with(&format!("/data ({size})")));
    wait_until(&bg, "the big blob held in an upload session", || held(BIG));
    // The registry has it all; the run must also have the answers for every blob written so far (each
    // session's latest location, the only one Distribution deletes), after which it reports each blob
    // as uploaded. A session whose opening answer has not arrived when the run stops is not known to it.
    let lines: Vec<String> = fx
        .blobs
        .keys()
        .filter(|b| end_of_entry(&bytes, &format!("blobs/sha256/{}", digest_hex(b))) <= cut)
        .map(|b| format!("Uploaded blob {}", &digest_hex(b)[..12]))
        .collect();
    assert!(lines.len() > 1, "the stream holds the big blob and others before the pause");
    let answered = || {
        let e = bg.stderr();
        lines.iter().all(|l| e.contains(l))
    };
    wait_until(&bg, "the answers for every blob streamed so far", answered);
    bg.signal(libc::SIGINT);
    let (run, took) = ended(bg, exit_bound() + PATIENCE);
    drop(stdin);
    assert_interrupted(&run, took);
    // Distribution 2.8 itself leaves a 108-byte hash-state stub of a deleted session; the bytes go.
    let kept: Vec<String> =
        tree(&uploads).into_iter().filter(|f| !f.contains("/hashstates/")).collect();
    assert_eq!(kept, Vec::<String>::new(), "upload sessions left behind with their bytes");
    let d = Client::new(&dst.host());
    assert!(
        fx.blobs.keys().all(|b| !d.blob_exists("big/app", b)),
        "a blob of the interrupted stream is visible"
    );
    assert!(d.list_tags("big/app").is_empty());
}

/// An interrupted backup into an existing, complete layout leaves it exactly as it was (its
/// index.json untouched, still verifiable); the re-run adds to it.
#[test]
fn ctrl_c_mid_backup_into_an_existing_layout_leaves_it_valid() {
    let src = Registry::start();
    let (fx, big) = push_big(&Client::new(&src.host()), "big/app");
    let proxy = SafetyProxy::start(&src.host());
    let dir = tempdir();
    let out = dir.path().join("layout");
    let name = format!("{}/big/app", proxy.host());
    backup(&["-o", s(&out), &format!("{name}:v2")]).ok();
    let index_before = std::fs::read(out.join("index.json")).unwrap();

    proxy.throttle(SLOW);
    let bg =
        spawn(&["backup", "--no-tty", "--include-referrers", "-o", s(&out), &format!("{name}:v1")]);
    wait_until(&bg, "the big layer to be well under way", || {
        proxy.relayed("GET", digest_hex(&big)) >= UNDER_WAY
    });
    bg.signal(libc::SIGINT);
    let (run, took) = ended(bg, exit_bound() + PATIENCE);
    assert_interrupted(&run, took);
    assert!(
        partial_files(dir.path()).is_empty(),
        "temporary files left: {:?}",
        partial_files(dir.path())
    );
    assert_eq!(std::fs::read(out.join("index.json")).unwrap(), index_before, "index.json changed");
    kept_blobs(&out);
    harness::oras(&["verify", s(&out)]).ok();

    proxy.throttle(0);
    backup(&["--include-referrers", "-o", s(&out), &format!("{name}:v1")]).ok();
    assert_layout_holds(&Layout::read(&out), &[(&name, &fx)], true);
}
