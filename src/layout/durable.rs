//! Getting a backup onto the disk without a long wait at its end: the writeback of what was written is
//! started as the data arrives, so the sync that completes a backup finds little left to do.

use std::os::fd::AsRawFd;
use std::path::Path;

/// How much of a blob is written before its writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Follows one blob as it is written into a file, starting the writeback of every [`WRITEBACK_STEP`]
/// written. Blobs smaller than that are left to the final sync, which writes thousands of them in one go.
pub struct Writeback {
    /// Where the blob starts in the file.
    base: u64,
    written: u64,
    started: u64,
}

impl Writeback {
    /// A blob about to be written at `base`.
    pub fn new(base: u64) -> Writeback {
        Writeback { base, written: 0, started: 0 }
    }

    /// Records `n` more bytes written.
    pub fn wrote(&mut self, file: &impl AsRawFd, n: u64) {
        self.written += n;
        if self.written - self.started >= WRITEBACK_STEP {
            self.start(file);
        }
    }

    /// The blob is complete: starts the writeback of its tail, if it was large enough to have any.
    pub fn finish(&mut self, file: &impl AsRawFd) {
        if self.written >= WRITEBACK_STEP && self.written > self.started {
            self.start(file);
        }
    }

    fn start(&mut self, file: &impl AsRawFd) {
        start_writeback(file, self.base + self.started, self.written - self.started);
        self.started = self.written;
    }
}

/// Starts writing a range of a file to disk now, without waiting for it.
#[cfg(target_os = "linux")]
fn start_writeback(file: &impl AsRawFd, off: u64, len: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else { return };
    // SAFETY: a plain system call on a descriptor the caller keeps open; it touches no memory of ours.
    // A failure only leaves the work to the final sync, which reports errors.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Starts writing a range of a file to disk now (elsewhere than Linux the final sync does it all).
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &impl AsRawFd, _off: u64, _len: u64) {}

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

/// Waits until what a backup wrote below `dir` is on disk, elsewhere than Linux, where no call syncs
/// one filesystem: each blob was synced by [`sync_blob`] as it was completed, and this syncs the
/// directories below `dir` (their entries are the blobs' names), then flushes the drive's cache
/// where fsync leaves that out (macOS). `sync(2)` would not do: POSIX lets it return before the
/// writes are done.
#[cfg(not(target_os = "linux"))]
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    sync_directories(dir)?;
    #[cfg(target_vendor = "apple")]
    {
        let d = std::fs::File::open(dir)?;
        // SAFETY: a plain system call on a descriptor `d` keeps open. A filesystem without it (some
        // network filesystems) is left with what the fsyncs gave, as SQLite does.
        unsafe { libc::fcntl(d.as_raw_fd(), libc::F_FULLFSYNC) };
    }
    Ok(())
}

/// Puts one completed blob on the disk where [`sync_filesystem`] cannot reach it by itself (elsewhere
/// than Linux); on Linux it does nothing, as the final `syncfs` writes every blob in one go.
pub fn sync_blob(file: &std::fs::File) -> std::io::Result<()> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        fsync(file)
    }
}

// The fallback of platforms other than Linux is compiled, and tested, on Linux too: it cannot be
// built for them on the machines that test this crate.

/// fsync(2): the file's data and metadata to the device (on macOS not through the drive's cache,
/// which [`sync_filesystem`] flushes once for every blob).
fn fsync(file: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: a plain system call on a descriptor `file` keeps open.
    if unsafe { libc::fsync(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Syncs `dir` and every directory below it (not following links): a file renamed into place is
/// durable only once its directory is.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn sync_directories(dir: &Path) -> std::io::Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
        }
        match fsync(&std::fs::File::open(&d)?) {
            // POSIX allows EINVAL from a filesystem that cannot sync a directory: nothing more can be
            // done for its entries there, and the blobs themselves are synced.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            r => r?,
        }
    }
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
        let chunk = vec![7u8; 1 << 20];
        let mut writeback = Writeback::new(0);
        for _ in 0..9 {
            f.write_all(&chunk).expect("write");
            writeback.wrote(&f, chunk.len() as u64);
        }
        assert_eq!(writeback.started, WRITEBACK_STEP, "the first 8 MiB went to disk early");
        writeback.finish(&f);
        assert_eq!(writeback.started, 9 << 20, "the tail too, once complete");
        let mut small = Writeback::new(0);
        small.wrote(&f, 4096);
        small.finish(&f);
        assert_eq!(small.started, 0, "a small blob is left to the final sync");
        sync_filesystem(dir.path()).expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; 9 << 20]);
        assert!(sync_filesystem(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_fallback_of_other_platforms_syncs_blobs_and_every_directory_below_the_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        let f = std::fs::File::create(blobs.join("blob")).expect("create");
        sync_blob(&f).expect("sync_blob");
        fsync(&f).expect("fsync of a file");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("link")).expect("symlink");
        sync_directories(dir.path()).expect("every directory synced, the dangling link not followed");
        assert!(sync_directories(&dir.path().join("missing")).is_err(), "a missing root is an error");
    }
}
