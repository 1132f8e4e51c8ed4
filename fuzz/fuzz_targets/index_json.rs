//! `oras::layout::index::parse` and `render`: parsing never panics; what renders parses back;
//! rendering is idempotent (reproducible index.json whatever came in), and no tag is lost or
//! invented on the way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oras::layout::index::{parse, render, Entry, Rendering};
use std::collections::BTreeSet;

fn tagged(entries: &[Entry]) -> BTreeSet<(Option<String>, String)> {
    entries
        .iter()
        .filter_map(|e| e.tag.clone().map(|t| (e.repo.as_ref().map(|r| r.to_string()), t)))
        .collect()
}

fn digests(entries: &[Entry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.desc.digest.to_string()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = parse(data) else { return };
    let rendered = render(&entries, &Rendering::default());
    let again = parse(&rendered)
        .unwrap_or_else(|e| panic!("render produced an index.json that does not parse: {e}"));
    assert_eq!(render(&again, &Rendering::default()), rendered, "render(parse(render(x))) != render(x)");
    assert_eq!(tagged(&again), tagged(&entries), "tags changed in the round trip");
    assert_eq!(digests(&again), digests(&entries), "digests changed in the round trip");
});
