//! Turning what deploy scripts have into purge URLs: file paths under a
//! base URL, lines of URLs with comments, and git's quoted file names.
//!
//! Pure functions: `enqueue` reads standard input and calls these. The
//! README's old recipe (`git diff --name-only | sed 's|^|http://…/|'`)
//! queued wrong URLs for names with `#`, `?`, `%`, spaces or non-ASCII
//! characters (issue 12): a path is text, and only percent-encoding each of
//! its segments makes it a URL that names the same file.

use url::Url;

/// The URL of `path` under `base`: each segment of the path is
/// percent-encoded (`#`, `?`, `%`, spaces, non-ASCII), so the URL names
/// exactly that file. `base` must be a directory URL (ending in `/`).
pub fn url_for_path(base: &Url, path: &str) -> Result<String, String> {
    if !base.path().ends_with('/') {
        return Err(format!("--base-url {base} must end with '/'"));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(format!("--base-url {base} must have no query or fragment"));
    }
    let relative = path.trim_start_matches("./").trim_start_matches('/');
    if relative.is_empty() {
        return Err(format!("path {path:?} is empty"));
    }
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| format!("--base-url {base} cannot have a path"))?;
        segments.pop_if_empty();
        for segment in relative.split('/') {
            match segment {
                "" => {}
                "." | ".." => {
                    return Err(format!(
                        "path {path:?} has a {segment:?} segment: give paths relative to the base, without dot segments"
                    ));
                }
                segment => {
                    segments.push(segment);
                }
            }
        }
        if relative.ends_with('/') {
            segments.push("");
        }
    }
    Ok(url.into())
}

/// Undoes git's quoting of unusual file names (`core.quotePath`): a name
/// in double quotes with C escapes, non-ASCII bytes as octal (`"\344\270\255.js"`
/// is `中.js`). Anything not quoted is returned as it is.
pub fn unquote_git(name: &str) -> Result<String, String> {
    let Some(inner) = name
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return Ok(name.to_owned());
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let escape = *bytes
            .get(i + 1)
            .ok_or_else(|| format!("{name}: a quoted name ends with '\\'"))?;
        let (byte, used) = match escape {
            b'\\' => (b'\\', 2),
            b'"' => (b'"', 2),
            b'a' => (0x07, 2),
            b'b' => (0x08, 2),
            b'f' => (0x0c, 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            b'v' => (0x0b, 2),
            b'0'..=b'3' => {
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
                    .ok_or_else(|| format!("{name}: a bad octal escape"))?;
                let value = digits
                    .iter()
                    .fold(0u16, |acc, d| acc * 8 + u16::from(d - b'0'));
                (
                    u8::try_from(value).map_err(|_| format!("{name}: a bad octal escape"))?,
                    4,
                )
            }
            other => {
                return Err(format!("{name}: unknown escape '\\{}'", char::from(other)));
            }
        };
        out.push(byte);
        i += used;
    }
    String::from_utf8(out).map_err(|_| format!("{name}: the name is not UTF-8"))
}

/// One line of a URL list: blank lines and `#` comments (whole-line, or
/// after white space) carry nothing; a URL is never split by white space,
/// so a line that still holds some after the comment is cut is refused
/// rather than guessed at (`x.js # note` had become `x.js%20`).
pub fn url_from_line(line: &str) -> Result<Option<String>, String> {
    let text = match line.find(|c: char| c.is_whitespace()) {
        Some(_) => {
            let mut cut = line.len();
            for (index, c) in line.char_indices() {
                if c == '#' && (index == 0 || line[..index].ends_with(char::is_whitespace)) {
                    cut = index;
                    break;
                }
            }
            &line[..cut]
        }
        None if line.starts_with('#') => "",
        None => line,
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    no_white_space(text)?;
    Ok(Some(text.to_owned()))
}

/// A URL has no white space, however it was given (a line of standard
/// input, an argument): refused with what to write instead.
pub fn no_white_space(url: &str) -> Result<(), String> {
    if url.contains(char::is_whitespace) {
        return Err(format!(
            "{url:?} contains white space: a URL has none (write a space as %20; use --base-url with --paths for file names)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://www.example.com/").expect("base")
    }

    #[test]
    fn paths_become_the_urls_of_those_files() {
        // The names that the README's old sed recipe got wrong (issue 12).
        let cases = [
            ("docs/c#.html", "http://www.example.com/docs/c%23.html"),
            ("docs/a b?.css", "http://www.example.com/docs/a%20b%3F.css"),
            ("docs/100%.txt", "http://www.example.com/docs/100%25.txt"),
            ("docs/中.js", "http://www.example.com/docs/%E4%B8%AD.js"),
            ("./index.html", "http://www.example.com/index.html"),
            ("/abs/x.js", "http://www.example.com/abs/x.js"),
            ("docs/", "http://www.example.com/docs/"),
        ];
        for (path, url) in cases {
            assert_eq!(url_for_path(&base(), path).as_deref(), Ok(url), "{path}");
        }
        let under = Url::parse("https://cdn.example.com/static/").expect("base");
        assert_eq!(
            url_for_path(&under, "app.js").as_deref(),
            Ok("https://cdn.example.com/static/app.js")
        );
        // Each URL normalizes to itself: what is stored names that file.
        for (path, _) in cases {
            let url = url_for_path(&base(), path).expect("url");
            let stored = crate::target::normalize(&url, 2048).expect("valid");
            assert_eq!(stored.as_str(), url, "{path}");
        }
    }

    #[test]
    fn bad_paths_and_bases_are_refused() {
        assert!(url_for_path(&base(), "a/../b").is_err());
        assert!(url_for_path(&base(), "").is_err());
        let no_slash = Url::parse("http://www.example.com/static").expect("base");
        assert!(url_for_path(&no_slash, "x").is_err());
    }

    #[test]
    fn git_quoted_names_are_unquoted() {
        assert_eq!(
            unquote_git(r#""docs/\344\270\255.js""#).as_deref(),
            Ok("docs/中.js")
        );
        assert_eq!(unquote_git(r#""a\"b\\c""#).as_deref(), Ok("a\"b\\c"));
        assert_eq!(unquote_git("plain/name.js").as_deref(), Ok("plain/name.js"));
        assert!(unquote_git(r#""\9""#).is_err());
    }

    #[test]
    fn comments_are_not_part_of_a_url() {
        assert_eq!(
            url_from_line("http://www.example.com/x.js # inline comment"),
            Ok(Some("http://www.example.com/x.js".into()))
        );
        assert_eq!(url_from_line("# a whole line"), Ok(None));
        assert_eq!(url_from_line("   "), Ok(None));
        // A '#' inside a URL is its fragment, not a comment.
        assert_eq!(
            url_from_line("http://www.example.com/a#b"),
            Ok(Some("http://www.example.com/a#b".into()))
        );
        assert!(url_from_line("http://www.example.com/a b.js").is_err());
    }
}
