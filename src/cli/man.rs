//! The parts of the man pages that `--help` does not have: exit status,
//! files, environment, signals and examples, appended as roff after what
//! clap_mangen renders from the command definitions (issue 29, item 14:
//! the pages were the `--help` text only, and `purgeq man enqueue` did not
//! explain the deploy maps its own error pointed to).

/// The exit codes every command uses (sysexits, as `super::EXIT_*`).
const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Done.
.TP
\fB1\fR
\fBenqueue \-\-wait\fR, \fBpreload \-\-wait\fR: some URL failed or was cancelled.
.TP
\fB2\fR
The arguments could not be parsed (clap's own code).
.TP
\fB64\fR
The command was used incorrectly (EX_USAGE).
.TP
\fB65\fR
The input was refused: a bad URL, path or manifest (EX_DATAERR). Nothing was posted.
.TP
\fB66\fR
An input file does not exist, or what was asked for (a request id) is not there (EX_NOINPUT).
.TP
\fB69\fR
The daemon or the database cannot be reached (EX_UNAVAILABLE).
.TP
\fB70\fR
An internal error (EX_SOFTWARE).
.TP
\fB75\fR
Try again later: timed out, sending paused, or the daemon busy (EX_TEMPFAIL).
.TP
\fB77\fR
The daemon refused the token (EX_NOPERM).
.TP
\fB78\fR
The configuration is wrong; every problem is named with its key (EX_CONFIG).
"#;

const FILES: &str = r#".SH FILES
.TP
\fI/etc/purgeq/purgeq.toml\fR
The configuration, when \fB\-\-config\fR is not given. Relative paths in it
(\fBingest.socket\fR, \fBstore.path\fR, \fBcdn.key_value_file\fR,
\fBingest.token_file\fR) are relative to the file's directory.
.TP
\fI/run/purgeq/purgeq.sock\fR
The daemon's Unix socket (\fBingest.socket\fR in the packaged configuration).
.TP
\fI/var/lib/purgeq/purgeq.db\fR
The SQLite store (\fBstore.path\fR), readable with \fBsqlite3 \-readonly\fR.
"#;

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
\fBPURGEQ__SECTION__KEY\fR
Overrides a configuration key, e.g. \fBPURGEQ__BATCH__LINGER=5s\fR.
.TP
\fBPURGEQ_TOKEN\fR
The bearer token client commands send with \fB\-\-http\fR.
.TP
\fBRUST_LOG\fR
Overrides \fBlog.level\fR.
.TP
\fBCREDENTIALS_DIRECTORY\fR
systemd's credentials: \fIcdn\-key\-value\fR there is the CDN key when
\fBcdn.key_value\fR and \fBcdn.key_value_file\fR are not set.
"#;

const SIGNALS: &str = r#".SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
\fBserve\fR stops taking intents, lets calls on the wire finish (within
\fBdaemon.shutdown_timeout\fR), commits, and exits 0. Nothing accepted is
lost: what is still queued is sent after the next start.
.TP
\fBSIGHUP\fR
\fBserve\fR reads the configuration again; a bad one is refused and the
running one kept. Keys that need a restart are named in the log.
"#;

const DEPLOY_MAPS: &str = r#".SH "DEPLOY MAPS"
\fB\-\-git\fR and \fB\-\-manifest\fR (without \fB\-\-base\-url\fR) turn the
paths a deploy changed into URLs through \fB[[deploy.map]]\fR tables in the
configuration:
.PP
.nf
[[deploy.map]]
path = "public/"                  # a directory of the repository, ending in /
url = "https://www.example.com/"  # where it is served, ending in /
index = ["index.html"]            # files its directory URL answers for
.fi
.PP
A changed path is mapped by the table with the longest matching \fBpath\fR:
\fIpublic/a b.css\fR becomes \fIhttps://www.example.com/a%20b.css\fR (each
segment percent\-encoded). A changed file named in \fBindex\fR also purges the
page at its directory's URL (\fIpublic/docs/index.html\fR also purges
\fIhttps://www.example.com/docs/\fR), as one file: never as a directory
purge of everything below it. Every URL of a deploy is purged as a file;
\fB\-\-dry\-run\fR lists each with its kind. Files no table covers are
counted, and listed with \fB\-\-verbose\fR.
"#;

/// Examples for the main page and the commands that have them.
fn examples(command: Option<&str>) -> Option<&'static str> {
    Some(match command {
        None => {
            r#".SH EXAMPLES
.nf
purgeq serve
purgeq enqueue \-\-wait https://www.example.com/app.js
purgeq enqueue \-\-git "$OLD..$NEW" \-\-repo /srv/site \-\-wait
purgeq status
purgeq history \-\-since 1d \-\-state failed
.fi
"#
        }
        Some("enqueue") => {
            r#".SH EXAMPLES
.nf
purgeq enqueue \-\-wait https://www.example.com/index.html https://www.example.com/img/
printf 'https://www.example.com/x.js  # the bundle\en' | purgeq enqueue \-
git diff \-\-name\-only \-\-no\-renames \-z HEAD~1 | purgeq enqueue \-\-paths \-\-base\-url https://www.example.com/ \-z \-
purgeq enqueue \-\-git "$OLD..$NEW" \-\-repo /srv/site \-\-dry\-run
purgeq enqueue \-\-manifest old/manifest.json new/manifest.json \-\-base\-url https://www.example.com/
.fi
"#
        }
        Some("history") => {
            r#".SH EXAMPLES
.nf
purgeq history \-\-since 1d \-\-state failed
purgeq history \-\-label "deploy 4711" \-\-json
purgeq history \-\-db postgres://purgeq@db.example.com/purgeq
.fi
"#
        }
        Some("serve") => {
            r#".SH EXAMPLES
.nf
purgeq serve
purgeq serve \-\-config /etc/purgeq/purgeq.toml
systemctl reload purgeq     # SIGHUP: read the configuration again
.fi
"#
        }
        _ => return None,
    })
}

/// The sections to append to the page of `command` (`None`: purgeq(1)).
pub fn extra_sections(command: Option<&str>) -> String {
    let mut out = String::new();
    if command == Some("enqueue") {
        out.push_str(DEPLOY_MAPS);
    }
    out.push_str(EXIT_STATUS);
    out.push_str(FILES);
    out.push_str(ENVIRONMENT);
    if matches!(command, None | Some("serve")) {
        out.push_str(SIGNALS);
    }
    if let Some(examples) = examples(command) {
        out.push_str(examples);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_the_sections_help_lacks() {
        for command in [None, Some("enqueue"), Some("status")] {
            let text = extra_sections(command);
            for section in ["EXIT STATUS", ".SH FILES", ".SH ENVIRONMENT"] {
                assert!(text.contains(section), "{command:?} lacks {section}");
            }
        }
        assert!(extra_sections(None).contains("SIGNALS"));
        let enqueue = extra_sections(Some("enqueue"));
        for word in ["DEPLOY MAPS", "path =", "url =", "index =", "EXAMPLES"] {
            assert!(enqueue.contains(word), "enqueue lacks {word}");
        }
    }
}
