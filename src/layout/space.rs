//! Refusing a backup that cannot fit before its blobs are downloaded: their sizes are known from
//! the manifests, and finding out after gigabytes have crossed the network wastes the transfer
//! window.

use anyhow::{bail, Result};
use std::path::Path;

/// What the filesystem holding `dir` has free for an unprivileged writer, and its block size;
/// `None` where that cannot be asked (the write then fails in its own words if the space runs out).
#[cfg(unix)]
pub fn free_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the struct it is given, which is plain data; the path is a
    // NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // The field types differ between platforms (u32 or u64): the casts are identities only on some.
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize, bsize) = (st.f_bavail as u64, st.f_frsize as u64, st.f_bsize as u64);
    let block = if frsize > 0 { frsize } else { bsize };
    Some((avail.saturating_mul(block), block.max(1)))
}

/// [`free_space`] where the platform has no statvfs: unknown.
#[cfg(not(unix))]
pub fn free_space(_dir: &Path) -> Option<(u64, u64)> {
    None
}

/// Fails before anything is written when `sizes` (one per file, each taking whole blocks) are more
/// than the filesystem of `dir` has free; `what` names the output in the message.
pub fn ensure_room(what: &Path, dir: &Path, sizes: impl IntoIterator<Item = u64>) -> Result<()> {
    let Some((free, block)) = free_space(dir) else { return Ok(()) };
    let need = sizes
        .into_iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.div_ceil(block).saturating_mul(block)));
    refuse_if_short(what, need, free)
}

fn refuse_if_short(what: &Path, need: u64, free: u64) -> Result<()> {
    if need > free {
        bail!(
            "not enough free space for {:?}: the backup needs {} and its filesystem has {} free; free some space or choose another --output",
            what,
            indicatif::HumanBytes(need),
            indicatif::HumanBytes(free)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_larger_than_the_free_space_is_refused_naming_both() {
        let e = refuse_if_short(Path::new("/mnt/x.tar"), 3 << 30, 1 << 30)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("\"/mnt/x.tar\"")
                && e.contains("3.00 GiB")
                && e.contains("1.00 GiB")
                && e.contains("--output"),
            "{e}"
        );
        assert!(refuse_if_short(Path::new("x"), 1 << 30, 1 << 30).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn free_space_is_known_here_and_counts_whole_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (free, block) = free_space(dir.path()).expect("statvfs of a temp dir");
        assert!(free > 0 && block >= 512, "{free} {block}");
        // One byte more than is free, in a single file, cannot fit; a file of one block still does,
        // unless full.
        assert!(ensure_room(dir.path(), dir.path(), [free + 1]).is_err());
        assert!(ensure_room(dir.path(), dir.path(), [] as [u64; 0]).is_ok());
        assert!(free_space(&dir.path().join("missing")).is_none());
    }
}
