//! OCI image layouts: the `index.json` model, the directory store, the tar writer and the tar
//! reader.

pub mod chain;
pub mod compress;
pub mod dir;
pub mod docker;
pub mod docker_save;
pub mod durable;
pub mod graph;
pub mod index;
pub mod reader;
pub mod space;
pub mod stream_read;
pub mod tar_index;
pub mod tar_stream;
pub mod tar_write;

/// Where a file of a backup is written before it is complete: a hidden name of this process beside
/// the final one, which nothing reads as part of a layout.
pub(crate) fn temp_name(final_path: &std::path::Path) -> std::path::PathBuf {
    let name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    final_path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// The relative path of a blob inside a layout.
pub fn blob_path(d: &crate::digest::Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}
