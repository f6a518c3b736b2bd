//! The plot of a soak run as a self-contained SVG: panel 1 the data directory's size and the
//! database's entries per keyspace, panel 2 the host's resident memory, both over time.
//! Hand-written (polylines, axes with tick labels, a legend) to need no plotting crate.

use std::fmt::Write as _;

use super::sample::Sample;

/// Size of the picture and of its margins, in SVG user units (pixels).
const WIDTH: f64 = 960.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 90.0;
const TOP: f64 = 60.0;
const PANEL_HEIGHT: f64 = 260.0;
/// Room under a panel for its time axis labels.
const PANEL_GAP: f64 = 80.0;

/// One line of a panel.
pub(crate) struct Series {
    pub name: String,
    pub color: &'static str,
    /// (x, y) points, in the order drawn.
    pub points: Vec<(f64, f64)>,
    /// Whether it is read on the panel's right axis.
    pub right: bool,
}

/// One panel: a title, the labels of its axes and its lines.
pub(crate) struct Panel {
    pub title: String,
    pub left_label: String,
    /// The right axis's label; no right axis without one.
    pub right_label: Option<String>,
    pub series: Vec<Series>,
}

/// The soak plot of `samples`: time on x (seconds, or minutes past five), panel 1 the data
/// directory (MiB, left) and the entries of the event log, the inboxes together and the
/// contexts together (right), panel 2 resident memory (MiB).
pub(crate) fn render(samples: &[Sample], title: &str) -> String {
    let minutes = samples.last().is_some_and(|s| s.t_s > 300.0);
    let x = |s: &Sample| if minutes { s.t_s / 60.0 } else { s.t_s };
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let series = |name: &str, color, right, value: &dyn Fn(&Sample) -> Option<f64>| Series {
        name: name.to_owned(),
        color,
        points: samples
            .iter()
            .filter_map(|s| Some((x(s), value(s)?)))
            .collect(),
        right,
    };
    let count = |v: Option<u64>| v.map(|v| v as f64);
    let storage = Panel {
        title: "Data directory and database entries per keyspace".into(),
        left_label: "data directory (MiB)".into(),
        right_label: Some("entries".into()),
        series: vec![
            series("data directory (MiB)", "#1f77b4", false, &|s| {
                Some(mib(s.data_bytes as f64))
            }),
            series("event log entries", "#d62728", true, &|s| {
                count(s.event_log())
            }),
            series("inbox entries (all contexts)", "#ff7f0e", true, &|s| {
                count(s.inboxes())
            }),
            series("context entries (all contexts)", "#2ca02c", true, &|s| {
                count(s.contexts())
            }),
        ],
    };
    let memory = Panel {
        title: "Resident memory of the host".into(),
        left_label: "VmRSS (MiB)".into(),
        right_label: None,
        series: vec![series("resident memory (MiB)", "#9467bd", false, &|s| {
            s.rss_kib.map(|k| k as f64 / 1024.0)
        })],
    };
    let x_label = if minutes { "minutes" } else { "seconds" };
    let x_max = samples.last().map_or(0.0, x);
    svg(title, x_label, x_max, &[storage, memory])
}

/// The SVG of `panels`, one under the other, sharing an x axis from 0 to `x_max`.
pub(crate) fn svg(title: &str, x_label: &str, x_max: f64, panels: &[Panel]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP);
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let x_axis = Axis::up_to(x_max);
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_HEIGHT + PANEL_GAP);
        draw_panel(&mut out, panel, top, &x_axis, x_label);
    }
    out.push_str("</svg>\n");
    out
}

/// A linear axis from 0 to `top`, with ticks every `step`.
struct Axis {
    top: f64,
    step: f64,
}

impl Axis {
    /// An axis from 0 that holds `max`, with about five ticks at 1, 2 or 5 times a power
    /// of ten.
    fn from_zero(max: f64) -> Self {
        Axis::rounded(max, 5.0)
    }

    /// An axis from 0 that holds `max`, with about `ticks` intervals.
    fn rounded(max: f64, ticks: f64) -> Self {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let raw = max / ticks;
        let power = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * power)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * power);
        Axis {
            top: (max / step).ceil() * step,
            step,
        }
    }

    /// An axis from 0 to exactly `max` (time: the plot ends with the run), with about eight
    /// round ticks.
    fn up_to(max: f64) -> Self {
        let round = Axis::rounded(max, 8.0);
        if max.is_finite() && max > 0.0 {
            Axis { top: max, ..round }
        } else {
            round
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        // The last tick at or under the top (a hair of slack for rounding).
        let n = (self.top / self.step + 1e-9).floor() as usize;
        (0..=n).map(|i| i as f64 * self.step)
    }

    /// A tick's label: k and M for large values, as many decimals as the step needs.
    fn label(&self, v: f64) -> String {
        if v == 0.0 {
            return "0".to_owned();
        }
        let (v, step, suffix) = if self.top >= 1e6 {
            (v / 1e6, self.step / 1e6, "M")
        } else if self.top >= 1e4 {
            (v / 1e3, self.step / 1e3, "k")
        } else {
            (v, self.step, "")
        };
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10()).ceil() as usize
        };
        format!("{v:.decimals$}{suffix}")
    }
}

fn draw_panel(out: &mut String, panel: &Panel, top: f64, x_axis: &Axis, x_label: &str) {
    let (left, right, bottom) = (LEFT, WIDTH - RIGHT, top + PANEL_HEIGHT);
    let max_of = |right_side: bool| {
        panel
            .series
            .iter()
            .filter(|s| s.right == right_side)
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
    };
    let y_left = Axis::from_zero(max_of(false));
    let y_right = Axis::from_zero(max_of(true));
    let px = |x: f64| left + x / x_axis.top * (right - left);
    let py = |y: f64, axis: &Axis| bottom - y / axis.top * PANEL_HEIGHT;

    let _ = writeln!(
        out,
        r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        top - 8.0,
        escape(&panel.title)
    );
    // Grid and left ticks.
    for v in y_left.ticks() {
        let y = py(v, &y_left);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e0e0e0"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            y_left.label(v)
        );
    }
    if panel.right_label.is_some() {
        for v in y_right.ticks() {
            let y = py(v, &y_right);
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{:.1}">{}</text>"#,
                right + 6.0,
                y + 4.0,
                y_right.label(v)
            );
        }
    }
    for v in x_axis.ticks() {
        let x = px(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#000"/>"##,
            bottom + 5.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 19.0,
            x_axis.label(v)
        );
    }
    // The frame.
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{}" height="{PANEL_HEIGHT}" fill="none" stroke="#000"/>"##,
        right - left
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 38.0,
        escape(x_label)
    );
    let mid = top + PANEL_HEIGHT / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{mid}" text-anchor="middle" transform="rotate(-90 {} {mid})">{}</text>"#,
        left - 62.0,
        left - 62.0,
        escape(&panel.left_label)
    );
    if let Some(label) = &panel.right_label {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{mid}" text-anchor="middle" transform="rotate(90 {} {mid})">{}</text>"#,
            right + 62.0,
            right + 62.0,
            escape(label)
        );
    }
    // The lines.
    for s in &panel.series {
        if s.points.is_empty() {
            continue;
        }
        let axis = if s.right { &y_right } else { &y_left };
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y, axis)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            points.join(" ")
        );
    }
    // The legend, top left inside the frame, as wide as its longest name (about 7 units a
    // character at this font size).
    let names: Vec<String> = panel
        .series
        .iter()
        .map(|s| {
            let mut name = s.name.clone();
            if s.right && panel.right_label.is_some() {
                name.push_str(" (right axis)");
            }
            if s.points.is_empty() {
                name.push_str(": no data");
            }
            name
        })
        .collect();
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="white" fill-opacity="0.85" stroke="#999"/>"##,
        left + 8.0,
        top + 8.0,
        48.0 + 7.0 * longest as f64,
        names.len() as f64 * 18.0 + 8.0
    );
    for (i, (s, name)) in panel.series.iter().zip(&names).enumerate() {
        let y = top + 24.0 + i as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/>"#,
            left + 16.0,
            y - 4.0,
            left + 40.0,
            y - 4.0,
            s.color
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{y}">{}</text>"#,
            left + 48.0,
            escape(name)
        );
    }
}

/// `text` with the characters XML reserves escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::super::sample::Storage;
    use super::*;

    /// Checks that `xml` is well formed as far as this module writes it: one root, every
    /// element closed in order, attributes quoted, text without a bare `<` or `&`.
    fn assert_well_formed(xml: &str) {
        let body = xml
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .expect("an XML declaration");
        let mut open: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            check_text(&rest[..start]);
            let end = rest[start..].find('>').expect("an unterminated tag") + start;
            let tag = &rest[start + 1..end];
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name.trim()), "mismatched </{name}>");
            } else {
                let name = tag.split_whitespace().next().expect("a tag name");
                let name = name.trim_end_matches('/');
                if open.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        check_text(rest);
        assert!(open.is_empty(), "unclosed elements: {open:?}");
        assert_eq!(roots, 1, "one root element");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "a bare & in {text:?}"
            );
        }
    }

    /// The number of points of each polyline, in order.
    fn polyline_points(svg: &str) -> Vec<usize> {
        svg.split("<polyline")
            .skip(1)
            .map(|p| {
                let points = p.split("points=\"").nth(1).expect("points");
                let points = &points[..points.find('"').expect("closing quote")];
                points.split_whitespace().count()
            })
            .collect()
    }

    fn samples(n: usize, storage: bool) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t_s: i as f64 * 10.0,
                data_bytes: 1_000_000 * i as u64,
                rss_kib: Some(60_000 + i as u64),
                orders: 100 * i as u64,
                settled: 90 * i as u64,
                storage: storage.then(|| Storage {
                    event_log: Some(500),
                    inboxes: [("car".to_owned(), 20), ("view".to_owned(), 30)].into(),
                    contexts: [("order".to_owned(), (Some(90 * i as u64), None))].into(),
                    ..Storage::default()
                }),
            })
            .collect()
    }

    #[test]
    fn the_plot_is_well_formed_with_a_line_per_series_and_a_point_per_sample() {
        let svg = render(&samples(13, true), "soak <8 clients> & \"retention 0s\"");
        assert_well_formed(&svg);
        // Data dir, event log, inboxes, contexts; then memory.
        assert_eq!(polyline_points(&svg), [13, 13, 13, 13, 13]);
        assert!(svg.contains("&lt;8 clients&gt; &amp; &quot;retention 0s&quot;"));
        assert!(svg.contains(">seconds</text>"));
        assert!(svg.contains("event log entries (right axis)"));
    }

    #[test]
    fn without_a_storage_report_the_entry_lines_say_no_data() {
        let svg = render(&samples(40, false), "soak");
        assert_well_formed(&svg);
        assert_eq!(polyline_points(&svg), [40, 40]);
        assert_eq!(svg.matches(": no data</text>").count(), 3);
        // 390 s: minutes on the time axis.
        assert!(svg.contains(">minutes</text>"));
        assert_well_formed(&render(&[], "empty"));
    }

    #[test]
    fn axes_hold_the_maximum_with_round_ticks() {
        let a = Axis::from_zero(93.0);
        assert_eq!((a.step, a.top), (20.0, 100.0));
        assert_eq!(a.ticks().count(), 6);
        let a = Axis::from_zero(0.0);
        assert_eq!((a.step, a.top), (0.2, 1.0));
        assert_eq!(a.label(0.4), "0.4");
        let a = Axis::from_zero(2_345_678.0);
        assert_eq!(a.step, 500_000.0);
        assert_eq!(a.label(1_500_000.0), "1.5M");
        let a = Axis::from_zero(42_000.0);
        assert_eq!(a.label(20_000.0), "20k");
        // Time ends with the run: 0, 20, ..., 120 for 123 s.
        let a = Axis::up_to(123.0);
        assert_eq!(a.top, 123.0);
        assert_eq!(a.ticks().last(), Some(120.0));
        assert_eq!(a.ticks().count(), 7);
    }
}
