//! From a deploy's changed files to the URLs to purge: the
//! `[[deploy.map]]` tables of the configuration say which directory of the
//! repository (or build output) is served at which URL. Pure functions:
//! `enqueue --git` asks git for the files and calls these.

use url::Url;

use super::paths::url_for_path;
use crate::config::DeployMap;

/// The URLs for a deploy's files, and the files no map covers (counted,
/// never silently dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    pub urls: Vec<String>,
    pub unmapped: Vec<String>,
}

/// Maps each file through the map with the longest matching `path`; a
/// file named in that map's `index` also purges its directory's URL.
pub fn map_paths(maps: &[DeployMap], files: &[String]) -> Result<Mapped, String> {
    let mut mapped = Mapped::default();
    let mut seen = std::collections::HashSet::new();
    for file in files {
        let Some(map) = maps
            .iter()
            .filter(|m| file.starts_with(m.path.as_str()))
            .max_by_key(|m| m.path.len())
        else {
            mapped.unmapped.push(file.clone());
            continue;
        };
        let base =
            Url::parse(&map.url).map_err(|e| format!("deploy.map url {:?}: {e}", map.url))?;
        let relative = &file[map.path.len()..];
        let mut urls = vec![url_for_path(&base, relative)?];
        let (directory, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        if map.index.iter().any(|index| index == name) {
            urls.push(if directory.is_empty() {
                base.to_string()
            } else {
                url_for_path(&base, &format!("{directory}/"))?
            });
        }
        for url in urls {
            if seen.insert(url.clone()) {
                mapped.urls.push(url);
            }
        }
    }
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(path: &str, url: &str, index: &[&str]) -> DeployMap {
        DeployMap {
            path: path.into(),
            url: url.into(),
            index: index.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_longest_map_wins_and_index_files_purge_their_directory() {
        let maps = [
            map("public/", "https://www.example.com/", &["index.html"]),
            map("public/static/", "https://static.example.com/", &[]),
        ];
        let files: Vec<String> = [
            "public/docs/index.html",
            "public/index.html",
            "public/static/app.js",
            "public/a b#.css",
            "src/main.rs",
            "publicity/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mapped = map_paths(&maps, &files).expect("mapped");
        assert_eq!(
            mapped.urls,
            [
                "https://www.example.com/docs/index.html",
                "https://www.example.com/docs/",
                "https://www.example.com/index.html",
                "https://www.example.com/",
                "https://static.example.com/app.js",
                "https://www.example.com/a%20b%23.css",
            ]
        );
        assert_eq!(mapped.unmapped, ["src/main.rs", "publicity/x"]);
    }
}
