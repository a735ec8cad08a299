//! What a build changed, from two build manifests: `purgeq enqueue
//! --manifest OLD.json NEW.json --base-url URL`. Pure functions.
//!
//! Shapes read:
//! - purgeq's own, `{"path": "content hash"}`: a path whose hash changed,
//!   or that is gone, is purged; a new path needs no purge;
//! - an asset manifest that maps names to emitted, content-hashed files
//!   (webpack's `{"main.js": "static/main.3f2a.js"}`, every value a file
//!   name: it has a `.` or a `/`), and Vite's `{"src/main.ts": {"file":
//!   "assets/main.4889e940.js", "css": […], "assets": […]}}`: an emitted
//!   file of the old build that the new one does not emit is purged (the
//!   CDN would keep serving it); new ones have new names and need none.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A manifest, read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Manifest {
    /// path → content hash.
    Hashes(BTreeMap<String, String>),
    /// The files a build emitted (content-hashed names).
    Emitted(BTreeSet<String>),
}

/// The paths to purge between two builds, sorted.
pub fn changed(old: &Value, new: &Value) -> Result<Vec<String>, String> {
    match (
        read(old, "the old manifest")?,
        read(new, "the new manifest")?,
    ) {
        (Manifest::Hashes(old), Manifest::Hashes(new)) => Ok(old
            .into_iter()
            .filter(|(path, hash)| new.get(path) != Some(hash))
            .map(|(path, _)| path)
            .collect()),
        (Manifest::Emitted(old), Manifest::Emitted(new)) => {
            Ok(old.difference(&new).cloned().collect())
        }
        _ => Err(
            "the two manifests have different shapes: compare builds made the same way".to_owned(),
        ),
    }
}

fn read(value: &Value, which: &str) -> Result<Manifest, String> {
    let Some(object) = value.as_object() else {
        return Err(format!("{which} is not a JSON object"));
    };
    if object.values().all(Value::is_string) {
        let pairs: BTreeMap<String, String> = object
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let all_files =
            !pairs.is_empty() && pairs.values().all(|v| v.contains('.') || v.contains('/'));
        return Ok(if all_files {
            Manifest::Emitted(pairs.into_values().map(|v| clean(&v)).collect())
        } else {
            Manifest::Hashes(pairs.into_iter().map(|(k, v)| (clean(&k), v)).collect())
        });
    }
    let mut emitted = BTreeSet::new();
    for (key, entry) in object {
        let Some(file) = entry.get("file").and_then(Value::as_str) else {
            return Err(format!(
                "{which}: entry {key:?} is neither a hash, a file name, nor a Vite entry with \"file\""
            ));
        };
        emitted.insert(clean(file));
        for list in ["css", "assets"] {
            for item in entry
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(item) = item.as_str() {
                    emitted.insert(clean(item));
                }
            }
        }
    }
    Ok(Manifest::Emitted(emitted))
}

/// Paths relative to the base: `/static/a.js` and `./a.js` are `static/a.js`
/// and `a.js`.
fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hashes_purge_what_changed_or_went_and_skip_what_is_new() {
        let old = json!({"index.html": "a1", "app.css": "b2", "gone.js": "c3", "same.js": "d4"});
        let new = json!({"index.html": "a9", "app.css": "b2", "same.js": "d4", "new.js": "e5"});
        assert_eq!(
            changed(&old, &new).expect("changed"),
            ["gone.js", "index.html"]
        );
    }

    #[test]
    fn emitted_files_of_the_old_build_that_the_new_one_lacks_are_purged() {
        let old = json!({"main.js": "/static/main.3f2a.js", "vendor.js": "/static/vendor.11aa.js"});
        let new = json!({"main.js": "/static/main.9c9c.js", "vendor.js": "/static/vendor.11aa.js"});
        assert_eq!(
            changed(&old, &new).expect("changed"),
            ["static/main.3f2a.js"]
        );
    }

    #[test]
    fn vite_entries_with_their_css_and_assets() {
        let old = json!({
            "src/main.ts": {"file": "assets/main.4889e940.js", "css": ["assets/main.b82dbe22.css"], "isEntry": true},
            "src/logo.svg": {"file": "assets/logo.1234.svg"}
        });
        let new = json!({
            "src/main.ts": {"file": "assets/main.5555.js", "css": ["assets/main.b82dbe22.css"], "isEntry": true},
            "src/logo.svg": {"file": "assets/logo.1234.svg"}
        });
        assert_eq!(
            changed(&old, &new).expect("changed"),
            ["assets/main.4889e940.js"]
        );
    }

    #[test]
    fn shapes_that_do_not_match_are_refused() {
        assert!(changed(&json!([]), &json!({})).is_err());
        assert!(changed(&json!({"a": "1"}), &json!({"a": {"file": "a.js"}})).is_err());
        assert!(changed(&json!({"a": {"x": 1}}), &json!({})).is_err());
    }
}
