//! The quota ledger's rules, as pure functions: what an answer of the CDN
//! tells us about the day's quota, decided without a database. The store
//! applies the result (`Store::quota_day_spent`); the rules live here so
//! that "a file-quota refusal leaves the directory count alone" is a row in
//! a table, not a hope about SQL.
//!
//! A quota refusal costs the subscription nothing (the CDN counted none of
//! the call's URLs): the batch's own charge is refunded by the caller. What
//! the refusal *does* say is that the ledger was low for one kind — another
//! client of the subscription spent some of the day, or a count was lost —
//! and, when the CDN's message gives its own count ("1947 of 2000 used"),
//! by how much. Only the kind the CDN refused is raised, and only to what
//! the CDN said, so what is left of the day (53 files there) is still sent.

/// Which of the day's budgets a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Files,
    Directories,
    Preloads,
}

/// A call the CDN refused for quota: what it carried and what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// Preload calls spend a budget of their own.
    pub preload: bool,
    pub files: u64,
    pub directories: u64,
    /// `ErrorInfo.Message` as the CDN wrote it.
    pub message: &'a str,
}

/// The day's budgets, as configured (`quota.*_per_day`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerDay {
    pub files: u64,
    pub directories: u64,
    pub preloads: u64,
}

/// The least each count of the day can be after the refusal; `None` leaves
/// a count as the ledger has it. Applied as `used = max(used, at_least)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Correction {
    pub files: Option<u64>,
    pub directories: Option<u64>,
    pub preloads: Option<u64>,
}

impl Correction {
    fn raise(mut self, budget: Budget, to: u64) -> Correction {
        let slot = match budget {
            Budget::Files => &mut self.files,
            Budget::Directories => &mut self.directories,
            Budget::Preloads => &mut self.preloads,
        };
        *slot = Some(slot.map_or(to, |now| now.max(to)));
        self
    }
}

/// What a quota refusal corrects.
///
/// | call | message names | message counts | raises |
/// |---|---|---|---|
/// | files only | — | — | files to the day's budget |
/// | files only | file | 1947 of 2000 | files to 1947 |
/// | files and directories | file | 1947 of 2000 | files to 1947 (directories untouched) |
/// | files and directories | directory | — | directories to the day's budget |
/// | files and directories | neither | — | both to the day's budget (the kind cannot be told) |
/// | preloads | — | 999 of 1000 | preloads to 999 |
///
/// A count that cannot explain the refusal (used + the call's URLs of that
/// kind still within the budget: the CDN's budget is smaller than the
/// configured one) is not trusted: that kind is taken as spent.
pub fn on_quota_refusal(refusal: Refusal<'_>, per_day: PerDay) -> Correction {
    let budgets: Vec<Budget> = if refusal.preload {
        vec![Budget::Preloads]
    } else {
        match named_kind(refusal.message) {
            Some(kind) => vec![kind],
            None => [
                (refusal.files > 0).then_some(Budget::Files),
                (refusal.directories > 0).then_some(Budget::Directories),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    };
    let count = if budgets.len() == 1 {
        used_count(refusal.message)
    } else {
        None
    };
    budgets
        .into_iter()
        .fold(Correction::default(), |correction, budget| {
            let (limit, sent) = match budget {
                Budget::Files => (per_day.files, refusal.files),
                Budget::Directories => (per_day.directories, refusal.directories),
                Budget::Preloads => (per_day.preloads, refusal.files),
            };
            let used = count
                .filter(|used| used.saturating_add(sent) > limit)
                .map_or(limit, |used| used.min(limit));
            correction.raise(budget, used)
        })
}

/// The kind a purge refusal's message names: "file quota" or "directory
/// quota" (either alone; a message naming both names neither).
fn named_kind(message: &str) -> Option<Budget> {
    let lower = message.to_ascii_lowercase();
    let file = lower.contains("file");
    let directory = lower.contains("director") || lower.contains("folder");
    match (file, directory) {
        (true, false) => Some(Budget::Files),
        (false, true) => Some(Budget::Directories),
        _ => None,
    }
}

/// The CDN's own count in "N of M used": the first `N of M`.
fn used_count(message: &str) -> Option<u64> {
    let words: Vec<&str> = message
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | ';' | '.' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(3).find_map(|w| match w {
        [used, of, total] if of.eq_ignore_ascii_case("of") && total.parse::<u64>().is_ok() => {
            used.parse().ok()
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_DAY: PerDay = PerDay {
        files: 2000,
        directories: 500,
        preloads: 1000,
    };

    fn purge(files: u64, directories: u64, message: &str) -> Refusal<'_> {
        Refusal {
            preload: false,
            files,
            directories,
            message,
        }
    }

    fn files(at_least: u64) -> Correction {
        Correction {
            files: Some(at_least),
            ..Correction::default()
        }
    }

    fn directories(at_least: u64) -> Correction {
        Correction {
            directories: Some(at_least),
            ..Correction::default()
        }
    }

    #[test]
    fn a_refusal_raises_only_the_refused_kind() {
        let emulator_files = "Daily file quota exceeded: 1947 of 2000 used today, 100 requested.";
        let emulator_dirs = "Daily directory quota exceeded: 500 of 500 used today, 3 requested.";
        let rows = [
            // Issue 29, item 3: this set directories_used = 500.
            (purge(100, 0, emulator_files), files(1947)),
            (purge(100, 7, emulator_files), files(1947)),
            (purge(0, 3, emulator_dirs), directories(500)),
            (purge(40, 3, emulator_dirs), directories(500)),
            (purge(100, 0, "quota exceeded"), files(2000)),
            (purge(0, 9, "quota exceeded"), directories(500)),
            (
                purge(100, 9, "quota exceeded"),
                Correction {
                    files: Some(2000),
                    directories: Some(500),
                    preloads: None,
                },
            ),
            (
                purge(100, 9, "Daily folder quota exceeded"),
                directories(500),
            ),
            // A count that does not explain the refusal: the CDN's budget
            // is smaller than configured, so the kind is spent.
            (
                purge(100, 0, "Daily file quota exceeded: 10 of 1000 used today."),
                files(2000),
            ),
            // A count above the configured budget is capped at it.
            (
                purge(1, 0, "Daily file quota exceeded: 2500 of 2500 used."),
                files(2000),
            ),
            (
                Refusal {
                    preload: true,
                    files: 5,
                    directories: 0,
                    message: "Daily preload quota exceeded: 999 of 1000 used today, 5 requested.",
                },
                Correction {
                    preloads: Some(999),
                    ..Correction::default()
                },
            ),
        ];
        for (refusal, expected) in rows {
            assert_eq!(on_quota_refusal(refusal, PER_DAY), expected, "{refusal:?}");
        }
    }

    #[test]
    fn counts_are_read_from_n_of_m() {
        assert_eq!(used_count("1947 of 2000 used"), Some(1947));
        assert_eq!(used_count("exceeded: 12 of 500, 3 requested"), Some(12));
        assert_eq!(used_count("one of many"), None);
        assert_eq!(used_count("quota exceeded"), None);
    }
}
