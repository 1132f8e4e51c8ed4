//! Getting a backup onto the disk without a long wait at its end: the writeback of what was written is
//! started as the data arrives, so the sync that completes a backup finds little left to do.

use std::os::fd::AsRawFd;
use std::path::Path;

/// How much of a blob is written before its writeback is started.
pub const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts writing a range of a file to disk now, without waiting for it.
#[cfg(target_os = "linux")]
pub fn start_writeback(file: &impl AsRawFd, off: u64, len: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else { return };
    // SAFETY: a plain system call on a descriptor the caller keeps open; it touches no memory of ours.
    // A failure only leaves the work to the final sync, which reports errors.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Starts writing a range of a file to disk now (elsewhere than Linux the final sync does it all).
#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_file: &impl AsRawFd, _off: u64, _len: u64) {}

/// Waits until everything written to the filesystem that holds `dir` is on disk: one call for the
/// thousands of files of a backup, where an fsync each would cost more than their transfers.
#[cfg(target_os = "linux")]
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    let d = std::fs::File::open(dir)?;
    // SAFETY: a plain system call on a descriptor `d` keeps open.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits until everything written is on disk (elsewhere than Linux: a global sync).
#[cfg(not(target_os = "linux"))]
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?;
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn written_data_is_synced_and_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("blob");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(&[7u8; 4096]).expect("write");
        start_writeback(&f, 0, 4096);
        sync_filesystem(dir.path()).expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; 4096]);
        assert!(sync_filesystem(&dir.path().join("missing")).is_err());
    }
}
