//! Charts as SVG, drawn by the daemon (no script, no outside library):
//! bars over consecutive time slots, with a labelled y axis, gridlines
//! and the current (partial) slot marked. Pure: the counts in, the markup
//! out.
//!
//! Series that measure different things (URLs enqueued and URLs purged)
//! stand side by side; parts of one whole (calls by outcome) stack. Every
//! total the chart prints is one of the counts it was given, so it agrees
//! with the source it was read from (the per-minute totals the store
//! keeps; for the quota, the quota ledger itself).
//!
//! Times on the axis are UTC as rendered (`data-at` carries the instant)
//! and the page's script rewrites them in the browser's zone with its
//! offset. Colour is never the only signal: the legend names the series,
//! and every slot has a `<title>` with its figures (a tooltip on hover,
//! without JavaScript).

use std::collections::HashMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

use super::escape;
use crate::store::{Counts, Slot};

/// One stacked series: its name in the data, its label, its CSS class.
pub struct Series {
    pub key: &'static str,
    pub label: &'static str,
    pub class: &'static str,
}

/// The `count` slots ending with the one `now` is in, oldest first, as
/// the stored timestamp prefixes the store groups by.
pub fn slots(now: OffsetDateTime, slot: Slot, count: usize) -> Vec<String> {
    let step = match slot {
        Slot::Minute => time::Duration::minutes(1),
        Slot::Hour => time::Duration::hours(1),
    };
    (0..count)
        .rev()
        .map(|back| prefix(now - step * back as i32, slot))
        .collect()
}

fn prefix(at: OffsetDateTime, slot: Slot) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let day = format!(
        "{:04}-{:02}-{:02}T{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    );
    match slot {
        Slot::Hour => day,
        Slot::Minute => format!("{day}:{:02}", at.minute()),
    }
}

/// The instant a slot starts, as RFC 3339 (for `data-at`).
fn instant(prefix: &str) -> String {
    match prefix.len() {
        13 => format!("{prefix}:00:00Z"),
        _ => format!("{prefix}:00Z"),
    }
}

/// `HH:MM` of a slot, UTC.
fn clock(prefix: &str) -> String {
    match prefix.len() {
        13 => format!("{}:00", &prefix[11..13]),
        _ => prefix[11..16].to_owned(),
    }
}

/// URLs: asked for, and purged (a different measure: side by side).
pub const URLS: [Series; 2] = [
    Series {
        key: "enqueued",
        label: "enqueued",
        class: "c-in",
    },
    Series {
        key: "purged",
        label: "purged",
        class: "c-ok",
    },
];
/// API calls by outcome (parts of one whole: stacked).
pub const CALLS: [Series; 4] = [
    Series {
        key: "accepted",
        label: "accepted",
        class: "c-ok",
    },
    Series {
        key: "throttled",
        label: "throttled",
        class: "c-warn",
    },
    Series {
        key: "transient",
        label: "transient error",
        class: "c-muted",
    },
    Series {
        key: "refused",
        label: "refused",
        class: "c-bad",
    },
];
/// The quota ledger's budgets.
pub const QUOTA: [Series; 3] = [
    Series {
        key: "files",
        label: "files",
        class: "c-in",
    },
    Series {
        key: "directories",
        label: "directories",
        class: "c-ok",
    },
    Series {
        key: "preloads",
        label: "preloads",
        class: "c-muted",
    },
];

/// How a chart's series share a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Parts of one whole, stacked (calls by outcome).
    Stacked,
    /// Different measures, side by side (URLs enqueued and purged).
    Grouped,
}

/// One chart: what it shows and how.
pub struct Chart<'a> {
    /// `data-chart` on the figure, for tests and scripts.
    pub id: &'a str,
    pub title: &'a str,
    /// What a bar counts, for the caption ("per minute, last hour").
    pub unit: &'a str,
    pub slots: &'a [String],
    pub series: &'a [Series],
    pub counts: &'a Counts,
    pub layout: Layout,
    /// Each series summed along the slots (the quota used through the day).
    pub cumulative: bool,
    /// The first slot with any history (the store's first record); slots
    /// before it are drawn as "no history" rather than as zeros.
    pub history_from: Option<&'a str>,
}

const WIDTH: f64 = 400.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 36.0;
const RIGHT: f64 = 6.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 20.0;

/// Each series' value per slot, in `series` order, never below zero
/// (a running total drawn as it stood; a slot of refunds as nothing).
fn values(chart: &Chart<'_>) -> Vec<Vec<u64>> {
    let mut by_slot: HashMap<(&str, &str), i64> = HashMap::new();
    for (slot, key, n) in chart.counts {
        *by_slot.entry((slot.as_str(), key.as_str())).or_default() += n;
    }
    chart
        .series
        .iter()
        .map(|s| {
            let mut sum = 0_i64;
            chart
                .slots
                .iter()
                .map(|slot| {
                    let v = by_slot.get(&(slot.as_str(), s.key)).copied().unwrap_or(0);
                    sum += v;
                    let shown = if chart.cumulative { sum } else { v };
                    shown.max(0) as u64
                })
                .collect()
        })
        .collect()
}

/// `counts` with every row outside `slots` moved into the nearest end:
/// a quota day's charges recorded before its first hour on the axis, or
/// after the last (another node's clock), still count in its total.
pub fn into_slots(counts: Counts, slots: &[String]) -> Counts {
    let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
        return counts;
    };
    counts
        .into_iter()
        .map(|(slot, series, n)| {
            let slot = if slot < *first {
                first.clone()
            } else if slot > *last {
                last.clone()
            } else {
                slot
            };
            (slot, series, n)
        })
        .collect()
}

/// The y axis' ticks from 0: a step of 1, 2 or 5 times a power of ten,
/// 3 to 5 ticks, the last at or above `max`.
pub fn ticks(max: u64) -> Vec<u64> {
    let mut step = 1_u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if max.div_ceil(candidate) <= 4 {
                let n = max.div_ceil(candidate).max(2);
                return (0..=n).map(|i| i * candidate).collect();
            }
        }
        step = step.saturating_mul(10);
    }
}

/// A tick's label, short: `800`, `1.5k`, `20k`, `2M`.
pub fn compact(n: u64) -> String {
    fn scaled(n: u64, unit: u64, suffix: &str) -> String {
        let tenths = n * 10 / unit;
        if tenths.is_multiple_of(10) || tenths >= 100 {
            format!("{}{suffix}", n / unit)
        } else {
            format!("{}.{}{suffix}", tenths / 10, tenths % 10)
        }
    }
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => scaled(n, 1_000, "k"),
        _ => scaled(n, 1_000_000, "M"),
    }
}

/// Where things go on a chart: the slots' width, the plot's height and
/// baseline, and the y scale (its ticks, the top one its maximum).
struct Geometry {
    slot_w: f64,
    plot_h: f64,
    y0: f64,
    ticks: Vec<u64>,
    top_value: f64,
}

impl Geometry {
    fn of(chart: &Chart<'_>, values: &[Vec<u64>]) -> Geometry {
        let tallest = (0..chart.slots.len())
            .map(|i| match chart.layout {
                Layout::Stacked => values.iter().map(|row| row[i]).sum(),
                Layout::Grouped => values.iter().map(|row| row[i]).max().unwrap_or(0),
            })
            .max()
            .unwrap_or(0);
        let ticks = ticks(tallest);
        let plot_h = HEIGHT - TOP - BOTTOM;
        Geometry {
            slot_w: (WIDTH - LEFT - RIGHT) / chart.slots.len().max(1) as f64,
            plot_h,
            y0: TOP + plot_h,
            top_value: ticks.last().copied().unwrap_or(1).max(1) as f64,
            ticks,
        }
    }

    fn height_of(&self, v: u64) -> f64 {
        self.plot_h * v as f64 / self.top_value
    }

    fn x_of(&self, slot: usize) -> f64 {
        LEFT + self.slot_w * slot as f64
    }
}

/// The chart as a `<figure>`: caption, SVG, legend with each series'
/// total.
pub fn draw(chart: &Chart<'_>) -> String {
    let values = values(chart);
    let g = Geometry::of(chart, &values);
    let mut svg = format!(
        "<figure class=\"chart\" data-chart=\"{id}\"><figcaption>{title} <span class=\"unit\">({unit}), \
         times <span class=\"tz\">UTC</span></span></figcaption>\n\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}, {unit}\">\n",
        id = escape(chart.id),
        title = escape(chart.title),
        unit = escape(chart.unit),
    );
    svg.push_str(&bands(chart, &g));
    svg.push_str(&y_axis(&g));
    for i in 0..chart.slots.len() {
        svg.push_str(&slot(chart, &values, &g, i));
    }
    svg.push_str(&x_axis(chart, &g));
    svg.push_str(&legend(chart, &values));
    svg
}

/// The slots before the history starts (a band, not a row of zeros) and
/// the current slot, still filling.
fn bands(chart: &Chart<'_>, g: &Geometry) -> String {
    let mut out = String::new();
    let first_with_history = chart.history_from.map_or(0, |from| {
        chart
            .slots
            .iter()
            .take_while(|s| s.as_str() < &from[..from.len().min(s.len())])
            .count()
    });
    if first_with_history > 0 {
        let w = g.slot_w * first_with_history as f64;
        let _ = write!(
            out,
            "<rect class=\"nohistory\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{}\"/>",
            g.plot_h
        );
        if w >= 70.0 {
            let _ = write!(
                out,
                "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no history</text>",
                LEFT + w / 2.0,
                TOP + g.plot_h / 2.0
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "<rect class=\"partial\" x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{}\"/>",
        g.x_of(chart.slots.len().max(1) - 1),
        g.slot_w,
        g.plot_h
    );
    out
}

/// Gridlines and labels at the ticks; the baseline is the axis.
fn y_axis(g: &Geometry) -> String {
    let mut out = String::new();
    for tick in &g.ticks {
        let y = g.y0 - g.height_of(*tick);
        let _ = writeln!(
            out,
            "<line class=\"{}\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            if *tick == 0 { "axis" } else { "grid" },
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            compact(*tick)
        );
    }
    out
}

/// One slot: a hover area the width of the slot, its bars, and its
/// figures as the tooltip.
fn slot(chart: &Chart<'_>, values: &[Vec<u64>], g: &Geometry, i: usize) -> String {
    let x = g.x_of(i);
    let mut out = format!(
        "<g><rect class=\"hover\" x=\"{x:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{}\"/>",
        g.slot_w, g.plot_h
    );
    let width = match chart.layout {
        Layout::Stacked => g.slot_w,
        Layout::Grouped => g.slot_w / chart.series.len().max(1) as f64,
    };
    let mut stacked = g.y0;
    let mut parts = Vec::new();
    for (k, (row, s)) in values.iter().zip(chart.series).enumerate() {
        let v = row[i];
        parts.push(format!("{} {v}", s.label));
        if v == 0 {
            continue;
        }
        let h = g.height_of(v);
        let (bx, by) = match chart.layout {
            Layout::Stacked => {
                stacked -= h;
                (x, stacked)
            }
            Layout::Grouped => (x + width * k as f64, g.y0 - h),
        };
        let _ = write!(
            out,
            "<rect class=\"{}\" x=\"{:.1}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
            s.class,
            bx + 0.4,
            (width - 0.8).max(0.4),
        );
    }
    let _ = writeln!(
        out,
        "<title>{} UTC{}: {}</title></g>",
        clock(&chart.slots[i]),
        if i + 1 == chart.slots.len() {
            " (so far)"
        } else {
            ""
        },
        escape(&parts.join(", "))
    );
    out
}

/// About five time labels along the axis, and "now" at its end.
fn x_axis(chart: &Chart<'_>, g: &Geometry) -> String {
    let mut out = String::new();
    let every = (chart.slots.len() / 5).max(1);
    for (i, slot) in chart.slots.iter().enumerate() {
        if i % every != 0 || i + every > chart.slots.len() {
            continue;
        }
        let _ = writeln!(
            out,
            "<text class=\"label t\" x=\"{:.1}\" y=\"{}\" data-at=\"{}\">{}</text>",
            g.x_of(i),
            HEIGHT - 5.0,
            instant(slot),
            clock(slot)
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text>",
        WIDTH - RIGHT,
        HEIGHT - 5.0
    );
    out.push_str("</svg>\n");
    out
}

/// The series in drawing order, each with its total, and what the totals
/// mean.
fn legend(chart: &Chart<'_>, values: &[Vec<u64>]) -> String {
    let entries: Vec<String> = values
        .iter()
        .zip(chart.series)
        .map(|(row, s)| {
            let total = if chart.cumulative {
                row.last().copied().unwrap_or(0)
            } else {
                row.iter().sum()
            };
            format!(
                "<span class=\"entry\" data-series=\"{}\" data-total=\"{total}\">\
                 <span class=\"key {}\" aria-hidden=\"true\"></span> {} {total}</span>",
                escape(s.key),
                s.class,
                escape(s.label)
            )
        })
        .collect();
    format!(
        "<p class=\"legend\">{}{} <span class=\"entry\">({})</span></p></figure>\n",
        match chart.layout {
            Layout::Stacked => "Bottom to top: ",
            Layout::Grouped => "Left to right: ",
        },
        entries.join(" "),
        match (chart.cumulative, chart.layout) {
            (true, _) => "used by now",
            (false, Layout::Stacked) => "in the span, stacked",
            (false, Layout::Grouped) => "in the span, side by side",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        crate::store::Timestamp::parse(text).expect("time").get()
    }

    #[test]
    fn slots_end_with_the_current_one() {
        let s = slots(at("2026-12-02T10:02:30.000Z"), Slot::Minute, 3);
        assert_eq!(
            s,
            ["2026-12-02T10:00", "2026-12-02T10:01", "2026-12-02T10:02"]
        );
        let h = slots(at("2026-12-02T01:10:00.000Z"), Slot::Hour, 3);
        assert_eq!(h, ["2026-12-01T23", "2026-12-02T00", "2026-12-02T01"]);
    }

    fn series() -> [Series; 2] {
        [
            Series {
                key: "a",
                label: "accepted",
                class: "c-ok",
            },
            Series {
                key: "t",
                label: "throttled",
                class: "c-warn",
            },
        ]
    }

    fn chart<'a>(
        slots: &'a [String],
        series: &'a [Series],
        counts: &'a Counts,
        layout: Layout,
        cumulative: bool,
    ) -> Chart<'a> {
        Chart {
            id: "calls",
            title: "Calls",
            unit: "per minute",
            slots,
            series,
            counts,
            layout,
            cumulative,
            history_from: None,
        }
    }

    fn two_minutes() -> (Vec<String>, Counts) {
        (
            vec!["2026-12-02T10:00".to_owned(), "2026-12-02T10:01".to_owned()],
            vec![
                ("2026-12-02T10:00".to_owned(), "a".to_owned(), 3),
                ("2026-12-02T10:01".to_owned(), "a".to_owned(), 1),
                ("2026-12-02T10:01".to_owned(), "t".to_owned(), 3),
            ],
        )
    }

    #[test]
    fn ticks_are_three_to_five_round_steps_from_zero() {
        for (max, expected) in [
            (0, vec![0, 1, 2]),
            (1, vec![0, 1, 2]),
            (3, vec![0, 1, 2, 3]),
            (4, vec![0, 1, 2, 3, 4]),
            (5, vec![0, 2, 4, 6]),
            (9, vec![0, 5, 10]),
            (76, vec![0, 20, 40, 60, 80]),
            (110, vec![0, 50, 100, 150]),
            (942, vec![0, 500, 1000]),
            (2000, vec![0, 500, 1000, 1500, 2000]),
            (1_000_001, vec![0, 500_000, 1_000_000, 1_500_000]),
        ] {
            let got = ticks(max);
            assert_eq!(got, expected, "max {max}");
            assert!((3..=5).contains(&got.len()), "max {max}");
            assert!(*got.last().expect("a tick") >= max, "max {max}");
        }
    }

    #[test]
    fn tick_labels_are_short() {
        for (n, label) in [
            (0, "0"),
            (800, "800"),
            (1_000, "1k"),
            (1_500, "1.5k"),
            (20_000, "20k"),
            (150_000, "150k"),
            (2_000_000, "2M"),
            (2_500_000, "2.5M"),
        ] {
            assert_eq!(compact(n), label, "{n}");
        }
    }

    #[test]
    fn stacked_bars_say_their_figures_and_each_series_total() {
        let (slots, counts) = two_minutes();
        let series = series();
        let svg = draw(&chart(&slots, &series, &counts, Layout::Stacked, false));
        assert!(
            svg.contains("<title>10:00 UTC: accepted 3, throttled 0</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>10:01 UTC (so far): accepted 1, throttled 3</title>"),
            "the current slot is marked: {svg}"
        );
        assert_eq!(svg.matches("<rect class=\"c-").count(), 3, "3 bars");
        assert_eq!(svg.matches("class=\"key c-").count(), 2, "2 keys");
        assert!(svg.contains("data-at=\"2026-12-02T10:00:00Z\""), "{svg}");
        assert!(svg.contains("data-series=\"a\" data-total=\"4\""), "{svg}");
        assert!(svg.contains("data-series=\"t\" data-total=\"3\""), "{svg}");
        assert!(svg.contains("Bottom to top:"), "{svg}");
        // Ticks 0..4 for a stack of 1 + 3: gridlines and labels.
        assert_eq!(svg.matches("class=\"grid\"").count(), 4, "{svg}");
        assert!(svg.contains(">4</text>"), "{svg}");
    }

    #[test]
    fn grouped_bars_stand_side_by_side_on_the_tallest() {
        let (slots, counts) = two_minutes();
        let series = series();
        let svg = draw(&chart(&slots, &series, &counts, Layout::Grouped, false));
        assert!(svg.contains("Left to right:"), "{svg}");
        // The scale is set by the tallest bar (3), not by a sum (4).
        assert!(
            svg.contains(">3</text>") && !svg.contains(">4</text>"),
            "{svg}"
        );
        // In 10:01 both bars stand on the axis, side by side: throttled
        // (3) reaches the top, accepted (1) a third of it.
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot_w = (WIDTH - LEFT - RIGHT) / 2.0;
        let x = LEFT + slot_w;
        let accepted = format!(
            "<rect class=\"c-ok\" x=\"{:.1}\" y=\"{:.1}\"",
            x + 0.4,
            TOP + plot_h - plot_h / 3.0
        );
        let throttled = format!(
            "<rect class=\"c-warn\" x=\"{:.1}\" y=\"{TOP:.1}\"",
            x + slot_w / 2.0 + 0.4
        );
        assert!(svg.contains(&accepted), "{accepted} in {svg}");
        assert!(svg.contains(&throttled), "{throttled} in {svg}");
    }

    #[test]
    fn a_running_total_ends_with_the_sum() {
        let (slots, counts) = two_minutes();
        let series = series();
        let running = draw(&chart(&slots, &series[..1], &counts, Layout::Grouped, true));
        assert!(
            running.contains("10:01 UTC (so far): accepted 4"),
            "{running}"
        );
        assert!(running.contains("data-total=\"4\""), "{running}");
        assert!(running.contains("used by now"), "{running}");
    }

    #[test]
    fn slots_before_the_history_are_a_band_not_zeros() {
        let slots: Vec<String> = (0..10).map(|m| format!("2026-12-02T10:{m:02}")).collect();
        let counts = vec![("2026-12-02T10:09".to_owned(), "a".to_owned(), 1)];
        let series = series();
        let mut c = chart(&slots, &series, &counts, Layout::Stacked, false);
        c.history_from = Some("2026-12-02T10:05");
        let svg = draw(&c);
        let band = plot_w_of(5, 10);
        assert!(
            svg.contains(&format!(
                "class=\"nohistory\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{band:.1}\""
            )),
            "{svg}"
        );
        assert!(svg.contains(">no history</text>"), "{svg}");
        c.history_from = Some("2026-12-02T09:00");
        assert!(!draw(&c).contains("nohistory"));
        // Hours: the hour the history starts in is drawn.
        let hours = vec!["2026-12-02T09".to_owned(), "2026-12-02T10".to_owned()];
        let mut c = chart(&hours, &series, &counts, Layout::Stacked, false);
        c.history_from = Some("2026-12-02T10:05");
        let svg = draw(&c);
        assert!(
            svg.contains(&format!("width=\"{:.1}\"", plot_w_of(1, 2))),
            "{svg}"
        );
        c.history_from = Some("2026-12-02T09:59");
        assert!(!draw(&c).contains("nohistory"));
    }

    #[test]
    fn rows_outside_the_axis_count_at_its_ends() {
        let slots = vec!["2026-12-02T08".to_owned(), "2026-12-02T09".to_owned()];
        let row = |slot: &str, n| (slot.to_owned(), "files".to_owned(), n);
        for (given, placed) in [
            (row("2026-12-02T07", 5), row("2026-12-02T08", 5)),
            (row("2026-12-02T08", 5), row("2026-12-02T08", 5)),
            (row("2026-12-02T09", -2), row("2026-12-02T09", -2)),
            (row("2026-12-02T10", 1), row("2026-12-02T09", 1)),
            (row("2026-12-01T23", 1), row("2026-12-02T08", 1)),
        ] {
            assert_eq!(
                into_slots(vec![given.clone()], &slots),
                vec![placed],
                "{given:?}"
            );
        }
        assert_eq!(into_slots(vec![row("x", 1)], &[]), vec![row("x", 1)]);
    }

    #[test]
    fn a_refund_lowers_the_running_total() {
        let slots = vec!["2026-12-02T08".to_owned(), "2026-12-02T09".to_owned()];
        let counts = vec![
            ("2026-12-02T08".to_owned(), "a".to_owned(), 10),
            ("2026-12-02T09".to_owned(), "a".to_owned(), -4),
        ];
        let series = series();
        let svg = draw(&chart(&slots, &series[..1], &counts, Layout::Grouped, true));
        assert!(svg.contains("08:00 UTC: accepted 10<"), "{svg}");
        assert!(svg.contains("09:00 UTC (so far): accepted 6<"), "{svg}");
        assert!(svg.contains("data-total=\"6\""), "{svg}");
    }

    fn plot_w_of(slots: usize, of: usize) -> f64 {
        (WIDTH - LEFT - RIGHT) / of as f64 * slots as f64
    }
}
