//! The quota planner: how today's quota is spent on what is pending.
//!
//! The subscription may purge a few thousand file URLs a day but also some
//! hundreds of directories. When the pending files do not fit in what is
//! left of the day's file quota, purging the directory they sit in purges
//! them all for one directory URL. [`plan`] decides, from the pending items
//! and what is left today:
//!
//! - which directories to purge instead of their files ([`promotions`]):
//!   the deepest directories that together cover what does not fit,
//!   those covering at least `quota.promote_min_files` pending files first
//!   and smaller ones for what would otherwise wait a day, never a
//!   host's root unless `quota.promote_to_root`, and no more than the
//!   directory quota left after the directories clients asked for;
//! - what goes today and what waits for the next quota day, per endpoint,
//!   with urgent items first and normal ones kept out of the reserve
//!   ([`crate::quota::lanes`]).
//!
//! It is a pure function: the batcher runs it to carry out promotions, and
//! `GET /v1/plan` (`purgeq plan`, `enqueue --dry-run`) runs the same
//! function on the same inputs to show what will happen.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::{Promote, QuotaSettings};
use crate::quota::lanes;
use crate::target::{Kind, ancestor_directories, covers};

/// One pending item, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub endpoint_id: String,
    pub kind: Kind,
    pub url: String,
    pub urgent: bool,
    /// Every copy cached before its intents expires before the next quota
    /// day (the endpoint's cache rules): it needs no purge if it waits, so
    /// it is not promoted and is spent on only with what the rest leave.
    pub expires_soon: bool,
}

/// What is left of today's quota (the ledger's count, calls in flight
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Left {
    pub files: u64,
    pub directories: u64,
}

/// A directory purged instead of the pending files under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub endpoint_id: String,
    pub directory: String,
    /// Pending files it covers.
    pub files: usize,
}

/// What one endpoint sends today and what waits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPlan {
    /// Purge calls today, at the batch limits.
    pub calls: u64,
    /// File URLs sent today.
    pub files: u64,
    /// Directory URLs sent today, promoted ones included.
    pub directories: u64,
    pub promotions: Vec<Promotion>,
    /// Left for the next quota day.
    pub waiting_files: u64,
    pub waiting_directories: u64,
    /// Files the quota does not reach today that will need no purge: their
    /// cached copies expire before the next quota day (they end `expired`).
    #[serde(default)]
    pub expiring_files: u64,
}

/// The whole day's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub endpoints: BTreeMap<String, EndpointPlan>,
    /// Quota left now, and after today's sends.
    pub left: Left,
    pub left_after: Left,
    pub waiting_files: u64,
    pub waiting_directories: u64,
    /// Summed over the endpoints: see [`EndpointPlan::expiring_files`].
    #[serde(default)]
    pub expiring_files: u64,
    /// URLs pending as another URL's cached object (the endpoint ignores
    /// query strings): purged once with it, each saving a file of quota.
    #[serde(default)]
    pub coalesced_urls: u64,
}

/// Batch limits: URLs per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerCall {
    pub files: usize,
    pub directories: usize,
}

/// Plans the day for `pending` (oldest first, as the batcher takes them).
pub fn plan(pending: &[Pending], left: Left, rules: &QuotaSettings, per_call: PerCall) -> Plan {
    let mut survey = Survey::new(rules);
    for item in pending {
        survey.add(item);
    }
    let mut tally = Tally::new(survey, left, per_call);
    for item in pending {
        tally.add(item);
    }
    tally.finish()
}

/// The second look at the queue, one item at a time in the batcher's
/// order: which items go today, per endpoint, once the promotions the
/// [`Survey`] chose have absorbed what is under them. Urgent items spend
/// the whole day; normal ones their lane ([`crate::quota::lanes`]).
#[derive(Debug)]
pub struct Tally {
    promotions: Vec<Promotion>,
    /// (endpoint, directory) of each promotion, to skip what they absorb.
    promoted: HashSet<(String, String)>,
    /// Left to spend: (urgent, normal) for files, then directories.
    files: (u64, u64),
    directories: (u64, u64),
    per_call: PerCall,
    plan: Plan,
    /// Normal files that expire before the next quota day, by endpoint:
    /// spent on last, with what the rest leave.
    expiring: Vec<String>,
}

impl Tally {
    pub fn new(survey: Survey<'_>, left: Left, per_call: PerCall) -> Tally {
        let rules = survey.rules;
        let file_lanes = lanes(left.files, rules.urgent_reserve_files, survey.urgent_files);
        let directory_lanes = lanes(
            left.directories,
            rules.urgent_reserve_directories,
            survey.urgent_directories,
        );
        let promotions = survey.promotions(left);
        Tally {
            promoted: promotions
                .iter()
                .map(|p| (p.endpoint_id.clone(), p.directory.clone()))
                .collect(),
            promotions,
            files: (file_lanes.urgent, file_lanes.normal),
            directories: (directory_lanes.urgent, directory_lanes.normal),
            per_call,
            plan: Plan {
                left,
                ..Plan::default()
            },
            expiring: Vec::new(),
        }
    }

    /// The next pending item, oldest first.
    pub fn add(&mut self, item: &Pending) {
        let absorbed = ancestor_directories(&item.url)
            .into_iter()
            .any(|d| self.promoted.contains(&(item.endpoint_id.clone(), d)));
        if absorbed {
            return;
        }
        if item.expires_soon && item.kind == Kind::File && !item.urgent {
            self.expiring.push(item.endpoint_id.clone());
        } else {
            self.spend(&item.endpoint_id, item.kind, item.urgent);
        }
    }

    fn spend(&mut self, endpoint_id: &str, kind: Kind, urgent: bool) {
        let budget = match kind {
            Kind::File => &mut self.files,
            Kind::Directory => &mut self.directories,
        };
        let left = if urgent { &mut budget.0 } else { &mut budget.1 };
        let today = *left > 0;
        *left = left.saturating_sub(1);
        let endpoint = self
            .plan
            .endpoints
            .entry(endpoint_id.to_owned())
            .or_default();
        match (kind, today) {
            (Kind::File, true) => endpoint.files += 1,
            (Kind::File, false) => endpoint.waiting_files += 1,
            (Kind::Directory, true) => endpoint.directories += 1,
            (Kind::Directory, false) => endpoint.waiting_directories += 1,
        }
    }

    /// The promoted directories join the queue last, then the files that
    /// expire soon with what is left (those it does not reach are saved,
    /// not waiting); then the totals.
    pub fn finish(mut self) -> Plan {
        for promotion in std::mem::take(&mut self.promotions) {
            self.spend(&promotion.endpoint_id, Kind::Directory, false);
            self.plan
                .endpoints
                .entry(promotion.endpoint_id.clone())
                .or_default()
                .promotions
                .push(promotion);
        }
        for endpoint_id in std::mem::take(&mut self.expiring) {
            let today = self.files.1 > 0;
            self.files.1 = self.files.1.saturating_sub(1);
            let endpoint = self.plan.endpoints.entry(endpoint_id).or_default();
            if today {
                endpoint.files += 1;
            } else {
                endpoint.expiring_files += 1;
            }
        }
        let mut plan = self.plan;
        let (mut files, mut directories) = (0, 0);
        for endpoint in plan.endpoints.values_mut() {
            endpoint.calls = endpoint
                .files
                .div_ceil(self.per_call.files.max(1) as u64)
                .max(
                    endpoint
                        .directories
                        .div_ceil(self.per_call.directories.max(1) as u64),
                );
            plan.waiting_files += endpoint.waiting_files;
            plan.waiting_directories += endpoint.waiting_directories;
            plan.expiring_files += endpoint.expiring_files;
            files += endpoint.files;
            directories += endpoint.directories;
        }
        plan.left_after = Left {
            files: plan.left.files.saturating_sub(files),
            directories: plan.left.directories.saturating_sub(directories),
        };
        plan
    }
}

/// The queue as it would be with `added` posted (`enqueue --dry-run`),
/// deduplicated as the store does: a URL already pending, or under a
/// pending directory, adds nothing; a new directory takes the pending
/// items under it; an urgent one makes what carries it urgent.
pub fn with_added(pending: &[Pending], added: &[Pending]) -> Vec<Pending> {
    let mut queue = pending.to_vec();
    for new in added {
        let carrier = queue.iter().position(|item| {
            item.endpoint_id == new.endpoint_id
                && ((item.kind == new.kind && item.url == new.url)
                    || (item.kind == Kind::Directory && covers(&item.url, &new.url)))
        });
        match carrier {
            Some(index) => queue[index].urgent |= new.urgent,
            None => {
                let mut new = new.clone();
                if new.kind == Kind::Directory {
                    queue.retain(|item| {
                        let under =
                            item.endpoint_id == new.endpoint_id && covers(&new.url, &item.url);
                        new.urgent |= under && item.urgent;
                        !under
                    });
                }
                queue.push(new);
            }
        }
    }
    queue
}

/// The directories to purge instead of files: none while the normal files
/// fit in their lane of today's file quota (or with `quota.promote =
/// "never"`); otherwise the deepest set that covers what does not fit (or
/// as much of it as the directory quota allows).
pub fn promotions(pending: &[Pending], left: Left, rules: &QuotaSettings) -> Vec<Promotion> {
    let mut survey = Survey::new(rules);
    for item in pending {
        survey.add(item);
    }
    survey.promotions(left)
}

/// What the planner needs to know of the queue, gathered one item at a
/// time: the batcher streams a large queue through it instead of holding
/// every URL in memory (its size grows with the directories, not the
/// files).
#[derive(Debug)]
pub struct Survey<'r> {
    rules: &'r QuotaSettings,
    /// (endpoint, directory) → (depth, normal pending files under it).
    directories: HashMap<(String, String), (usize, usize)>,
    files: u64,
    urgent_files: u64,
    directories_asked: u64,
    urgent_directories: u64,
}

impl<'r> Survey<'r> {
    pub fn new(rules: &'r QuotaSettings) -> Survey<'r> {
        Survey {
            rules,
            directories: HashMap::new(),
            files: 0,
            urgent_files: 0,
            directories_asked: 0,
            urgent_directories: 0,
        }
    }

    pub fn add(&mut self, item: &Pending) {
        match (item.kind, item.urgent) {
            (Kind::Directory, true) => self.urgent_directories += 1,
            (Kind::Directory, false) => self.directories_asked += 1,
            (Kind::File, true) => self.urgent_files += 1,
            // It needs no purge if it waits: no directory for it.
            (Kind::File, false) if item.expires_soon => {}
            (Kind::File, false) => {
                self.files += 1;
                for (depth, directory) in ancestor_directories(&item.url).into_iter().enumerate() {
                    // Depth 0 is the host's root: the whole site.
                    if depth == 0 && !self.rules.promote_to_root {
                        continue;
                    }
                    self.directories
                        .entry((item.endpoint_id.clone(), directory))
                        .or_insert((depth, 0))
                        .1 += 1;
                }
            }
        }
    }

    /// See [`promotions`].
    pub fn promotions(self, left: Left) -> Vec<Promotion> {
        let rules = self.rules;
        if rules.promote == Promote::Never {
            return Vec::new();
        }
        let file_lane = lanes(left.files, rules.urgent_reserve_files, self.urgent_files);
        let need = self.files.saturating_sub(file_lane.normal) as usize;
        // Directories asked for keep their claim on the directory quota first.
        let directory_lane = lanes(
            left.directories,
            rules.urgent_reserve_directories,
            self.urgent_directories,
        );
        let budget = directory_lane.normal.saturating_sub(self.directories_asked) as usize;
        if need == 0 || budget == 0 {
            return Vec::new();
        }
        let min_files = rules.promote_min_files;
        let (main, small): (Vec<Candidate>, Vec<Candidate>) = self
            .candidates()
            .into_iter()
            .partition(|c| c.files >= min_files);
        let mut chosen = choose(&main, need, budget);
        // What still does not fit, when the directory quota has room: the
        // smaller directories too, deepest first. Otherwise a deploy that
        // arrived in several requests (its first files sent as files before
        // the rest came) left a few files per directory for the next day
        // with the day's directories unused (issue 29, item 6).
        let covered: usize = chosen.iter().map(|p| p.files).sum();
        let room = budget.saturating_sub(chosen.len());
        if covered < need && room > 0 {
            top_up(&mut chosen, small, need - covered, room);
        }
        chosen
    }

    /// Every directory that covers a pending file: most files first; then
    /// deeper (less collateral); then by name, so the choice does not
    /// depend on hash order.
    fn candidates(self) -> Vec<Candidate> {
        let mut candidates: Vec<Candidate> = self
            .directories
            .into_iter()
            .map(|((endpoint_id, directory), (depth, files))| Candidate {
                endpoint_id,
                directory,
                depth,
                files,
            })
            .collect();
        candidates.sort_by(|a, b| {
            b.files
                .cmp(&a.files)
                .then(b.depth.cmp(&a.depth))
                .then_with(|| (&a.endpoint_id, &a.directory).cmp(&(&b.endpoint_id, &b.directory)))
        });
        candidates
    }
}

/// A directory that could be promoted.
#[derive(Debug, Clone)]
struct Candidate {
    endpoint_id: String,
    directory: String,
    /// 0 for a host's root, 1 for `https://host/a/`, …
    depth: usize,
    files: usize,
}

/// Tries the deepest level first: only candidates at least that deep,
/// taken greedily (most files first, never one inside another) until
/// `need` files are covered or `budget` directories are used. The first
/// level from the bottom that covers `need` wins (least collateral); if
/// none does, the level that covers the most.
fn choose(candidates: &[Candidate], need: usize, budget: usize) -> Vec<Promotion> {
    let deepest = candidates.iter().map(|c| c.depth).max().unwrap_or(0);
    let mut best: (usize, Vec<&Candidate>) = (0, Vec::new());
    for level in (0..=deepest).rev() {
        let mut chosen: Vec<&Candidate> = Vec::new();
        let mut covered = 0;
        for candidate in candidates.iter().filter(|c| c.depth >= level) {
            if covered >= need || chosen.len() >= budget {
                break;
            }
            let overlaps = chosen.iter().any(|c| {
                c.endpoint_id == candidate.endpoint_id
                    && (covers(&c.directory, &candidate.directory)
                        || covers(&candidate.directory, &c.directory))
            });
            if !overlaps {
                covered += candidate.files;
                chosen.push(candidate);
            }
        }
        if covered >= need {
            return promoted(chosen);
        }
        if covered > best.0 {
            best = (covered, chosen);
        }
    }
    promoted(best.1)
}

/// Adds directories of `small` (each under `promote_min_files`) to
/// `chosen`: the deepest first (a file's own directory before the one
/// above it, least collateral), none inside or around one chosen, until
/// `need` more files are covered or `budget` more directories used.
fn top_up(chosen: &mut Vec<Promotion>, mut small: Vec<Candidate>, need: usize, budget: usize) {
    small.sort_by(|a, b| {
        b.depth
            .cmp(&a.depth)
            .then(b.files.cmp(&a.files))
            .then_with(|| (&a.endpoint_id, &a.directory).cmp(&(&b.endpoint_id, &b.directory)))
    });
    let (mut covered, mut added) = (0, 0);
    for candidate in small {
        if covered >= need || added >= budget {
            break;
        }
        let overlaps = chosen.iter().any(|p| {
            p.endpoint_id == candidate.endpoint_id
                && (covers(&p.directory, &candidate.directory)
                    || covers(&candidate.directory, &p.directory))
        });
        if !overlaps {
            covered += candidate.files;
            added += 1;
            chosen.push(Promotion {
                endpoint_id: candidate.endpoint_id,
                directory: candidate.directory,
                files: candidate.files,
            });
        }
    }
}

fn promoted(chosen: Vec<&Candidate>) -> Vec<Promotion> {
    chosen
        .into_iter()
        .map(|c| Promotion {
            endpoint_id: c.endpoint_id.clone(),
            directory: c.directory.clone(),
            files: c.files,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "ep";

    fn file(url: &str) -> Pending {
        Pending {
            endpoint_id: EP.into(),
            kind: Kind::File,
            url: url.into(),
            urgent: false,
            expires_soon: false,
        }
    }

    fn directory(url: &str) -> Pending {
        Pending {
            kind: Kind::Directory,
            ..file(url)
        }
    }

    /// `per_dir` files in each of `dirs` directories under /assets/.
    fn deploy(dirs: usize, per_dir: usize) -> Vec<Pending> {
        (0..dirs)
            .flat_map(|d| {
                (0..per_dir)
                    .map(move |f| file(&format!("https://www.example.com/assets/d{d:02}/f{f}.js")))
            })
            .collect()
    }

    fn day() -> Left {
        Left {
            files: 2_000,
            directories: 500,
        }
    }

    const PER_CALL: PerCall = PerCall {
        files: 100,
        directories: 50,
    };

    #[test]
    fn files_that_fit_are_not_promoted() {
        let pending = deploy(10, 100);
        let rules = QuotaSettings::default();
        assert!(promotions(&pending, day(), &rules).is_empty());
        let plan = plan(&pending, day(), &rules, PER_CALL);
        assert_eq!(plan.endpoints[EP].files, 1_000);
        assert_eq!(plan.endpoints[EP].calls, 10);
        assert_eq!(plan.waiting_files, 0);
        assert_eq!(plan.left_after.files, 1_000);
    }

    #[test]
    fn a_deploy_over_the_file_quota_goes_today_through_the_fewest_deepest_directories() {
        // 2,600 files in 26 directories, 2,000 files a day: 6 directories
        // of 100 cover the 600 that do not fit, and /assets/ (all 2,600,
        // the most collateral) is not chosen.
        let pending = deploy(26, 100);
        let rules = QuotaSettings::default();
        let chosen = promotions(&pending, day(), &rules);
        assert_eq!(chosen.len(), 6, "{chosen:?}");
        assert!(chosen.iter().all(|p| p.files == 100));
        assert!(chosen.iter().all(|p| p.directory.contains("/assets/d")));
        let plan = plan(&pending, day(), &rules, PER_CALL);
        let ep = &plan.endpoints[EP];
        assert_eq!((ep.files, ep.directories), (2_000, 6));
        assert_eq!((plan.waiting_files, plan.waiting_directories), (0, 0));
        assert_eq!(ep.calls, 20);
        assert_eq!(
            plan.left_after,
            Left {
                files: 0,
                directories: 494
            }
        );
    }

    #[test]
    fn a_shallower_directory_is_chosen_when_the_deep_ones_cannot_cover_enough() {
        // 30 directories of 12 files under /a/, 1 file quota left and 3
        // directories: the deep ones cover 36 of 359, /a/ covers all.
        let pending: Vec<Pending> = (0..30)
            .flat_map(|d| (0..12).map(move |f| file(&format!("https://h/a/d{d}/f{f}"))))
            .collect();
        let left = Left {
            files: 1,
            directories: 3,
        };
        let chosen = promotions(&pending, left, &QuotaSettings::default());
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].directory, "https://h/a/");
    }

    #[test]
    fn files_at_a_host_root_are_never_promoted_by_default() {
        let pending: Vec<Pending> = (0..50)
            .map(|f| file(&format!("https://h/f{f}.css")))
            .collect();
        let left = Left {
            files: 10,
            directories: 500,
        };
        let mut rules = QuotaSettings::default();
        assert!(promotions(&pending, left, &rules).is_empty());
        let plan = plan(&pending, left, &rules, PER_CALL);
        assert_eq!((plan.endpoints[EP].files, plan.waiting_files), (10, 40));
        rules.promote_to_root = true;
        let chosen = promotions(&pending, left, &rules);
        assert_eq!(chosen[0].directory, "https://h/");
    }

    #[test]
    fn a_directory_must_cover_promote_min_files() {
        let pending = deploy(5, 9);
        let left = Left {
            files: 0,
            directories: 500,
        };
        let mut rules = QuotaSettings::default();
        // Each d0N/ covers 9 < 10; /assets/ covers 45.
        let chosen = promotions(&pending, left, &rules);
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].directory, "https://www.example.com/assets/");
        // None covers 46: the smaller ones still cover what would wait for
        // the next day while the directory quota has room, the deepest
        // first (issue 29, item 6).
        rules.promote_min_files = 46;
        let chosen = promotions(&pending, left, &rules);
        assert_eq!(chosen.len(), 5, "{chosen:?}");
        assert!(
            chosen
                .iter()
                .all(|p| p.files == 9 && p.directory.contains("/d"))
        );
        // With no directory to spare, nothing.
        let no_room = Left {
            files: 0,
            directories: 0,
        };
        assert!(promotions(&pending, no_room, &rules).is_empty());
        rules.promote_min_files = 10;
        rules.promote = Promote::Never;
        assert!(promotions(&pending, left, &rules).is_empty());
    }

    /// Issue 29, item 6: 2,600 files in 26 directories posted in six
    /// requests of 500: the first 2,000 went as files before the rest
    /// came, leaving a few files in some directories; 7 files waited for
    /// the next day with 493 directories of the day unused. Whatever is
    /// left after the files that went, every pending file is covered today.
    #[test]
    fn a_deploy_in_several_requests_is_covered_as_in_one() {
        let rules = QuotaSettings::default();
        let room = Left {
            files: 0,
            directories: 500,
        };
        // What the six requests left after 2,000 files went: most
        // directories with many files, seven with one or two.
        let mut pending: Vec<Pending> = Vec::new();
        for d in 0..19 {
            for f in 0..31 {
                pending.push(file(&format!("https://www.example.com/d{d:02}/f{f}.js")));
            }
        }
        for d in 19..26 {
            pending.push(file(&format!("https://www.example.com/d{d:02}/last.js")));
        }
        let chosen = promotions(&pending, room, &rules);
        let covered: usize = chosen.iter().map(|p| p.files).sum();
        assert_eq!(covered, pending.len(), "{chosen:#?}");
        let plan = plan(&pending, room, &rules, PER_CALL);
        assert_eq!(plan.waiting_files, 0, "{plan:#?}");
    }

    #[test]
    fn directories_asked_for_keep_their_share_of_the_directory_quota() {
        let mut pending = deploy(26, 100);
        pending.extend((0..498).map(|d| directory(&format!("https://other.example.com/x{d}/"))));
        // 500 directories left, 498 asked for: room for 2 promotions. Two
        // of the d../ directories would leave 400 files for tomorrow;
        // /assets/ covers them all today.
        let chosen = promotions(&pending, day(), &QuotaSettings::default());
        assert_eq!(chosen.len(), 1, "{chosen:?}");
        assert_eq!(chosen[0].directory, "https://www.example.com/assets/");
        let plan = plan(&pending, day(), &QuotaSettings::default(), PER_CALL);
        assert_eq!((plan.waiting_files, plan.waiting_directories), (0, 0));
        assert_eq!(plan.left_after.directories, 1);
        // With room for none, the files wait.
        pending.push(directory("https://other.example.com/y/"));
        pending.push(directory("https://other.example.com/z/"));
        assert!(promotions(&pending, day(), &QuotaSettings::default()).is_empty());
        let plan = super::plan(&pending, day(), &QuotaSettings::default(), PER_CALL);
        assert_eq!(plan.waiting_files, 600);
    }

    #[test]
    fn urgent_items_use_the_reserve_and_normal_ones_do_not() {
        let rules = QuotaSettings {
            urgent_reserve_files: 5,
            promote: Promote::Never,
            ..QuotaSettings::default()
        };
        let mut pending: Vec<Pending> =
            (0..20).map(|f| file(&format!("https://h/n/{f}"))).collect();
        pending.push(Pending {
            urgent: true,
            ..file("https://h/hotfix.js")
        });
        let left = Left {
            files: 8,
            directories: 500,
        };
        let plan = plan(&pending, left, &rules, PER_CALL);
        // Urgent: 1 of 8; normal: 8 - 5 reserved - 1 urgent = 2.
        assert_eq!(plan.endpoints[EP].files, 3);
        assert_eq!(plan.waiting_files, 18);
        // The urgent file goes even when only the reserve is left.
        let left = Left {
            files: 5,
            directories: 500,
        };
        let plan = super::plan(&pending, left, &rules, PER_CALL);
        assert_eq!(plan.endpoints[EP].files, 1);
    }

    /// Issue 32: a file whose copies expire before the next quota day is
    /// not promoted and takes only what the rest leave; what the day does
    /// not reach is saved, not waiting.
    #[test]
    fn files_that_expire_before_the_next_day_are_spent_on_last_and_never_promoted() {
        let rules = QuotaSettings {
            promote_min_files: 3,
            ..QuotaSettings::default()
        };
        let expiring = |url: &str| Pending {
            expires_soon: true,
            ..file(url)
        };
        // (left files, expiring in /p/, others in /s/, expected:
        //  files today, waiting, expiring saved, promoted directories)
        let table = [
            (10, 4, 3, 7, 0, 0, 0),
            (5, 4, 3, 5, 0, 2, 0),
            (3, 4, 3, 3, 0, 4, 0),
            (2, 4, 6, 2, 0, 2, 1),
            (2, 0, 4, 0, 0, 0, 1),
        ];
        for (left, expiring_n, others, today, waiting, saved, promoted) in table {
            let mut pending: Vec<Pending> = (0..expiring_n)
                .map(|i| expiring(&format!("https://h/p/{i}.html")))
                .collect();
            pending.extend((0..others).map(|i| file(&format!("https://h/s/{i}.js"))));
            let plan = plan(
                &pending,
                Left {
                    files: left,
                    directories: 10,
                },
                &rules,
                PER_CALL,
            );
            let endpoint = &plan.endpoints[EP];
            let row = (left, expiring_n, others);
            assert_eq!(endpoint.files, today, "{row:?}: {plan:?}");
            assert_eq!(endpoint.waiting_files, waiting, "{row:?}");
            assert_eq!(endpoint.expiring_files, saved, "{row:?}");
            assert_eq!(plan.expiring_files, saved, "{row:?}");
            assert_eq!(endpoint.promotions.len(), promoted, "{row:?}");
            assert!(
                endpoint
                    .promotions
                    .iter()
                    .all(|p| p.directory == "https://h/s/"),
                "{row:?}: an expiring file's directory was promoted"
            );
        }
    }

    #[test]
    fn a_dry_run_adds_what_the_store_would_add() {
        let pending = vec![file("https://h/a/1"), directory("https://h/b/")];
        let added = [
            file("https://h/a/1"),
            file("https://h/b/2"),
            Pending {
                urgent: true,
                ..file("https://h/c/3")
            },
            directory("https://h/a/"),
        ];
        let queue = with_added(&pending, &added);
        let urls: Vec<&str> = queue.iter().map(|i| i.url.as_str()).collect();
        // /a/1 is absorbed by the new /a/; /b/2 is under /b/.
        assert_eq!(urls, ["https://h/b/", "https://h/c/3", "https://h/a/"]);
        assert!(queue[1].urgent);
    }

    #[test]
    fn nothing_left_today_means_everything_waits() {
        let pending = deploy(2, 20);
        let plan = plan(
            &pending,
            Left::default(),
            &QuotaSettings::default(),
            PER_CALL,
        );
        assert_eq!(plan.waiting_files, 40);
        assert_eq!(plan.endpoints[EP].calls, 0);
    }
}
