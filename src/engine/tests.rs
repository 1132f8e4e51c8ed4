//! Engine unit tests on an in-memory target ([`super::memory`]): what gets written, in which order,
//! what is skipped, mounted, retagged, held back and retried; milliseconds each, no registry.

use super::blobs::{largest_first, Task};
use super::memory::{Call, Inject, Memory};
use super::plan::recorded_indexes;
use super::{run, Job, JobGraph, JobId, Node, Options, Report};
use crate::digest::Digest;
use crate::manifest::{self, Descriptor, Parsed};
use crate::progress::Progress;
use crate::target::{ErrorKind, Repo};
use bytes::Bytes;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn repo(name: &str) -> Repo {
    Repo::new("reg.test", name)
}

/// Stores an image of `layers` (and a config naming `name`) and returns its manifest's descriptor.
fn image(m: &Memory, r: &Repo, name: &str, layers: &[&[u8]]) -> Descriptor {
    let config = m.blob(
        r,
        "application/vnd.oci.image.config.v1+json",
        format!("{{\"name\":\"{name}\"}}").as_bytes(),
    );
    let layers: Vec<Descriptor> = layers.iter().map(|l| m.blob(r, LAYER, l)).collect();
    let body = json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": config, "layers": layers});
    m.blob(r, manifest::OCI_MANIFEST, body.to_string().as_bytes())
}

/// Stores an index of `children` and returns its descriptor.
fn index(m: &Memory, r: &Repo, children: &[&Descriptor]) -> Descriptor {
    let body = json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": children});
    m.blob(r, manifest::OCI_INDEX, body.to_string().as_bytes())
}

/// Stores a referrer (an artifact of `kind`) of `subject` and returns its descriptor.
fn referrer(m: &Memory, r: &Repo, subject: &Descriptor, kind: &str) -> Descriptor {
    let empty = m.blob(r, "application/vnd.oci.empty.v1+json", b"{}");
    let payload = m.blob(r, LAYER, format!("{kind} of {}", subject.digest).as_bytes());
    let body = json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "artifactType": kind,
        "config": empty, "layers": [payload], "subject": subject});
    m.blob(r, manifest::OCI_MANIFEST, body.to_string().as_bytes())
}

fn job(src: &Repo, dst: &Repo, refs: &[&str]) -> Job {
    Job {
        refs: refs.iter().map(|r| r.to_string()).collect(),
        ..Job::new(src.clone(), dst.clone(), src.to_string())
    }
}

fn opts(referrers: bool, dry_run: bool) -> Options {
    Options {
        concurrency: 4,
        referrers,
        dry_run,
        platforms: Vec::new(),
        sparse_index: false,
        held: None,
    }
}

async fn copy(src: Memory, dst: Arc<Memory>, jobs: &[Job], o: Options) -> anyhow::Result<Report> {
    run(Arc::new(src), dst, jobs, &o, &mut Progress::new(false, true)).await
}

/// Position of the first call that matches.
fn at(calls: &[Call], want: impl Fn(&Call) -> bool) -> usize {
    calls.iter().position(want).unwrap_or_else(|| panic!("no such call in {calls:#?}"))
}

#[tokio::test]
async fn children_go_before_parents_and_referrers_after_their_subjects() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let amd = image(&src, &a, "amd64", &[b"layer-amd"]);
    let arm = image(&src, &a, "arm64", &[b"layer-arm"]);
    let idx = index(&src, &a, &[&amd, &arm]);
    src.set_tag(&a, "v1", &idx);
    let sig = referrer(&src, &a, &idx, "application/vnd.example.signature");
    let sbom_sig = referrer(&src, &a, &sig, "application/vnd.example.signature");

    let report =
        copy(src, dst.clone(), &[job(&a, &b, &["v1"])], opts(true, false)).await.expect("copy");
    // Memory refuses a manifest whose content is missing, so success alone proves children went
    // first.
    let calls = dst.calls();
    let pushed = |d: &Descriptor| {
        at(&calls, |c| matches!(c, Call::PushManifest(_, x) | Call::Tag(_, _, x) if x == &d.digest))
    };
    assert!(pushed(&amd) < pushed(&idx) && pushed(&arm) < pushed(&idx));
    assert!(
        pushed(&idx) < pushed(&sig) && pushed(&sig) < pushed(&sbom_sig),
        "referrers after their subjects"
    );
    assert_eq!(dst.tag_of(&b, "v1"), Some(idx.digest.clone()));
    assert_eq!((report.manifests_copied, report.jobs[0].roots[0].referrers), (5, 2));
    assert_eq!(calls.last(), Some(&Call::Finish));
}

#[tokio::test]
async fn content_shared_by_jobs_is_written_once_per_scope() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::layout()));
    let (a, b) = (repo("one"), repo("two"));
    let one = image(&src, &a, "one", &[b"shared-base", b"only-one"]);
    let two = image(&src, &b, "two", &[b"shared-base", b"only-two"]);
    src.set_tag(&a, "v1", &one);
    src.set_tag(&b, "v1", &two);

    let report = copy(src, dst.clone(), &[job(&a, &a, &[]), job(&b, &b, &[])], opts(false, false))
        .await
        .expect("copy");
    let base = Digest::of(b"shared-base");
    let pushes =
        dst.calls().iter().filter(|c| matches!(c, Call::PushBlob(_, d) if d == &base)).count();
    assert_eq!(pushes, 1, "a layout is one scope: the shared layer goes in once");
    assert_eq!(
        (report.blobs_copied, report.manifests_copied),
        (5, 2),
        "two configs, three distinct layers"
    );
}

#[tokio::test]
async fn a_blob_for_a_second_repository_is_mounted_from_the_first() {
    let (src, dst) = (Memory::layout(), Arc::new(Memory::registry()));
    let (a, b) = (repo("one"), repo("two"));
    let one = image(&src, &a, "one", &[b"shared-base"]);
    src.set_tag(&a, "v1", &one);

    let jobs = [job(&a, &a, &["v1"]), job(&a, &b, &["v1"])];
    let report = copy(src, dst.clone(), &jobs, opts(false, false)).await.expect("copy");
    let base = Digest::of(b"shared-base");
    assert!(
        dst.calls().contains(&Call::Mount(b.clone(), base.clone(), a.clone())),
        "{:#?}",
        dst.calls()
    );
    assert!(dst.holds(&b, &base));
    assert_eq!(
        (report.blobs_copied, report.blobs_mounted),
        (2, 2),
        "layer and config copied once, mounted once"
    );
    assert_eq!(report.bytes_total, report.bytes_copied + report.bytes_skipped);
}

#[tokio::test]
async fn retagged_roots_get_only_the_new_tags() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let img = image(&src, &a, "img", &[b"layer"]);
    src.set_tag(&a, "v1", &img);
    let mut j = job(&a, &b, &["v1"]);
    j.retag = Some(vec!["stable".into(), "latest".into()]);

    copy(src, dst.clone(), &[j], opts(false, false)).await.expect("copy");
    assert_eq!(dst.tag_of(&b, "stable"), Some(img.digest.clone()));
    assert_eq!(dst.tag_of(&b, "latest"), Some(img.digest.clone()));
    assert_eq!(dst.tag_of(&b, "v1"), None);
}

#[tokio::test]
async fn a_dry_run_counts_what_would_move_and_writes_nothing() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let img = image(&src, &a, "img", &[b"layer-1", b"layer-2"]);
    src.set_tag(&a, "v1", &img);

    let report =
        copy(src, dst.clone(), &[job(&a, &b, &[])], opts(false, true)).await.expect("dry run");
    assert_eq!((report.blobs_copied, report.manifests_copied, report.blobs_skipped), (3, 1, 0));
    let writes = dst.calls().into_iter().filter(|c| {
        matches!(c, Call::PushBlob(..) | Call::PushManifest(..) | Call::Tag(..) | Call::Finish)
    });
    assert_eq!(writes.count(), 0);
}

#[tokio::test]
async fn a_second_copy_finds_everything_there_from_the_top() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let img = image(&src, &a, "img", &[b"layer-1", b"layer-2"]);
    src.set_tag(&a, "v1", &img);
    let (src, jobs, o) = (Arc::new(src), [job(&a, &b, &[])], opts(false, false));
    let mut progress = Progress::new(false, true);
    run(src.clone(), dst.clone(), &jobs, &o, &mut progress).await.expect("first copy");
    let before = dst.calls().len();
    let second = run(src, dst.clone(), &jobs, &o, &mut progress).await.expect("second copy");
    let asked: Vec<Call> = dst.calls()[before..].to_vec();
    assert_eq!((second.blobs_skipped, second.manifests_skipped, second.bytes_copied), (3, 1, 0));
    assert!(
        !asked.iter().any(|c| matches!(c, Call::HasBlob(..) | Call::PushBlob(..))),
        "a tag that is there answers for its blobs: {asked:#?}"
    );
}

#[tokio::test]
async fn a_checked_restore_holds_large_blobs_back_until_the_backup_passes() {
    let (src, dst) = (Memory::layout(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let big = vec![7u8; 3 << 20];
    let img = image(&src, &a, "img", &[&big, b"small"]);
    src.set_tag(&a, "v1", &img);

    copy(src, dst.clone(), &[job(&a, &b, &[])], opts(false, false)).await.expect("restore");
    let calls = dst.calls();
    let big = Digest::of(&big);
    assert!(
        at(&calls, |c| c == &Call::Stage(b.clone(), big.clone()))
            < at(&calls, |c| c == &Call::Commit(b.clone(), big.clone()))
    );
    assert!(dst.holds(&b, &big) && dst.holds(&b, &Digest::of(b"small")));
}

#[tokio::test]
async fn a_damaged_backup_makes_nothing_visible() {
    let (src, dst) = (Memory::layout(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let big = vec![7u8; 3 << 20];
    let img = image(&src, &a, "img", &[&big, b"small"]);
    src.set_tag(&a, "v1", &img);
    let mut rotten = big.clone();
    rotten[12345] ^= 1;
    src.put(&a, &Digest::of(&big), rotten);

    let err = copy(src, dst.clone(), &[job(&a, &b, &[])], opts(false, false))
        .await
        .expect_err("damage is refused");
    assert!(format!("{err:#}").contains("the backup is damaged, nothing was pushed"), "{err:#}");
    let calls = dst.calls();
    assert!(
        !calls.iter().any(|c| matches!(
            c,
            Call::Commit(..) | Call::PushBlob(..) | Call::PushManifest(..) | Call::Tag(..)
        )),
        "{calls:#?}"
    );
    let staged = calls.iter().filter(|c| matches!(c, Call::Stage(..))).count();
    let cancelled = calls.iter().filter(|c| matches!(c, Call::Cancel(..))).count();
    assert_eq!(staged, cancelled, "every held upload is abandoned");
}

#[tokio::test]
async fn only_transient_failures_are_tried_again() {
    for (kind, attempts, ok) in [
        (ErrorKind::Transient, 2, true),
        (ErrorKind::Denied, 1, false),
        (ErrorKind::NotFound, 1, false),
    ] {
        let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
        let (a, b) = (repo("src"), repo("dst"));
        let img = image(&src, &a, "img", &[b"flaky"]);
        src.set_tag(&a, "v1", &img);
        let flaky = Digest::of(b"flaky");
        dst.fail_pushes(&flaky, Inject { kind, times: 1 });

        let result = copy(src, dst.clone(), &[job(&a, &b, &[])], opts(false, false)).await;
        let pushes =
            dst.calls().iter().filter(|c| matches!(c, Call::PushBlob(_, d) if d == &flaky)).count();
        assert_eq!((pushes, result.is_ok()), (attempts, ok), "{kind:?}: {:?}", result.err());
    }
}

#[tokio::test]
async fn missing_tags_are_named_together() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
    let a = repo("src");
    let img = image(&src, &a, "img", &[b"layer"]);
    src.set_tag(&a, "v1", &img);
    let err = copy(src, dst, &[job(&a, &a, &["v1", "v8", "v9"])], opts(false, false))
        .await
        .expect_err("missing tags");
    assert_eq!(err.to_string(), "not found in reg.test/src: v8, v9 (check the tag names)");
}

#[test]
fn transfers_start_with_the_largest_blobs() {
    let desc =
        |data: &[u8], size| Descriptor::new("application/octet-stream", Digest::of(data), size);
    let task = |desc| Task { job: JobId(0), desc, missing: false };
    let descs = [
        desc(b"config", 400),
        desc(b"layer-a", 5 << 20),
        desc(b"tiny", 2),
        desc(b"layer-b", 90 << 20),
    ];
    let mut tasks: Vec<Task> = descs.iter().map(task).collect();
    largest_first(&mut tasks);
    let sizes: Vec<u64> = tasks.iter().map(|t| t.desc.size).collect();
    assert_eq!(sizes, vec![90 << 20, 5 << 20, 400, 2]);
    let ties_descs = [desc(b"b", 7), desc(b"a", 7)];
    let mut ties: Vec<Task> = ties_descs.iter().map(task).collect();
    largest_first(&mut ties);
    assert!(ties[0].desc.digest < ties[1].desc.digest, "equal sizes go by digest");
}

/// A referrer node whose manifest names `subject`.
fn node(name: &str, subject: &Digest) -> (Digest, Arc<Node>) {
    let desc = Descriptor::new(manifest::OCI_MANIFEST, Digest::of(name.as_bytes()), 1);
    let parsed = Parsed {
        media_type: manifest::OCI_MANIFEST.into(),
        manifests: Vec::new(),
        blobs: Vec::new(),
        subject: Some(Descriptor::new(manifest::OCI_MANIFEST, subject.clone(), 1)),
        artifact_type: None,
        annotations: None,
        declared_artifact_type: false,
    };
    (desc.digest.clone(), Arc::new(Node { desc, bytes: Bytes::new(), parsed, stored: false }))
}

fn graph(listings: &[(&Digest, &Digest, &[&Digest])]) -> JobGraph {
    let mut g = JobGraph::default();
    for (subject, index, referrers) in listings {
        g.referrers_of.insert((*subject).clone(), referrers.iter().map(|r| (*r).clone()).collect());
        g.listed_by.insert((*subject).clone(), (*index).clone());
    }
    g
}

#[test]
fn an_index_is_recorded_with_all_of_its_referrers_or_with_none() {
    let (img, other) = (Digest::of(b"img"), Digest::of(b"other"));
    let (idx, idx2, bogus_idx) = (Digest::of(b"idx"), Digest::of(b"idx2"), Digest::of(b"bogus"));
    let (sig, n_sig) = node("sig", &img);
    let (sbom, n_sbom) = node("sbom", &img);
    let (stray, n_stray) = node("stray", &img);
    let (att, n_att) = node("att", &other);
    let nodes: HashMap<Digest, Arc<Node>> = [
        (sig.clone(), n_sig),
        (sbom.clone(), n_sbom),
        (stray.clone(), n_stray),
        (att.clone(), n_att),
    ]
    .into();

    // One job: img's index lists two referrers of img; other's index also lists `stray`, which
    // names img.
    let one = graph(&[(&img, &idx, &[&sig, &sbom]), (&other, &bogus_idx, &[&att, &stray])]);
    let got = recorded_indexes(std::slice::from_ref(&one), &nodes);
    assert_eq!(got[&sig], Some((idx.clone(), 0)));
    assert_eq!(got[&sbom], Some((idx.clone(), 1)), "with its place in the index's list");
    assert_eq!(got[&att], None, "an index listing a manifest of another subject is not recorded");
    assert_eq!(got[&stray], None);

    // Two jobs (repositories) whose indexes of img differ: neither can stand for the other.
    let two = graph(&[(&img, &idx2, &[&sig])]);
    let got = recorded_indexes(&[one, two], &nodes);
    assert_eq!(got[&sig], None);
    assert_eq!(got[&sbom], Some((idx, 1)));
}

#[tokio::test]
async fn tag_mappings_filters_and_per_job_referrers_shape_what_is_written() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::registry()));
    let (a, b) = (repo("src"), repo("dst"));
    let v1 = image(&src, &a, "v1", &[b"layer-1"]);
    let v2 = image(&src, &a, "v2", &[b"layer-2"]);
    let rc = image(&src, &a, "rc", &[b"layer-rc"]);
    src.set_tag(&a, "v1", &v1);
    src.set_tag(&a, "v2", &v2);
    src.set_tag(&a, "v3-rc1", &rc);
    let sig = referrer(&src, &a, &v1, "application/vnd.example.signature");
    let mut j = job(&a, &b, &[]);
    j.rename.insert("v1".into(), "stable".into());
    j.filter = super::TagFilter::new(&["v.*".into()], &[".*-rc.*".into()]).expect("patterns");
    j.exclude_referrers = true;

    let report = copy(src, dst.clone(), &[j], opts(true, false)).await.expect("copy");
    assert_eq!(dst.tag_of(&b, "stable"), Some(v1.digest.clone()), "v1 arrives as stable");
    assert_eq!((dst.tag_of(&b, "v1"), dst.tag_of(&b, "v2")), (None, Some(v2.digest.clone())));
    assert_eq!(dst.tag_of(&b, "v3-rc1"), None, "excluded by --exclude-tags");
    assert!(
        !dst.holds(&b, &rc.digest) && !dst.holds(&b, &sig.digest),
        "nothing of the excluded tag or of referrers"
    );
    let mut tags: Vec<_> = report.jobs[0].roots.iter().filter_map(|r| r.tag.clone()).collect();
    tags.sort();
    assert_eq!(tags, ["stable", "v2"]);
}

#[test]
fn tag_filters_match_whole_tags_and_bad_patterns_are_named() {
    let f = super::TagFilter::new(&["v1.*".into()], &[]).expect("pattern");
    assert!(f.keeps("v1.2") && !f.keeps("xv1.2"), "anchored at both ends");
    let e = super::TagFilter::new(&[], &["(".into()]).unwrap_err();
    assert!(e.contains("--exclude-tags") && e.contains("\"(\""), "{e}");
}

#[tokio::test]
async fn a_platform_narrows_an_index_to_its_manifest_and_keeps_the_index_referrers() {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::layout()));
    let (a, b) = (repo("src"), repo("dst"));
    let mut amd = image(&src, &a, "amd64", &[b"layer-amd"]);
    let mut arm = image(&src, &a, "arm64", &[b"layer-arm"]);
    amd.platform = Some(json!({"os": "linux", "architecture": "amd64"}));
    arm.platform = Some(json!({"os": "linux", "architecture": "arm64", "variant": "v8"}));
    let idx = index(&src, &a, &[&amd, &arm]);
    src.set_tag(&a, "v1", &idx);
    let idx_sig = referrer(&src, &a, &idx, "application/vnd.example.signature");
    let arm_sbom = referrer(&src, &a, &arm, "application/vnd.example.sbom");
    let mut o = opts(true, false);
    o.platforms = vec!["linux/arm64".parse().expect("platform")];

    let src = Arc::new(src);
    let report =
        run(src.clone(), dst.clone(), &[job(&a, &b, &["v1"])], &o, &mut Progress::new(false, true))
            .await
            .expect("copy");
    assert_eq!(
        dst.tag_of(&b, "v1"),
        Some(arm.digest.clone()),
        "the tag names the platform manifest"
    );
    assert!(
        !dst.holds(&b, &idx.digest)
            && !dst.holds(&b, &amd.digest)
            && !dst.holds(&b, &Digest::of(b"layer-amd"))
    );
    assert!(
        dst.holds(&b, &arm_sbom.digest) && dst.holds(&b, &idx_sig.digest),
        "both the manifest's and the index's referrers"
    );
    assert_eq!(
        report.jobs[0].roots.iter().filter(|r| r.tag.is_none()).count(),
        1,
        "the index's referrer is an untagged root"
    );

    o.platforms = vec!["linux/s390x".parse().expect("platform")];
    let e = run(
        src,
        Arc::new(Memory::layout()),
        &[job(&a, &b, &["v1"])],
        &o,
        &mut Progress::new(false, true),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("linux/s390x") && e.contains("linux/amd64, linux/arm64/v8"), "{e}");
}

#[tokio::test]
async fn a_sparse_index_keeps_the_index_bytes_with_only_the_chosen_manifests_and_copies_on_from_a_partial_source(
) {
    let (src, dst) = (Memory::registry(), Arc::new(Memory::layout()));
    let (a, b) = (repo("src"), repo("dst"));
    let mut amd = image(&src, &a, "amd64", &[b"layer-amd"]);
    let mut arm = image(&src, &a, "arm64", &[b"layer-arm"]);
    amd.platform = Some(json!({"os": "linux", "architecture": "amd64"}));
    arm.platform = Some(json!({"os": "linux", "architecture": "arm64"}));
    let idx = index(&src, &a, &[&amd, &arm]);
    src.set_tag(&a, "v1", &idx);
    let mut o = opts(false, false);
    o.platforms = vec!["linux/amd64".parse().expect("platform")];
    o.sparse_index = true;

    copy(src, dst.clone(), &[job(&a, &b, &["v1"])], o).await.expect("sparse copy");
    assert_eq!(dst.tag_of(&b, "v1"), Some(idx.digest.clone()), "the tag still names the index");
    assert!(
        dst.holds(&b, &amd.digest)
            && !dst.holds(&b, &arm.digest)
            && !dst.holds(&b, &Digest::of(b"layer-arm"))
    );

    // The copy, read back as a partial source, copies on without asking for what it left out, and a
    // registry that insists on every child refuses it with the reason.
    let again = Arc::new(Memory::layout());
    run(
        dst.clone(),
        again.clone(),
        &[job(&b, &b, &["v1"])],
        &opts(false, false),
        &mut Progress::new(false, true),
    )
    .await
    .expect("copy on");
    assert!(
        again.holds(&b, &idx.digest)
            && again.holds(&b, &amd.digest)
            && !again.holds(&b, &arm.digest)
    );
    let e = run(
        dst,
        Arc::new(Memory::registry()),
        &[job(&b, &b, &["v1"])],
        &opts(false, false),
        &mut Progress::new(false, true),
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("--sparse-index"), "{e:#}");
}
