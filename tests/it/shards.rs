//! `backup --shard K/N` over a registry's catalog: N runs split the repositories by a stable hash
//! of their paths, and `restore --input` of every shard's archive restores what one run would.

use crate::harness;

use harness::client::sha256_digest;
use harness::fixtures::{self, RepoFixture};
use harness::layout::Layout;
use harness::{assert_repo_matches, backup, oras, restore, s, tempdir, Client, Registry};
use std::collections::BTreeSet;

/// The shard (1-based) of N that docs/cli.md says a repository path falls in: the first 8 bytes
/// of its SHA-256, big-endian, modulo N, plus one.
fn documented_shard(path: &str, n: u64) -> u64 {
    let hex = &sha256_digest(path.as_bytes())[7..23];
    u64::from_str_radix(hex, 16).expect("hex") % n + 1
}

/// The repositories an archive holds, by `oras repo ls`.
fn repos_of(archive: &std::path::Path) -> BTreeSet<String> {
    oras(&["repo", "ls", "--oci-layout", s(archive)])
        .ok()
        .stdout_str()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn shards_of_a_registry_union_to_one_run_and_restore_together() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    let mut fixtures: Vec<(String, RepoFixture)> = Vec::new();
    fixtures.push(("team/app".into(), fixtures::push_all_kinds(&c, "team/app")));
    for i in 0..6 {
        let repo = format!("proj/web{i}");
        fixtures.push((repo.clone(), fixtures::push_web(&c, &repo)));
    }
    let dir = tempdir();
    let whole = dir.path().join("whole.tar");
    backup(&["--include-referrers", "-o", s(&whole), &src.host()]).ok();

    let mut seen = BTreeSet::new();
    let mut archives = Vec::new();
    for k in 1..=3u64 {
        let out = dir.path().join(format!("shard-{k}.tar"));
        let run = backup(&[
            "--include-referrers",
            "--shard",
            &format!("{k}/3"),
            "-o",
            s(&out),
            &src.host(),
        ]);
        assert!(run.ok().stdout_str().contains(&format!("Shard {k}/3: ")), "{}", run.stdout_str());
        let held = repos_of(&out);
        for r in &held {
            let path = r.strip_prefix(&format!("{}/", src.host())).expect("full name");
            assert_eq!(documented_shard(path, 3), k, "{path} is in the shard cli.md says");
            assert!(seen.insert(r.clone()), "{r} is in two shards");
        }
        archives.push(out);
    }
    assert_eq!(seen, repos_of(&whole), "the shards hold every repository, each once");
    // Entry for entry, the shards' index.json entries are one run's.
    let entries = |p: &std::path::Path| -> BTreeSet<String> {
        Layout::read(p).entries().iter().map(|e| e.to_string()).collect()
    };
    let union: BTreeSet<String> = archives.iter().flat_map(|a| entries(a)).collect();
    assert_eq!(union, entries(&whole));

    let dst = Registry::start();
    let dst_host = dst.host();
    let mut args: Vec<&str> = archives.iter().flat_map(|a| ["--input", s(a)]).collect();
    args.push(&dst_host);
    let run = restore(&args);
    assert!(run.ok().stdout_str().contains("3 backups read as one"), "{}", run.stdout_str());
    let d = Client::new(&dst.host());
    let mut catalog = d.catalog();
    catalog.sort();
    let mut expected: Vec<String> = fixtures.iter().map(|(r, _)| r.clone()).collect();
    expected.sort();
    assert_eq!(catalog, expected);
    for (repo, fx) in &fixtures {
        assert_repo_matches(&d, repo, fx, true);
    }
}

#[test]
fn an_empty_shard_writes_an_empty_backup_that_restores_to_nothing() {
    let src = Registry::start();
    let c = Client::new(&src.host());
    fixtures::push_web(&c, "only/one");
    let n = 7;
    let empty = (1..=n).find(|&k| documented_shard("only/one", n) != k).expect("a shard");
    let dir = tempdir();
    let out = dir.path().join("empty.tar");
    let run = backup(&["--shard", &format!("{empty}/{n}"), "-o", s(&out), &src.host()]);
    assert!(run.ok().stdout_str().contains("0 of 1 repository(ies)"), "{}", run.stdout_str());
    assert!(repos_of(&out).is_empty());
    oras(&["verify", s(&out)]).ok();
    let dst = Registry::start();
    let run = restore(&["--input", s(&out), &dst.host()]);
    assert!(run.ok().stdout_str().contains("Nothing to restore"), "{}", run.stdout_str());

    for bad in ["0/3", "4/3", "3", "x/y"] {
        backup(&["--shard", bad, "-o", s(&dir.path().join("x.tar")), &src.host()])
            .fails(2, &["K/N"]);
    }
    assert!(!dir.path().join("x.tar").exists());
}
