//! Learning tags from the origin's access log (issue 35, `[tags]
//! access_log`): the file is followed as `tail -F` follows it, and each
//! line that names tags (`crate::tags::parse_log_line`) feeds the tag
//! registry. Runs on every node, leader or not (beside the pipeline, not
//! in it): each host has its own log, and the registry is the fleet's.
//!
//! [`Follower`] is the file side alone, so the rotation and truncation
//! rules are tested on real files without a daemon.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::store::{Store, TagFeed, TagSource, Timestamp};
use crate::tags::{LogLine, parse_log_line};
use crate::target::Requested;

/// How often the file is looked at.
const POLL: Duration = Duration::from_millis(250);

/// Bytes read per look: a log written faster is caught up over several
/// looks, and memory stays bounded.
const READ_PER_LOOK: u64 = 4 * 1024 * 1024;

/// A line longer than this is not one of ours: it is counted bad and
/// skipped, rather than held in memory until its end comes.
const MAX_LINE: usize = 64 * 1024;

/// URLs fed to the registry per write.
const FEED_BATCH: usize = 1_000;

/// Follows one file by name across rotation (renamed, a new file created
/// under the name) and truncation (`copytruncate`): every complete line
/// is returned once, in order. A line not yet ended by a newline waits
/// for its end; the last line of a rotated file is returned as it is.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// The file being read, its inode and where reading stopped.
    open: Option<(File, u64, u64)>,
    partial: Vec<u8>,
    /// Lines dropped for being longer than [`MAX_LINE`].
    pub overlong: u64,
}

impl Follower {
    /// Starts at the beginning of the file: lines written while the
    /// daemon was down are learned too (a URL's newest line wins, so
    /// reading one again changes nothing).
    pub fn new(path: PathBuf) -> Follower {
        Follower {
            path,
            open: None,
            partial: Vec::new(),
            overlong: 0,
        }
    }

    /// The complete lines appended since the last call.
    pub fn read_lines(&mut self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        // Twice at most: the rest of a rotated file, then the new one.
        for _ in 0..2 {
            if self.open.is_none() {
                match File::open(&self.path) {
                    Ok(file) => {
                        let inode = file.metadata()?.ino();
                        self.open = Some((file, inode, 0));
                    }
                    Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(lines),
                    Err(error) => return Err(error),
                }
            }
            let Some((file, inode, position)) = self.open.as_mut() else {
                return Ok(lines);
            };
            if file.metadata()?.len() < *position {
                // Truncated in place: what is there now was written since.
                *position = 0;
                self.partial.clear();
            }
            file.seek(SeekFrom::Start(*position))?;
            let mut chunk = Vec::new();
            let read = file.take(READ_PER_LOOK).read_to_end(&mut chunk)?;
            *position += read as u64;
            split(&mut self.partial, &mut self.overlong, &chunk, &mut lines);
            if read as u64 == READ_PER_LOOK {
                return Ok(lines);
            }
            let renamed = match std::fs::metadata(&self.path) {
                Ok(meta) => meta.ino() != *inode,
                // Renamed and not created again yet: keep reading the old.
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => return Err(error),
            };
            if !renamed {
                return Ok(lines);
            }
            // The old file is read to its end: its unended last line is a
            // line, then the new file from its start.
            if !self.partial.is_empty() {
                lines.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            }
            self.open = None;
        }
        Ok(lines)
    }
}

/// Cuts `chunk` into lines, `partial` holding the start of an unended one.
fn split(partial: &mut Vec<u8>, overlong: &mut u64, chunk: &[u8], lines: &mut Vec<String>) {
    let mut rest = chunk;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        if partial.len() + end <= MAX_LINE {
            partial.extend_from_slice(&rest[..end]);
            lines.push(String::from_utf8_lossy(partial).into_owned());
        } else {
            *overlong += 1;
        }
        partial.clear();
        rest = &rest[end + 1..];
    }
    if partial.len() + rest.len() <= MAX_LINE {
        partial.extend_from_slice(rest);
    } else if !rest.is_empty() {
        // Too long already: drop what came, count it when it ends.
        partial.clear();
        partial.resize(MAX_LINE + 1, b' ');
    }
}

/// Follows `tags.access_log` while it is configured (a reload may set,
/// change or clear it).
pub(super) async fn run(
    store: Store,
    settings: watch::Receiver<Arc<Settings>>,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let mut follower: Option<Follower> = None;
    loop {
        let settings = settings.borrow().clone();
        match &settings.tags.access_log {
            None => follower = None,
            Some(path) => {
                if follower.as_ref().is_none_or(|f| &f.path != path) {
                    tracing::info!(path = %path.display(), "learning tags from the access log");
                    follower = Some(Follower::new(path.clone()));
                }
                if let Some(mut current) = follower.take() {
                    let (back, lines) = tokio::task::spawn_blocking(move || {
                        let lines = current.read_lines();
                        (current, lines)
                    })
                    .await
                    .unwrap_or_else(|_| (Follower::new(path.clone()), Ok(Vec::new())));
                    follower = Some(back);
                    match lines {
                        Ok(lines) if !lines.is_empty() => {
                            learn(&store, &settings, &clock, &stop, &lines).await
                        }
                        Ok(_) => {}
                        Err(error) => tracing::warn!(
                            %error, path = %path.display(), "cannot read the access log"
                        ),
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Feeds the registry with what `lines` name; a line that cannot be read
/// (or names a URL no endpoint serves) is counted and skipped.
async fn learn(
    store: &Store,
    settings: &Settings,
    clock: &SharedClock,
    stop: &CancellationToken,
    lines: &[String],
) {
    let (mut nothing, mut bad) = (0u64, 0u64);
    let mut feed = Vec::new();
    for line in lines {
        match parse_log_line(line) {
            Ok(LogLine::Nothing) => nothing += 1,
            Ok(LogLine::Tagged { url, mut tags }) => match settings.derived.router.target(
                &url,
                Requested::File,
                settings.ingest.max_url_length,
            ) {
                Ok(target) => {
                    crate::tags::bound_tags(&mut tags, settings.tags.max_tags_per_url);
                    feed.push(TagFeed {
                        url: target.url,
                        tags,
                    });
                }
                Err(error) => {
                    bad += 1;
                    tracing::debug!(%error, url, "access log: a URL no endpoint serves");
                }
            },
            Err(why) => {
                bad += 1;
                tracing::debug!(reason = why.0, line, "access log: a line skipped");
            }
        }
    }
    crate::metrics::tag_log_lines(feed.len() as u64, nothing, bad);
    for chunk in feed.chunks(FEED_BATCH) {
        // The registry is written until it takes the chunk: a line read
        // is not read again, so giving up would lose what it taught.
        loop {
            match store
                .feed_tags(
                    chunk.to_vec(),
                    TagSource::AccessLog,
                    settings.tags.max_urls,
                    Timestamp::new(clock.now_utc()),
                )
                .await
            {
                Ok(outcome) => {
                    crate::metrics::tags_learned("access_log", &outcome);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot record the tags of the access log; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &std::path::Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        file.write_all(text.as_bytes()).expect("append");
    }

    /// Lines appended, the file rotated (renamed, then created again) and
    /// truncated while it is followed: every line once, in order, and an
    /// unended line waits for its end.
    #[test]
    fn every_line_once_across_rotation_and_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let mut follower = Follower::new(path.clone());
        assert!(follower.read_lines().expect("no file yet").is_empty());

        append(&path, "1\n2\n3");
        assert_eq!(follower.read_lines().expect("read"), ["1", "2"]);
        append(&path, "a\n");
        assert_eq!(follower.read_lines().expect("read"), ["3a"]);

        // Rotation: a line written to the old file after the rename is
        // still read, before the new file's.
        std::fs::rename(&path, dir.path().join("access.log.1")).expect("rotate");
        append(&dir.path().join("access.log.1"), "4\n5");
        assert_eq!(follower.read_lines().expect("read"), ["4"]);
        append(&path, "6\n");
        assert_eq!(follower.read_lines().expect("read"), ["5", "6"]);
        append(&path, "7\n");
        assert_eq!(follower.read_lines().expect("read"), ["7"]);

        // Truncation in place (copytruncate), then new lines.
        std::fs::File::create(&path).expect("truncate");
        append(&path, "8\n");
        assert_eq!(follower.read_lines().expect("read"), ["8"]);
        assert!(follower.read_lines().expect("read").is_empty());
    }

    #[test]
    fn an_overlong_line_is_dropped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let mut follower = Follower::new(path.clone());
        append(&path, &"x".repeat(MAX_LINE + 10));
        assert!(follower.read_lines().expect("read").is_empty());
        append(&path, "tail\nnext\n");
        assert_eq!(follower.read_lines().expect("read"), ["next"]);
        assert_eq!(follower.overlong, 1);
    }
}
