//! OCI image layouts: the `index.json` model, the directory store, the tar writer and the tar
//! reader.

pub mod compress;
pub mod dir;
pub mod docker;
pub mod durable;
pub mod graph;
pub mod index;
pub mod reader;
pub mod space;
pub mod stream_read;
pub mod tar_index;
pub mod tar_stream;
pub mod tar_write;

/// The relative path of a blob inside a layout.
pub fn blob_path(d: &crate::digest::Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}
