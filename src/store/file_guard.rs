//! Watches the database file itself, which SQLite does not.
//!
//! An open SQLite connection keeps working when its file is removed or
//! replaced (it writes on to the old inode, which vanishes at the next
//! start) and when the file's mode changes (the check is made at open).
//! In both cases an intent acknowledged now would be lost, or the daemon
//! would not start again, so the writer asks this guard before storing
//! new intents, and refuses them with the reason while it objects.
//! Work already stored goes on: it was acknowledged, and finishing it
//! costs nothing that is not already lost.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub(crate) struct DatabaseFile {
    path: PathBuf,
    /// `(device, inode)` of the file opened at start.
    identity: (u64, u64),
}

impl DatabaseFile {
    /// Remembers which file `path` is now.
    pub(crate) fn new(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// Why new intents must not be stored now, if they must not: two
    /// system calls, cheap next to a commit.
    pub(crate) fn check(&self) -> Result<(), String> {
        let path = self.path.display();
        let metadata = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "the database file {path} was removed while the daemon runs; new intents \
                     are refused (they would be lost at the next start). Put the file back, or \
                     restart the daemon to begin a new, empty database"
                ));
            }
            Err(error) => return Err(format!("cannot inspect the database file {path}: {error}")),
        };
        if (metadata.dev(), metadata.ino()) != self.identity {
            return Err(format!(
                "the database file {path} was replaced by another file while the daemon runs; \
                 new intents are refused (they would go to the old file). Restart the daemon \
                 to use the new one"
            ));
        }
        if let Err(error) = writable(&self.path) {
            return Err(format!(
                "the database file {path} is no longer writable by this process ({error}); \
                 new intents are refused (the daemon could not open it again after a \
                 restart). Restore its mode, owner or mount"
            ));
        }
        Ok(())
    }
}

/// `access(2)` with `W_OK`: the permission check an open for writing would
/// make, for the process's ids (read-only mounts and immutable files
/// included, which even root cannot write).
fn writable(path: &Path) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call; access(2) only reads it.
    if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_to_a_removed_or_replaced_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, b"x").expect("write");
        let guard = DatabaseFile::new(&path).expect("guard");
        // Held open, as SQLite holds it, so its inode cannot be reused by
        // the replacement below.
        let _held = std::fs::File::open(&path).expect("open");
        assert_eq!(guard.check(), Ok(()));

        std::fs::remove_file(&path).expect("remove");
        let reason = guard.check().expect_err("removed");
        assert!(reason.contains("was removed"), "{reason}");

        std::fs::write(&path, b"y").expect("write");
        let reason = guard.check().expect_err("replaced");
        assert!(reason.contains("was replaced"), "{reason}");
    }
}
