//! Records the git commit and the build date for `oras version` and `--version`.
//!
//! Release builds set `ORAS_BUILD_COMMIT` and `SOURCE_DATE_EPOCH` so that the same source gives the
//! same binary (reproducible builds); a developer build asks git and the clock. A build from a
//! source tree without git (a crate tarball, `cargo install` from a copy) says `unknown`.

// The pure parts, in a file of their own that tests/it/version.rs includes to test them.
#[path = "build/version_line.rs"]
mod version_line;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use version_line::{civil_from_days, is_plain};

fn main() {
    println!("cargo:rerun-if-env-changed=ORAS_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());

    // Only this crate's own checkout names the commit: a source tree unpacked inside another
    // repository (a vendored copy) would otherwise report that repository's commit.
    let own_checkout = git(&manifest_dir, &["rev-parse", "--show-toplevel"])
        .and_then(|top| std::fs::canonicalize(top).ok())
        .is_some_and(|top| std::fs::canonicalize(&manifest_dir).is_ok_and(|dir| dir == top));
    let commit = match std::env::var("ORAS_BUILD_COMMIT") {
        Ok(c) if is_plain(&c) => c,
        // Set but unusable: a mistake of the pipeline that set it, said now rather than shipped.
        Ok(c) if !c.is_empty() => panic!(
            "ORAS_BUILD_COMMIT must be a short commit name (letters, digits, -._+), not {c:?}"
        ),
        _ if own_checkout => git(&manifest_dir, &["rev-parse", "--short", "HEAD"])
            .filter(|c| is_plain(c))
            .unwrap_or_else(|| "unknown".into()),
        _ => "unknown".into(),
    };
    if own_checkout {
        watch_git_head(&manifest_dir);
    } else {
        // No git: nothing can change the commit, and without any rerun-if line cargo would re-run
        // this script whenever any file of the package changes.
        println!("cargo:rerun-if-changed=build.rs");
    }

    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => match s.trim().parse::<i64>() {
            Ok(secs) => secs,
            // A malformed value is a mistake in a release pipeline: failing says so (as the
            // reproducible-builds specification asks), where a silent "now" would make a build that
            // claims to be reproducible differ from run to run.
            Err(_) => panic!("SOURCE_DATE_EPOCH must be whole seconds since 1970-01-01, not {s:?}"),
        },
        Err(_) => {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
        }
    };
    let (y, m, d) = civil_from_days(epoch.div_euclid(86_400));

    println!("cargo:rustc-env=ORAS_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=ORAS_BUILD_DATE={y:04}-{m:02}-{d:02}");
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// Re-runs this script when the checked-out commit changes (a new commit, a checkout), not on every
/// source edit. Only files that exist are named: cargo re-runs the script every build for a missing one.
fn watch_git_head(dir: &Path) {
    let mut watched = Vec::new();
    if let Some(head) = git(dir, &["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]) {
        watched.push(PathBuf::from(head));
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(dir, &["rev-parse", "--path-format=absolute", "--git-path", &branch]) {
            watched.push(PathBuf::from(p));
        }
    }
    if let Some(p) = git(dir, &["rev-parse", "--path-format=absolute", "--git-path", "packed-refs"])
    {
        watched.push(PathBuf::from(p));
    }
    for p in watched.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    // Without any rerun-if line cargo would re-run this script whenever any file of the package changes.
    println!("cargo:rerun-if-changed=build.rs");
}
