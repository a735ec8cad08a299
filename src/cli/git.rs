//! The files a range of commits changed, as `git diff` reports them:
//! added, modified, deleted, and both names of a rename (with
//! `--no-renames` a rename is a deletion and an addition). Comparing the
//! two trees covers every commit of the range, merges included: a push of
//! five commits is not only its last one (`HEAD~1`).

use std::path::Path;
use std::process::Command;

use super::{EXIT_DATAERR, EXIT_UNAVAILABLE, EXIT_USAGE};

/// `OLD..NEW` split in two; `OLD...NEW` (from a merge base) is refused: a
/// deploy replaces OLD's tree with NEW's, whatever their history.
pub fn parse_range(range: &str) -> Result<(&str, &str), (u8, String)> {
    if range.contains("...") {
        return Err((
            EXIT_USAGE,
            format!(
                "--git {range}: give OLD..NEW (two dots): the deployed tree against the one it replaces"
            ),
        ));
    }
    match range.split_once("..") {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => Ok((old, new)),
        _ => Err((EXIT_USAGE, format!("--git {range}: expected OLD..NEW"))),
    }
}

/// The paths (relative to the repository's top) that differ between the
/// two revisions of `range` in the repository at `repo`.
pub fn changed_files(repo: &Path, range: &str) -> Result<Vec<String>, (u8, String)> {
    let (old, new) = parse_range(range)?;
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["diff", "--name-only", "-z", "--no-renames", old, new, "--"])
        .output()
        .map_err(|e| (EXIT_UNAVAILABLE, format!("cannot run git: {e}")))?;
    if !output.status.success() {
        return Err((
            EXIT_DATAERR,
            format!(
                "git diff {old} {new} in {}: {}",
                repo.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| {
            (
                EXIT_DATAERR,
                "git printed a file name that is not UTF-8".to_owned(),
            )
        })
        .map(|names| {
            names
                .split('\0')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_two_revisions() {
        assert_eq!(parse_range("v1..v2").ok(), Some(("v1", "v2")));
        assert!(parse_range("v1...v2").is_err());
        assert!(parse_range("v1").is_err());
        assert!(parse_range("..v2").is_err());
    }
}
