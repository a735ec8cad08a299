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

/// The chart as a `<figure>`: caption, SVG, legend with each series'
/// total.
pub fn draw(chart: &Chart<'_>) -> String {
    let values = values(chart);
    let count = chart.slots.len().max(1);
    let tops: Vec<u64> = (0..chart.slots.len())
        .map(|i| match chart.layout {
            Layout::Stacked => values.iter().map(|row| row[i]).sum(),
            Layout::Grouped => values.iter().map(|row| row[i]).max().unwrap_or(0),
        })
        .collect();
    let ticks = ticks(tops.iter().copied().max().unwrap_or(0));
    let top_value = ticks.last().copied().unwrap_or(1).max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y0 = TOP + plot_h;
    let slot_w = plot_w / count as f64;
    let y_of = |v: u64| y0 - plot_h * v as f64 / top_value;
    let mut svg = format!(
        "<figure class=\"chart\" data-chart=\"{id}\"><figcaption>{title} <span class=\"unit\">({unit}), \
         times <span class=\"tz\">UTC</span></span></figcaption>\n\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}, {unit}\">\n",
        id = escape(chart.id),
        title = escape(chart.title),
        unit = escape(chart.unit),
    );
    // Before the history starts: a band, not a row of zeros.
    let first_with_history = chart.history_from.map_or(0, |from| {
        chart
            .slots
            .iter()
            .take_while(|s| s.as_str() < &from[..from.len().min(s.len())])
            .count()
    });
    if first_with_history > 0 {
        let w = slot_w * first_with_history as f64;
        let _ = write!(
            svg,
            "<rect class=\"nohistory\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{plot_h}\"/>"
        );
        if w >= 70.0 {
            let _ = write!(
                svg,
                "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no history</text>",
                LEFT + w / 2.0,
                TOP + plot_h / 2.0
            );
        }
        svg.push('\n');
    }
    // The current slot is still filling.
    let _ = writeln!(
        svg,
        "<rect class=\"partial\" x=\"{:.1}\" y=\"{TOP}\" width=\"{slot_w:.1}\" height=\"{plot_h}\"/>",
        LEFT + slot_w * (count - 1) as f64
    );
    for tick in &ticks {
        let y = y_of(*tick);
        let _ = writeln!(
            svg,
            "<line class=\"{}\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            if *tick == 0 { "axis" } else { "grid" },
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            compact(*tick)
        );
    }
    for (i, slot) in chart.slots.iter().enumerate() {
        let x = LEFT + slot_w * i as f64;
        let partial = i + 1 == chart.slots.len();
        let _ = write!(svg, "<g>");
        // The whole slot answers the hover, not only its bars.
        let _ = write!(
            svg,
            "<rect class=\"hover\" x=\"{x:.1}\" y=\"{TOP}\" width=\"{slot_w:.1}\" height=\"{plot_h}\"/>"
        );
        let mut stacked = y0;
        let width = match chart.layout {
            Layout::Stacked => slot_w,
            Layout::Grouped => slot_w / chart.series.len().max(1) as f64,
        };
        let mut parts = Vec::new();
        for (k, (row, s)) in values.iter().zip(chart.series).enumerate() {
            let v = row[i];
            parts.push(format!("{} {v}", s.label));
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / top_value;
            let (bx, by) = match chart.layout {
                Layout::Stacked => {
                    stacked -= h;
                    (x, stacked)
                }
                Layout::Grouped => (x + width * k as f64, y0 - h),
            };
            let _ = write!(
                svg,
                "<rect class=\"{}\" x=\"{:.1}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
                s.class,
                bx + 0.4,
                (width - 0.8).max(0.4),
            );
        }
        let _ = writeln!(
            svg,
            "<title>{} UTC{}: {}</title></g>",
            clock(slot),
            if partial { " (so far)" } else { "" },
            escape(&parts.join(", "))
        );
    }
    // About five time labels along the axis, and "now" at its end.
    let every = (chart.slots.len() / 5).max(1);
    for (i, slot) in chart.slots.iter().enumerate() {
        if i % every != 0 || i + every > chart.slots.len() {
            continue;
        }
        let _ = writeln!(
            svg,
            "<text class=\"label t\" x=\"{:.1}\" y=\"{}\" data-at=\"{}\">{}</text>",
            LEFT + slot_w * i as f64,
            HEIGHT - 5.0,
            instant(slot),
            clock(slot)
        );
    }
    let _ = writeln!(
        svg,
        "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text>",
        WIDTH - RIGHT,
        HEIGHT - 5.0
    );
    svg.push_str(match chart.layout {
        Layout::Stacked => "</svg>\n<p class=\"legend\">Bottom to top: ",
        Layout::Grouped => "</svg>\n<p class=\"legend\">Left to right: ",
    });
    let legend: Vec<String> = values
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
    svg.push_str(&legend.join(" "));
    let _ = writeln!(
        svg,
        " <span class=\"entry\">({})</span></p></figure>",
        match (chart.cumulative, chart.layout) {
            (true, _) => "used by now",
            (false, Layout::Stacked) => "in the span, stacked",
            (false, Layout::Grouped) => "in the span, side by side",
        }
    );
    svg
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
