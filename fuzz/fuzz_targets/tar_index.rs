//! `oras::layout::tar_index::index` on arbitrary bytes: never panics, never hangs, and whatever it
//! accepts lies inside the file under a safe, normalised name; a link it records points at a
//! normalised name, and resolves only to a regular file of the archive.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch file per fuzzing process, rewritten for each input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir =
            tempfile::Builder::new().prefix("oras-fuzz-tar").tempdir().expect("temp dir").keep();
        dir.join("input.tar")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write scratch file");
    let len = data.len() as u64;
    let Ok(index) = oras::layout::tar_index::index(path) else { return };
    for (name, (offset, size)) in &index.files {
        assert!(
            offset.checked_add(*size).is_some_and(|end| end <= len),
            "{name:?} ({offset}+{size}) lies outside the {len}-byte file"
        );
        assert!(!name.is_empty() && !name.starts_with('/'), "unsafe name {name:?}");
        assert!(
            name.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "unnormalised name {name:?}"
        );
    }
    for (name, target) in &index.links {
        if let Ok(t) = target {
            assert!(
                !t.is_empty() && t.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
                "link {name:?} to an unnormalised name {t:?}"
            );
        }
        if let Ok(resolved) = index.resolve(name) {
            assert!(index.files.contains_key(&resolved), "{name:?} resolved to {resolved:?}");
        }
    }
});
