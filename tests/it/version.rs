//! End-to-end tests of `oras version` and `oras --version`: both print the crate's version, the
//! git commit and the build date that `build.rs` recorded, in one line of the same form.

use crate::harness::oras;
use std::process::Command;

// The build script's value check and date arithmetic (build/version_line.rs), tested here with
// known values: they are not part of the crate.
#[path = "../../build/version_line.rs"]
mod version_line;

/// Runs the binary with `args`; its stdout, after checking that it succeeded with nothing on stderr.
#[track_caller]
fn oras_stdout(args: &[&str]) -> String {
    let run = oras(args);
    run.ok();
    assert!(run.stderr.is_empty(), "wrote to stderr:\n{}", run.describe());
    String::from_utf8(run.stdout).expect("UTF-8 stdout")
}

/// The (commit, date) of a line `oras <version> (commit <commit>, built <date>)`, after checking the
/// rest of it.
fn fields(line: &str) -> (String, String) {
    let prefix = format!("oras {} (commit ", env!("CARGO_PKG_VERSION"));
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    let rest = rest
        .strip_suffix(")\n")
        .unwrap_or_else(|| panic!("{line:?} is not one line ending in ')'"));
    let (commit, date) =
        rest.split_once(", built ").unwrap_or_else(|| panic!("{line:?} has no build date"));
    (commit.to_string(), date.to_string())
}

#[test]
fn version_and_dash_dash_version_print_the_cargo_version_the_commit_and_the_build_date() {
    let long = oras_stdout(&["version"]);
    assert_eq!(
        oras_stdout(&["--version"]),
        long,
        "--version prints the same line as `oras version`"
    );
    let (commit, date) = fields(&long);

    // The commit: the one given to the build, or the checkout's own when the crate is the top of a
    // git checkout.
    assert!(
        !commit.is_empty()
            && commit.chars().all(|c| c.is_ascii_alphanumeric() || "-._+".contains(c)),
        "commit {commit:?}"
    );
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let own_checkout = git(&["rev-parse", "--show-toplevel"])
        .and_then(|top| std::fs::canonicalize(top).ok())
        == std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).ok();
    let head = if own_checkout { git(&["rev-parse", "HEAD"]) } else { None };
    match (std::env::var("ORAS_BUILD_COMMIT"), head) {
        (Ok(given), _) if !given.is_empty() => {
            assert_eq!(commit, given, "ORAS_BUILD_COMMIT is what the line names")
        }
        (_, Some(head)) => {
            assert!(
                commit.len() >= 7 && head.starts_with(&commit),
                "commit {commit:?} is not a short form of HEAD {head:?}"
            )
        }
        (_, None) => assert_eq!(
            commit, "unknown",
            "no git checkout and no ORAS_BUILD_COMMIT: nothing to name"
        ),
    }

    // The date: YYYY-MM-DD, and not after today unless the build was given a date.
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&parts)
                .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_digit())),
        "date {date:?}"
    );
    if std::env::var_os("SOURCE_DATE_EPOCH").is_none() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let (y, m, d) = version_line::civil_from_days((now / 86_400) as i64);
        assert!(date <= format!("{y:04}-{m:02}-{d:02}"), "built {date} is after today");
    }
}

#[test]
fn every_subcommand_s_version_flag_names_the_same_build() {
    let long = oras_stdout(&["version"]);
    let (commit, date) = fields(&long);
    // propagate_version: `oras backup --version` prints the subcommand's name and the same version.
    let backup = oras_stdout(&["backup", "--version"]);
    assert_eq!(
        backup,
        format!("oras-backup {} (commit {commit}, built {date})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_build_script_counts_days_to_the_right_calendar_date() {
    for (days, want) in [
        (0, (1970, 1, 1)),
        (-1, (1969, 12, 31)),
        (951_782_400 / 86_400, (2000, 2, 29)),
        (951_868_800 / 86_400, (2000, 3, 1)),
        (1_709_164_800 / 86_400, (2024, 2, 29)),
        (1_796_342_400 / 86_400, (2026, 12, 4)),
        (4_102_444_800 / 86_400, (2100, 1, 1)),
    ] {
        assert_eq!(version_line::civil_from_days(days), want, "day {days}");
    }
    assert!(version_line::is_plain("1a2b3c4") && version_line::is_plain("v1.2.3-rc.1"));
    assert!(
        !version_line::is_plain("")
            && !version_line::is_plain("a b")
            && !version_line::is_plain("x\n")
            && !version_line::is_plain(&"a".repeat(65))
    );
}
