//! Binding the ingest listeners.
//!
//! A Unix socket file outlives a crashed process. On start, a leftover file
//! nobody listens on is replaced; one that answers belongs to a running
//! daemon and is never stolen; anything that is not a socket is never
//! deleted.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{path}: another process is listening on this socket (is purgeq already running?)")]
    SocketInUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ListenError {
    let what = what.into();
    move |source| ListenError::Io { what, source }
}

/// Binds the Unix socket at `path` with file mode `mode`.
pub fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, ListenError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(ListenError::SocketInUse {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "replacing a stale socket left by an earlier run");
                std::fs::remove_file(path)
                    .map_err(io(format!("removing stale socket {}", path.display())))?;
            }
            Err(e) => return Err(io(format!("checking {}", path.display()))(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("checking {}", path.display()))(e)),
    }
    let listener = UnixListener::bind(path).map_err(io(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", path.display())))?;
    Ok(listener)
}

pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(io(format!("binding {addr}")))
}

/// Removes our socket file on a clean exit, if it is still ours.
pub fn remove_socket(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
        && let Err(error) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), %error, "could not remove the socket file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_sockets_are_replaced_live_ones_are_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.sock");
        let first = bind_unix(&path, 0o600).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            bind_unix(&path, 0o600),
            Err(ListenError::SocketInUse { .. })
        ));
        drop(first);
        // The file remains, nobody listens: stale.
        assert!(path.exists());
        let _second = bind_unix(&path, 0o660).expect("stale socket replaced");

        let file = dir.path().join("plain");
        std::fs::write(&file, "data").expect("write");
        assert!(matches!(
            bind_unix(&file, 0o600),
            Err(ListenError::NotASocket { .. })
        ));
        assert!(file.exists());
    }
}
