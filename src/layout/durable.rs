//! Getting a backup onto the disk without a long wait at its end, and without waiting for anyone
//! else's writes: the writeback of what was written is started as the data arrives, each file is
//! synced on its own as it is completed, many at once, and only the layout's directories are synced
//! at the end.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// How much of a blob is written before its writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Follows one blob as it is written into a file, starting the writeback of every
/// [`WRITEBACK_STEP`] written. Blobs smaller than that are left to the final sync, which writes
/// thousands of them in one go.
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
    // SAFETY: a plain system call on a descriptor the caller keeps open; it touches no memory of
    // ours. A failure only leaves the work to the final sync, which reports errors.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Starts writing a range of a file to disk now (elsewhere than Linux the final sync does it all).
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &impl AsRawFd, _off: u64, _len: u64) {}

/// Files being made durable and put in place in the background: each completed file is synced
/// (its own data only, never the rest of the filesystem's) and only then renamed to its name, so a
/// name in the layout always has its bytes on disk. Many syncs run at once, which lets the
/// filesystem commit them together; [`Sealer::wait`] waits for all of them.
pub struct Sealer {
    slots: Arc<Semaphore>,
    /// The seals under way; finished ones are reaped as new ones start, so that a backup of many
    /// thousands of files does not hold a finished task for each.
    pending: Mutex<Pending>,
}

/// Seals under way, and the first failure of those already reaped.
#[derive(Default)]
struct Pending {
    tasks: tokio::task::JoinSet<std::io::Result<()>>,
    failed: Option<std::io::Error>,
}

impl Pending {
    /// Keeps a finished seal's failure (the first one), or a task's panic as one.
    fn note(&mut self, done: Result<std::io::Result<()>, tokio::task::JoinError>) {
        let r = done.map_err(std::io::Error::other).and_then(|r| r);
        if let (Err(e), None) = (r, &self.failed) {
            self.failed = Some(e);
        }
    }
}

/// Syncs in flight at once: enough for a journal to batch thousands of small files' commits.
const SEALS_AT_ONCE: usize = 64;

impl Default for Sealer {
    fn default() -> Self {
        Sealer {
            slots: Arc::new(Semaphore::new(SEALS_AT_ONCE)),
            pending: Mutex::new(Pending::default()),
        }
    }
}

impl Sealer {
    /// Syncs `file` (written at `tmp`) and renames it to `path`, in the background; waits only for
    /// a free slot. A failure removes `tmp` and is reported by [`Sealer::wait`].
    pub async fn seal(
        &self,
        file: std::fs::File,
        tmp: PathBuf,
        path: PathBuf,
    ) -> std::io::Result<()> {
        let permit = self.slots.clone().acquire_owned().await.map_err(std::io::Error::other)?;
        let seal = move || {
            let _permit = permit;
            let done = file.sync_data().and_then(|()| std::fs::rename(&tmp, &path));
            if done.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            done.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot put {} on disk: {e}", path.display()))
            })
        };
        let mut pending =
            self.pending.lock().map_err(|_| std::io::Error::other("internal lock poisoned"))?;
        while let Some(done) = pending.tasks.try_join_next() {
            pending.note(done);
        }
        pending.tasks.spawn_blocking(seal);
        Ok(())
    }

    /// Waits for every file sealed so far; the first failure, if any.
    pub async fn wait(&self) -> std::io::Result<()> {
        let mut pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .map_err(|_| std::io::Error::other("internal lock poisoned"))?,
        );
        while let Some(done) = pending.tasks.join_next().await {
            pending.note(done);
        }
        pending.failed.map_or(Ok(()), Err)
    }
}

/// Makes the renames below `dir` durable: syncs `dir` and every directory below it (the files were
/// synced by the [`Sealer`]), then, on macOS, flushes the drive's cache, which fsync leaves out.
/// Only this layout's directories are synced, never the whole filesystem: other programs' unwritten
/// data is not this backup's to wait for.
pub fn sync_layout(dir: &Path) -> std::io::Result<()> {
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

/// fsync(2): the file's data and metadata to the device (on macOS not through the drive's cache,
/// which [`sync_layout`] flushes once).
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
            // POSIX allows EINVAL from a filesystem that cannot sync a directory: nothing more can
            // be done for its entries there, and the blobs themselves are synced.
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
        sync_layout(dir.path()).expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; 9 << 20]);
        assert!(sync_layout(&dir.path().join("missing")).is_err());
    }

    #[tokio::test]
    async fn sealed_files_appear_under_their_names_only_once_synced_and_failures_are_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        let sealer = Sealer::default();
        for i in 0..200 {
            let tmp = blobs.join(format!(".b{i}.partial"));
            let mut f = std::fs::File::create(&tmp).expect("create");
            f.write_all(format!("blob {i}").as_bytes()).expect("write");
            sealer.seal(f, tmp, blobs.join(format!("b{i}"))).await.expect("seal");
        }
        sealer.wait().await.expect("every seal");
        assert_eq!(std::fs::read(blobs.join("b199")).expect("read"), b"blob 199");
        assert!(!blobs.join(".b0.partial").exists());
        let tmp = blobs.join(".x.partial");
        let f = std::fs::File::create(&tmp).expect("create");
        sealer.seal(f, tmp.clone(), dir.path().join("no/such/dir/x")).await.expect("queued");
        assert!(sealer.wait().await.is_err(), "a rename that fails is reported");
        assert!(!tmp.exists(), "and leaves nothing behind");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("link")).expect("symlink");
        sync_directories(dir.path())
            .expect("every directory synced, the dangling link not followed");
        assert!(
            sync_directories(&dir.path().join("missing")).is_err(),
            "a missing root is an error"
        );
    }
}
