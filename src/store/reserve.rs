//! Space kept in reserve next to the database, for a full disk.
//!
//! When the disk fills up, SQLite can no longer grow its write-ahead log,
//! so the daemon could not even record that a batch went out, and sending
//! would stop with the intake. So at start the store sets aside a file of
//! `store.reserve_bytes` (`<database>.reserve`). On the first "disk full"
//! it deletes the file. Work already queued can then be sent and recorded
//! in the space it frees, while new intents are refused (503) until the
//! file system has room for the reserve again, with as much to spare. Then
//! the reserve is set aside anew and intents are accepted again.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub(crate) struct SpaceReserve {
    path: PathBuf,
    bytes: u64,
}

impl SpaceReserve {
    /// The reserve of the database at `database`; `bytes` 0 disables it.
    pub(crate) fn new(database: &Path, bytes: u64) -> Self {
        let mut name = database.as_os_str().to_owned();
        name.push(".reserve");
        Self {
            path: PathBuf::from(name),
            bytes,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.bytes > 0
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sets the reserve aside (written out, not sparse, so the space is
    /// really taken). Leaves no partial file behind on failure.
    pub(crate) fn set_aside(&self) -> std::io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes) {
            return Ok(());
        }
        let written = (|| {
            let mut file = std::fs::File::create(&self.path)?;
            let block = vec![0u8; 64 * 1024];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                file.write_all(&block[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        written
    }

    /// Gives the space back to the file system; true if there was any.
    pub(crate) fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// True when the reserve file is in place.
    pub(crate) fn is_set_aside(&self) -> bool {
        self.enabled() && self.path.exists()
    }

    /// Free bytes for unprivileged users on the database's file system.
    pub(crate) fn free_bytes(&self) -> std::io::Result<u64> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: statvfs only writes into `stat`, which is plain data and
        // sized for it; `c_path` is NUL-terminated and outlives the call.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Room to set the reserve aside again and still have as much free.
    pub(crate) fn room_to_resume(&self) -> bool {
        self.free_bytes()
            .is_ok_and(|free| free >= self.bytes.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_aside_and_releases_exactly_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reserve = SpaceReserve::new(&dir.path().join("purgeq.db"), 100_000);
        assert!(!reserve.is_set_aside());
        reserve.set_aside().expect("set aside");
        let file = dir.path().join("purgeq.db.reserve");
        assert_eq!(std::fs::metadata(&file).expect("file").len(), 100_000);
        assert!(reserve.is_set_aside());
        assert!(reserve.release());
        assert!(!file.exists());
        assert!(!reserve.release());
        assert!(reserve.free_bytes().expect("statvfs") > 0);
    }

    #[test]
    fn zero_bytes_disables_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reserve = SpaceReserve::new(&dir.path().join("purgeq.db"), 0);
        reserve.set_aside().expect("nothing to do");
        assert!(!dir.path().join("purgeq.db.reserve").exists());
        assert!(!reserve.is_set_aside());
    }
}
