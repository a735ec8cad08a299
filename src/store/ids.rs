//! Ids that cross the store's API, as their own types: a batch id cannot
//! be passed where an item id is meant, nor any string where a request id
//! is; each prints as operators see it in `sqlite3` and in logs.

use std::fmt;

/// A row of `batches`: one purge call.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, serde::Serialize,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct BatchId(pub i64);

/// A row of `items`: one URL on one endpoint, in one generation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, serde::Serialize,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct ItemId(pub i64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A request's id: a UUIDv7 (it sorts by arrival), lower-case. Ids are
/// case-insensitive on the way in: [`RequestId::parse`] folds them.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    sqlx::Type,
    serde::Serialize,
    serde::Deserialize,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// A new id, for a request arriving now.
    pub fn generate() -> RequestId {
        RequestId(uuid::Uuid::now_v7().to_string())
    }

    /// An id as a client gave it. Any text is an id: one that names no
    /// request is simply not found.
    pub fn parse(text: &str) -> RequestId {
        RequestId(text.trim().to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
