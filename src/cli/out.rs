//! Writing to standard output as Unix tools do: a reader that goes away
//! (`purgeq history | head -1`) ends the command quietly.
//!
//! `println!` panics when stdout is a closed pipe (Rust ignores SIGPIPE,
//! so the write fails with `EPIPE`): a backtrace and exit 101 for an
//! ordinary shell idiom (issue 12). Every command prints through here.

use std::io::Write;

/// Writes `text` to standard output; exits 0 at once if the reader has
/// gone (nobody is left to read what comes next).
pub fn write(text: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("purgeq: writing to standard output: {error}");
        std::process::exit(i32::from(super::EXIT_SOFTWARE));
    }
}

/// `println!` that survives a closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::out::write(b"\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// `text` with control characters escaped (`\u{1b}`), for a terminal:
/// labels, URLs and error texts come from clients and the CDN, and an
/// escape sequence or a line break in them must not reach the terminal as
/// such (issue 12). Intake refuses them in labels; rows stored before that
/// are escaped here.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(crate::target::is_deceptive) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if crate::target::is_deceptive(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}
