//! Charts as SVG, drawn by the daemon (no script, no outside library):
//! stacked bars over consecutive time slots, with labelled axes. Pure:
//! the counts in, the markup out.
//!
//! Times on the axis are UTC as rendered (`data-at` carries the instant)
//! and the page's script rewrites them in the browser's zone with its
//! offset. Colour is never the only signal: the legend names the series in
//! stacking order, and every bar has a `<title>` with its figures.

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

/// Stacked bars of `counts` over `slots`; `cumulative` sums each series
/// along the slots (quota used through the day).
pub fn stacked_bars(
    title: &str,
    unit: &str,
    slots: &[String],
    series: &[Series],
    counts: &Counts,
    cumulative: bool,
) -> String {
    let mut by_slot: HashMap<(&str, &str), u64> = HashMap::new();
    for (slot, key, n) in counts {
        *by_slot.entry((slot.as_str(), key.as_str())).or_default() += n;
    }
    let mut values: Vec<Vec<u64>> = series
        .iter()
        .map(|s| {
            slots
                .iter()
                .map(|slot| by_slot.get(&(slot.as_str(), s.key)).copied().unwrap_or(0))
                .collect()
        })
        .collect();
    if cumulative {
        for row in &mut values {
            let mut sum = 0;
            for v in row.iter_mut() {
                sum += *v;
                *v = sum;
            }
        }
    }
    let totals: Vec<u64> = (0..slots.len())
        .map(|i| values.iter().map(|row| row[i]).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let (width, height, left, bottom, top) = (640.0_f64, 180.0_f64, 44.0, 24.0, 8.0);
    let plot_w = width - left - 8.0;
    let plot_h = height - bottom - top;
    let bar_w = plot_w / slots.len().max(1) as f64;
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{} <span class=\"unit\">({})</span>, \
         times <span class=\"tz\">UTC</span></figcaption>\n\
         <svg viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">\n\
         <line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\"/>\n\
         <text class=\"label\" x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{max}</text>\
         <text class=\"label\" x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\">0</text>\n",
        escape(title),
        escape(unit),
        escape(title),
        y0 = top + plot_h,
        x1 = left + plot_w,
        lx = left - 4.0,
        ty = top + 10.0,
    );
    for (i, slot) in slots.iter().enumerate() {
        let x = left + bar_w * i as f64;
        let mut y = top + plot_h;
        let mut parts = Vec::new();
        let _ = write!(svg, "<g>");
        for (row, s) in values.iter().zip(series) {
            let v = row[i];
            parts.push(format!("{} {v}", s.label));
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                "<rect class=\"{}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
                s.class,
                x + 0.5,
                (bar_w - 1.0).max(0.5),
            );
        }
        let _ = writeln!(
            svg,
            "<title>{} UTC: {}</title></g>",
            clock(slot),
            escape(&parts.join(", "))
        );
    }
    // About six time labels along the axis.
    let every = (slots.len() / 6).max(1);
    for (i, slot) in slots.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let _ = writeln!(
            svg,
            "<text class=\"label t\" x=\"{:.1}\" y=\"{}\" data-at=\"{}\">{}</text>",
            left + bar_w * i as f64,
            height - 6.0,
            instant(slot),
            clock(slot)
        );
    }
    svg.push_str("</svg>\n<p class=\"legend\">Bottom to top: ");
    let legend: Vec<String> = series
        .iter()
        .map(|s| {
            format!(
                "<span class=\"key {}\" aria-hidden=\"true\"></span> {}",
                s.class,
                escape(s.label)
            )
        })
        .collect();
    svg.push_str(&legend.join(", "));
    let _ = writeln!(
        svg,
        ". Total {}: {}.</p></figure>",
        if cumulative {
            "at the end"
        } else {
            "in the span"
        },
        if cumulative {
            totals.last().copied().unwrap_or(0)
        } else {
            totals.iter().sum()
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

    #[test]
    fn bars_stack_and_say_their_figures() {
        let slots = vec!["2026-12-02T10:00".to_owned(), "2026-12-02T10:01".to_owned()];
        let series = [
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
        ];
        let counts = vec![
            ("2026-12-02T10:00".to_owned(), "a".to_owned(), 3),
            ("2026-12-02T10:01".to_owned(), "a".to_owned(), 1),
            ("2026-12-02T10:01".to_owned(), "t".to_owned(), 1),
        ];
        let svg = stacked_bars("Calls", "per minute", &slots, &series, &counts, false);
        assert!(
            svg.contains("<title>10:00 UTC: accepted 3, throttled 0</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>10:01 UTC: accepted 1, throttled 1</title>"),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("data-at=\"2026-12-02T10:00:00Z\""), "{svg}");
        assert!(svg.contains("Total in the span: 5."), "{svg}");
        let running = stacked_bars("Quota", "files", &slots, &series[..1], &counts, true);
        assert!(running.contains("10:01 UTC: accepted 4"), "{running}");
        assert!(running.contains("Total at the end: 4."), "{running}");
    }
}
