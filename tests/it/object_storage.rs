//! Backups in object storage (`s3://`), against a real S3-compatible server (moto) on loopback:
//! round trips through a tar object and a layout under a prefix, an interrupted or failing backup
//! leaving no object and no pending multipart upload, a damaged object refused on restore, and one
//! clear error for each bad location. Ignored unless asked for (they need moto): scripts/test.sh
//! installs it and runs them.

use crate::harness;

use harness::client::digest_hex;
use harness::fault_proxy::{Fault, FaultProxy};
use harness::fault_proxy_safety::{Direction, SafetyProxy};
use harness::fixtures::{self, pseudo_random, Builder, RepoFixture, OCI_LAYER_GZIP};
use harness::layout::Layout;
use harness::relay::Match;
use harness::s3::S3Server;
use harness::{assert_layout_holds, assert_repo_matches, Client, Oras, Registry, Run};
use std::time::{Duration, Instant};

/// `oras <args>` with the server's environment.
fn run(s3: &S3Server, args: &[&str]) -> Run {
    let env = s3.env();
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Oras::new(args).envs(&vars).run()
}

fn source() -> (Registry, RepoFixture) {
    let reg = Registry::start();
    let fx = fixtures::push_all_kinds(&Client::new(&reg.host()), "team/app");
    (reg, fx)
}

#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn backup_to_a_tar_object_and_a_prefix_and_restore_from_each() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let (src, fx) = source();
    let repo = format!("{}/team/app", src.host());
    for out in ["s3://backups/nightly/app.tar", "s3://backups/layout/app/"] {
        run(&s3, &["backup", "--no-tty", "--include-referrers", "-o", out, &repo]).ok();
        if out.ends_with('/') {
            // A second backup into the prefix finds every blob there and copies nothing.
            let again = run(&s3, &["backup", "--no-tty", "--include-referrers", "-o", out, &repo]);
            assert!(again.ok().stdout_str().contains("(0 B copied,"), "{}", again.describe());
        }
        run(&s3, &["verify", out]).ok();
        let dst = Registry::start();
        let restored = run(&s3, &["restore", "--no-tty", "--input", out, &dst.host()]);
        restored.ok();
        assert!(
            restored.stdout_str().contains("Successfully restored 8 tag(s)"),
            "{}",
            restored.describe()
        );
        let d = Client::new(&dst.host());
        assert_repo_matches(&d, "team/app", &fx, true);
        let v1 = fx.tag("v1");
        let mut found = d.tag_schema_referrers("team/app", v1);
        found.sort();
        let mut want: Vec<String> = fx.referrers[v1].iter().map(|r| r.digest.clone()).collect();
        want.sort();
        assert_eq!(found, want, "referrers of v1 restored from {out}");
    }
    // The companion commands read both forms, with a reference after the location.
    for at in ["s3://backups/nightly/app.tar", "s3://backups/layout/app/"] {
        let listed = run(&s3, &["repo", "ls", "--oci-layout", at]);
        assert!(listed.ok().stdout_str().contains(&repo), "{}", listed.describe());
        let fetched = run(&s3, &["manifest", "fetch", "--oci-layout", &format!("{at}:v1")]);
        assert_eq!(fetched.ok().stdout, fx.manifests[fx.tag("v1")].bytes, "manifest v1 from {at}");
        let digest = format!("{at}@{}", fx.tag("v1"));
        run(&s3, &["discover", "--oci-layout", &digest]).ok();
    }
    // The tar object is the archive a file backup would be: read back as one, it holds everything.
    let tar = s3.get("backups", "nightly/app.tar").expect("the tar object");
    assert_layout_holds(&Layout::from_tar(&tar), &[(&repo, &fx)], true);
    let keys = s3.keys("backups");
    assert!(keys.contains(&"layout/app/index.json".to_string()), "{keys:?}");
    assert!(keys.contains(&"layout/app/oci-layout".to_string()), "{keys:?}");
    for blob in fx.all_digests() {
        let key = format!("layout/app/blobs/sha256/{}", digest_hex(&blob));
        assert!(keys.contains(&key), "{key} missing: {keys:?}");
    }
    assert!(s3.pending_uploads("backups").is_empty());
}

/// A layer larger than several parts: the archive (plain and compressed) and the layout's blob
/// object are multipart uploads, memory stays bounded by the parts in flight, not the layer, and
/// each restores intact.
#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn objects_larger_than_a_part_are_uploaded_in_parts_with_bounded_memory() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let src = Registry::start();
    let mut b = Builder::new(&Client::new(&src.host()), "big/app");
    let big = b.blob(OCI_LAYER_GZIP, &pseudo_random("s3-big-layer", 160 << 20));
    b.oci_image_with_layers(Some("v1"), "big", "amd64", std::slice::from_ref(&big));
    let fx = b.finish();
    let repo = format!("{}/big/app", src.host());
    let env = s3.env();
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (out, key) in [
        ("s3://backups/big.tar", "big.tar"),
        ("s3://backups/big.tar.zst", "big.tar.zst"),
        ("s3://backups/big/", "big/blobs/sha256/"),
    ] {
        let m = Oras::new(&["backup", "--no-tty", "-o", out, &repo])
            .envs(&vars)
            .measure(Duration::from_secs(300));
        m.run.ok();
        // 5 parts of 16 MiB at most in memory (4 in flight, 1 filling) and the runtime: well
        // under the 160 MiB layer.
        assert!(m.peak_rss_kib < 140 << 10, "peak {} KiB backing up to {out}", m.peak_rss_kib);
        let key = if key.ends_with('/') {
            format!("{key}{}", digest_hex(&big.digest))
        } else {
            key.into()
        };
        let etag = s3.etag("backups", &key);
        assert!(etag.contains('-'), "{key} was not a multipart upload (ETag {etag})");
        let dst = Registry::start();
        run(&s3, &["restore", "--no-tty", "--input", out, &dst.host()]).ok();
        assert_repo_matches(&Client::new(&dst.host()), "big/app", &fx, true);
    }
}

/// An incremental backup in object storage over a base there: the base's location is recorded
/// whole, and restore and verify find it.
#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn an_incremental_backup_in_object_storage_finds_its_base_there() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let (src, fx) = source();
    let repo = format!("{}/team/app", src.host());
    run(&s3, &["backup", "--no-tty", "--include-referrers", "-o", "s3://backups/mon.tar", &repo])
        .ok();
    let tue = ["--base", "s3://backups/mon.tar", "-o", "s3://backups/tue.tar", &repo];
    run(&s3, &[&["backup", "--no-tty", "--include-referrers"][..], &tue[..]].concat()).ok();
    let mon = s3.get("backups", "mon.tar").expect("mon").len();
    let tue = s3.get("backups", "tue.tar").expect("tue").len();
    assert!(tue < mon / 2, "the incremental backup holds the blobs again ({tue} of {mon} bytes)");
    run(&s3, &["verify", "s3://backups/tue.tar"]).ok();
    let onto_itself = ["--base", "s3://backups/mon.tar", "-o", "s3://backups/mon.tar", &repo];
    run(&s3, &[&["backup", "--no-tty"][..], &onto_itself[..]].concat())
        .fails(2, &["is also the --output"]);
    let dst = Registry::start();
    run(&s3, &["restore", "--no-tty", "--input", "s3://backups/tue.tar", &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, true);
}

#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn a_failed_or_interrupted_backup_leaves_no_object_and_no_pending_upload() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let src = Registry::start();
    let fx = fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let layer =
        fx.manifests[fx.tag("v1")].json()["layers"][0]["digest"].as_str().unwrap().to_string();

    // A registry that keeps sending a damaged layer: the run fails naming it.
    let proxy = SafetyProxy::start(&src.host());
    proxy.corrupt("GET", &layer, Direction::Response, 700, 100_000);
    let name = format!("{}/team/app", proxy.host());
    for out in ["s3://backups/failed.tar", "s3://backups/failed.tar.zst"] {
        run(&s3, &["backup", "--no-tty", "-o", out, &name]).fails(1, &[digest_hex(&layer)]);
    }
    assert_eq!(s3.keys("backups"), Vec::<String>::new(), "no object is left");
    assert_eq!(s3.pending_uploads("backups"), Vec::<String>::new(), "no multipart upload is left");

    // Ctrl-C while the upload is open and a blob is on its way: exit 130, the upload aborted.
    let env = s3.env();
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let slow = FaultProxy::start(&src.host());
    slow.inject(Match::method("GET").path("/blobs/"), Fault::Delay(Duration::from_secs(60)), 100);
    for out in ["s3://backups/interrupted.tar", "s3://backups/interrupted/"] {
        let before = slow.fired();
        let running = Oras::new(&["backup", "--no-tty", "-o", out])
            .args(&[&format!("{}/team/app", slow.host())])
            .envs(&vars)
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Under way: a blob is asked for (and, for the archive, its upload is open).
        while (out.ends_with(".tar") && s3.pending_uploads("backups").is_empty())
            || slow.fired() == before
        {
            assert!(
                running.is_running(),
                "the run ended before it was interrupted:\n{}",
                running.stderr()
            );
            assert!(Instant::now() < deadline, "no upload under way:\n{}", running.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        running.signal(libc::SIGINT);
        let ended = running.wait(Duration::from_secs(30));
        assert_eq!(ended.code, Some(130), "{}", ended.describe());
    }
    // The prefix may keep blobs that were complete (a re-run resumes), never an index.json.
    let keys = s3.keys("backups");
    assert!(keys.iter().all(|k| k.starts_with("interrupted/blobs/")), "{keys:?}");
    assert_eq!(s3.pending_uploads("backups"), Vec::<String>::new(), "no multipart upload is left");
    // The same backup again completes the prefix.
    let name = format!("{}/team/app", src.host());
    run(&s3, &["backup", "--no-tty", "-o", "s3://backups/interrupted/", &name]).ok();
    assert!(s3.keys("backups").contains(&"interrupted/index.json".to_string()));
}

#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn a_damaged_object_is_refused_on_restore() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let src = Registry::start();
    let fx = fixtures::push_signed_image(&Client::new(&src.host()), "team/app");
    let repo = format!("{}/team/app", src.host());
    let layer =
        fx.manifests[fx.tag("v1")].json()["layers"][0]["digest"].as_str().unwrap().to_string();
    let bytes = fx.blobs[&layer].clone();
    run(&s3, &["backup", "--no-tty", "-o", "s3://backups/app.tar", &repo]).ok();
    run(&s3, &["backup", "--no-tty", "-o", "s3://backups/dir/", &repo]).ok();

    // One byte of the layer flipped, in the tar object and in the layout's blob object.
    let mut tar = s3.get("backups", "app.tar").expect("tar");
    let at = tar.windows(64).position(|w| w == &bytes[..64]).expect("the layer is in the tar");
    tar[at + bytes.len() / 2] ^= 0xff;
    s3.put("backups", "app.tar", tar);
    let key = format!("dir/blobs/sha256/{}", digest_hex(&layer));
    let mut blob = s3
        .get("backups", &key)
        .unwrap_or_else(|| panic!("{key} missing: {:?}", s3.keys("backups")));
    let mid = blob.len() / 2;
    blob[mid] ^= 0xff;
    s3.put("backups", &key, blob);

    for input in ["s3://backups/app.tar", "s3://backups/dir/"] {
        let dst = Registry::start();
        let restored = run(&s3, &["restore", "--no-tty", "--input", input, &dst.host()]);
        restored.fails(1, &[digest_hex(&layer)]);
        assert!(
            Client::new(&dst.host()).list_tags("team/app").is_empty(),
            "a tag was pushed from {input}"
        );
        run(&s3, &["verify", input]).check_ok().expect_err("verify passes a damaged backup");
    }
}

#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn bad_locations_fail_with_one_clear_line() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let reg = Registry::start();
    let repo = format!("{}/team/app", reg.host());
    let tagged = format!("{repo}:v1");
    let cases: [(&[&str], i32, &[&str]); 9] = [
        (&["backup", "-o", "s3:///app.tar", &repo], 2, &["names no bucket"]),
        (&["backup", "-o", "gs://backups/app.tar", &repo], 2, &["unknown scheme gs://"]),
        (&["restore", "--input", "s3://", &reg.host()], 1, &["names no bucket"]),
        (&["restore", "--input", "ftp://host/app.tar", &reg.host()], 1, &["unknown scheme ftp://"]),
        (
            &["backup", "-o", "s3://missing-bucket/app.tar", &repo],
            1,
            &["bucket \"missing-bucket\" does not exist"],
        ),
        (
            &["restore", "--input", "s3://missing-bucket/app.tar", &reg.host()],
            1,
            &["bucket \"missing-bucket\" does not exist"],
        ),
        (
            &["restore", "--input", "s3://backups/none.tar", &reg.host()],
            1,
            &["s3://backups/none.tar", "no object"],
        ),
        (
            &["restore", "--input", "s3://backups/nothing/", &reg.host()],
            1,
            &["s3://backups/nothing/", "no object"],
        ),
        (
            &["copy", "--to-oci-layout", &tagged, "s3://backups/copy.tar"],
            2,
            &["oras copy writes layouts on local disk only", "oras backup"],
        ),
    ];
    // Objects that are not a backup: a file that is no tar, a prefix that is no layout.
    s3.put("backups", "notes.tar", b"just some text, not an archive".repeat(40));
    s3.put("backups", "docs/README.md", b"hello\n".to_vec());
    let mut failures = harness::Failures::default();
    for (input, names) in [
        (
            "s3://backups/notes.tar",
            &["s3://backups/notes.tar", "neither a directory nor a tar archive"],
        ),
        ("s3://backups/docs/", &["s3://backups/docs/", "no index.json or manifest.json"]),
    ] {
        let refused = run(&s3, &["restore", "--input", input, &reg.host()]);
        failures.check(input, refused.check_failure(1, names));
    }
    for (args, code, names) in cases {
        failures.check(&args.join(" "), run(&s3, args).check_failure(code, names));
    }
    // No credentials in the environment: one line saying which variables to set.
    let env = s3.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    vars.extend([("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")]);
    let no_creds =
        Oras::new(&["restore", "--input", "s3://backups/app.tar", &reg.host()]).envs(&vars).run();
    failures.check(
        "no credentials",
        no_creds.check_failure(1, &["no AWS credentials", "AWS_ACCESS_KEY_ID"]),
    );
    // A store that is not there: one line naming the object, within the retries' minute.
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dead = format!("http://127.0.0.1:{}", harness::registry::free_port());
    vars.push(("AWS_ENDPOINT_URL", &dead));
    let started = Instant::now();
    let gone =
        Oras::new(&["restore", "--input", "s3://backups/app.tar", &reg.host()]).envs(&vars).run();
    failures.check("no store at the endpoint", gone.check_failure(1, &["s3://backups/app.tar"]));
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    failures.assert_none();
}

#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn shards_of_a_registry_in_object_storage_restore_together_with_a_local_one() {
    let s3 = S3Server::start();
    s3.create_bucket("dr-backups");
    let src = Registry::start();
    let c = Client::new(&src.host());
    let mut fxs = vec![("team/app".to_string(), fixtures::push_all_kinds(&c, "team/app"))];
    for i in 0..4 {
        let repo = format!("proj/web{i}");
        fxs.push((repo.clone(), fixtures::push_web(&c, &repo)));
    }
    // As docs/sharding.md's jobs do: shards 1 and 2 to the bucket, shard 3 kept on local disk.
    let dir = harness::tempdir();
    let local = dir.path().join("shard-3-of-3.tar");
    let outs = [
        "s3://dr-backups/day/shard-1-of-3.tar",
        "s3://dr-backups/day/shard-2-of-3.tar",
        harness::s(&local),
    ];
    for (k, out) in outs.iter().enumerate() {
        let shard = format!("{}/3", k + 1);
        run(
            &s3,
            &[
                "backup",
                "--no-tty",
                "--include-referrers",
                "--shard",
                &shard,
                "-o",
                out,
                &src.host(),
            ],
        )
        .ok();
    }
    assert!(s3.pending_uploads("dr-backups").is_empty());
    let dst = Registry::start();
    let mut args = vec!["restore", "--no-tty"];
    for out in &outs {
        args.extend(["--input", out]);
    }
    let host = dst.host();
    args.push(&host);
    run(&s3, &args).ok();
    let d = Client::new(&dst.host());
    let mut catalog = d.catalog();
    catalog.sort();
    let mut expected: Vec<String> = fxs.iter().map(|(r, _)| r.clone()).collect();
    expected.sort();
    assert_eq!(catalog, expected, "the shards together hold every repository");
    for (repo, fx) in &fxs {
        assert_repo_matches(&d, repo, fx, true);
    }
}

/// Credentials, region and endpoint from a named profile of the shared AWS files, as the AWS CLI
/// reads them, with nothing in the environment: backup and restore work through it; a profile
/// the files lack, and one that gets its keys by a process this tool does not run, each get one
/// line naming the profile.
#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn a_named_profile_of_the_shared_aws_files_is_used_when_the_environment_has_none() {
    let s3 = S3Server::start();
    s3.create_bucket("backups");
    let (src, fx) = source();
    let repo = format!("{}/team/app", src.host());
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[default]\naws_access_key_id = wrong\n\n[dr]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let endpoint = s3.url("");
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile dr]\nregion = us-east-1\nendpoint_url = {}\n\n[profile sso]\nsso_session = corp\nregion = us-east-1\n",
            endpoint.trim_end_matches('/')
        ),
    )
    .unwrap();
    let home_dir = home.path().to_str().unwrap();
    // Every variable the server's environment would set is set empty (counted as unset), so
    // that only the files can give them.
    let with_profile = |name: &str, args: &[&str]| {
        Oras::new(args)
            .envs(&[
                ("HOME", home_dir),
                ("AWS_PROFILE", name),
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_SESSION_TOKEN", ""),
                ("AWS_REGION", ""),
                ("AWS_DEFAULT_REGION", ""),
                ("AWS_ENDPOINT_URL", ""),
                ("AWS_SHARED_CREDENTIALS_FILE", ""),
                ("AWS_CONFIG_FILE", ""),
            ])
            .run()
    };
    with_profile("dr", &["backup", "--no-tty", "-o", "s3://backups/dr/app.tar", &repo]).ok();
    assert!(s3.get("backups", "dr/app.tar").is_some(), "no object written through the profile");
    let dst = Registry::start();
    with_profile("dr", &["restore", "--no-tty", "--input", "s3://backups/dr/app.tar", &dst.host()])
        .ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, false);
    let mut failures = harness::Failures::default();
    let missing = with_profile("nightly", &["backup", "-o", "s3://backups/x.tar", &repo]);
    failures.check("missing profile", missing.check_failure(1, &["AWS_PROFILE", "\"nightly\""]));
    let sso = with_profile("sso", &["backup", "-o", "s3://backups/x.tar", &repo]);
    failures.check("sso profile", sso.check_failure(1, &["\"sso\"", "sso_session"]));
    failures.assert_none();
    assert_eq!(s3.get("backups", "x.tar"), None, "a refused run wrote an object");
}

/// A store behind TLS with a private CA (MinIO or Ceph as many run them): refused until
/// `AWS_CA_BUNDLE` names the CA, as in the AWS CLI; then backup and restore work, and `--debug`
/// traces every object storage request, one line each, with nothing secret in it.
#[test]
#[ignore = "object storage: needs moto[server]; scripts/test.sh installs it and runs these"]
fn a_store_with_a_private_ca_is_trusted_through_aws_ca_bundle_and_traced_with_debug() {
    let pki = harness::tls::Pki::generate(&["s3.test"]);
    let s3 = S3Server::start_tls(&pki);
    s3.create_bucket("backups");
    let (src, fx) = source();
    let repo = format!("{}/team/app", src.host());
    let out = "s3://backups/tls/app.tar";
    let untrusted = run(&s3, &["backup", "--no-tty", "-o", out, &repo]);
    untrusted.fails(1, &[out, "not trusted", "AWS_CA_BUNDLE"]);
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "the error does not say the certificate was refused:\n{}",
        untrusted.describe()
    );
    let missing = Oras::new(&["backup", "--no-tty", "-o", out, &repo])
        .envs(&s3.env().iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        .env("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
        .run();
    missing.fails(1, &["/nonexistent/ca.pem", "AWS_CA_BUNDLE"]);
    let ca = pki.ca_cert.to_str().unwrap();
    let trusted = |args: &[&str]| {
        Oras::new(args)
            .envs(&s3.env().iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
            .env("AWS_CA_BUNDLE", ca)
            .run()
    };
    let traced = trusted(&["backup", "--debug", "-o", out, &repo]);
    traced.ok();
    let port = s3.url("");
    let s3_lines: Vec<&str> =
        traced.stderr.lines().filter(|l| l.starts_with("[debug] S3 ")).collect();
    assert!(
        s3_lines.iter().any(|l| l.contains(&format!("PUT {port}backups/tls/app.tar"))),
        "no traced upload of the object:\n{}",
        traced.describe()
    );
    assert!(s3_lines.iter().all(|l| l.contains(" -> ")), "{s3_lines:#?}");
    for secret in ["Signature=", "Credential=", "AWS4-HMAC"] {
        assert!(!traced.stderr.contains(secret), "{secret} traced:\n{}", traced.describe());
    }
    let dst = Registry::start();
    trusted(&["restore", "--no-tty", "--input", out, &dst.host()]).ok();
    assert_repo_matches(&Client::new(&dst.host()), "team/app", &fx, false);
}
