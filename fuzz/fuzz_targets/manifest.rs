//! `oras::manifest::parse` with an arbitrary descriptor: never panics; what it accepts is
//! consistent (a known manifest type, no reference to itself, children only in indexes and blobs
//! only in manifests), and the referrers helpers round-trip what it found.
//!
//! Input layout: byte 0 picks the descriptor's media type, byte 1 how its digest is made, bytes
//! 2..10 its size (little endian), the rest is the manifest body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oras::digest::Digest;
use oras::manifest::{self, Descriptor, MANIFEST_TYPES, OCI_INDEX};

const OTHER_TYPES: [&str; 3] =
    ["", "application/vnd.oci.image.layer.v1.tar+gzip", "application/octet-stream"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, body) = data.split_at(10);
    let media_type = match head[0] as usize % (MANIFEST_TYPES.len() + OTHER_TYPES.len()) {
        i if i < MANIFEST_TYPES.len() => MANIFEST_TYPES[i],
        i => OTHER_TYPES[i - MANIFEST_TYPES.len()],
    };
    let digest = match head[1] % 3 {
        // The digest of the body (what a verified manifest has).
        0 => Digest::of(body),
        // An unrelated digest.
        1 => Digest::of(&head[..2]),
        // The digest of the first child found in the body, if any (a would-be self-reference).
        _ => body
            .windows(71)
            .find_map(|w| std::str::from_utf8(w).ok().and_then(|s| s.parse::<Digest>().ok()))
            .unwrap_or_else(|| Digest::of(body)),
    };
    let size = u64::from_le_bytes(head[2..10].try_into().expect("8 bytes"));
    let desc = Descriptor::new(media_type, digest, size);
    let Ok(parsed) = manifest::parse(&desc, body) else { return };
    assert!(
        MANIFEST_TYPES.contains(&parsed.media_type.as_str()),
        "unknown media type {:?} accepted",
        parsed.media_type
    );
    let is_index = parsed.media_type == OCI_INDEX || parsed.media_type == manifest::DOCKER_LIST;
    assert!(is_index || parsed.manifests.is_empty(), "a manifest with children");
    assert!(!is_index || parsed.blobs.is_empty(), "an index with blobs");
    for d in parsed.manifests.iter().chain(&parsed.blobs).chain(&parsed.subject) {
        assert_ne!(d.digest, desc.digest, "a manifest that refers to itself was accepted");
    }
    let r = manifest::referrer_descriptor(&desc, &parsed);
    assert_eq!((&r.digest, r.size), (&desc.digest, desc.size));
    let bytes = manifest::index_bytes(&parsed.manifests);
    let back = manifest::index_manifests(&bytes)
        .unwrap_or_else(|e| panic!("index_bytes output does not parse: {e}"));
    assert_eq!(
        back, parsed.manifests,
        "index_bytes/index_manifests round trip changed the descriptors"
    );
});
