//! The four SVG plots of a workload, drawn from result documents only, so
//! `workbench plot` can redraw them from saved JSON at any time.
//!
//! * `latency.svg`: the latency percentile distribution, one line per target;
//!   x is `1/(1-p)` on a log scale, labelled 50%, 90%, 99%, 99.9%, 99.99%,
//!   so the tail gets as much room as the median; y is latency (µs, log).
//!   Each line stops where the sample count stops supporting the percentile.
//! * `throughput.svg`: measured operations per second per target.
//! * `timeline.svg`: throughput per second over the run phase.
//! * `percentiles.svg`: p50, p99 and p99.9 per target (µs, log scale).
//! * `device-reads.svg`, for workloads whose data set does not fit in the
//!   memory the engines may cache in (a memory limit, or reads that reached
//!   the device): bytes read from the device per get, per target. This is
//!   where a B+tree's and an LSM tree's read paths differ.
//!
//! A target whose run was capped by its time limit is marked `(capped)` in
//! every legend and axis label.
//!
//! Every plot has a title, axis labels with units, a legend, and the
//! settings and machine in a subtitle. Text is emitted as SVG `<text>` and
//! laid out with plotters' built-in estimate, so no font files or system
//! font libraries are needed.

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Result, WorkloadError};
use crate::report::display_name;
use crate::results::ResultDocument;

const SIZE: (u32, u32) = (1000, 620);
const HEADER: u32 = 96;
const FONT: &str = "sans-serif";

type DrawResult = std::result::Result<(), Box<dyn Error>>;

/// The file names of the plots, in the order they are listed.
pub const PLOT_FILES: [&str; 4] = [
    "latency.svg",
    "throughput.svg",
    "timeline.svg",
    "percentiles.svg",
];

/// The plot of device bytes read per get.
pub const DEVICE_READS_PLOT: &str = "device-reads.svg";

/// Whether a workload's documents call for [`DEVICE_READS_PLOT`]: a memory
/// limit, or at least a byte per get read from the device.
fn reads_reach_the_device(documents: &[ResultDocument]) -> bool {
    documents.iter().any(|d| {
        d.memory.limit.is_some() || d.io.device_read_bytes_per_get.is_some_and(|b| b >= 1.0)
    })
}

/// The plots a workload gets, in the order they are listed.
pub fn plots_for(documents: &[ResultDocument]) -> Vec<&'static str> {
    let mut plots = PLOT_FILES.to_vec();
    if reads_reach_the_device(documents) {
        plots.push(DEVICE_READS_PLOT);
    }
    plots
}

/// Draws the plots of one workload into `dir`.
pub fn draw_workload(dir: &Path, documents: &[ResultDocument]) -> Result<()> {
    let Some(first) = documents.first() else {
        return Ok(());
    };
    let workload = &first.workload;
    let wrap = |name: &str, result: DrawResult| {
        result.map_err(|e| WorkloadError::Plot {
            plot: dir.join(name).display().to_string(),
            message: e.to_string(),
        })
    };
    wrap(
        PLOT_FILES[0],
        latency(&dir.join(PLOT_FILES[0]), workload, documents),
    )?;
    wrap(
        PLOT_FILES[1],
        throughput(&dir.join(PLOT_FILES[1]), workload, documents),
    )?;
    wrap(
        PLOT_FILES[2],
        timeline(&dir.join(PLOT_FILES[2]), workload, documents),
    )?;
    wrap(
        PLOT_FILES[3],
        percentiles(&dir.join(PLOT_FILES[3]), workload, documents),
    )?;
    if reads_reach_the_device(documents) {
        wrap(
            DEVICE_READS_PLOT,
            device_reads(&dir.join(DEVICE_READS_PLOT), workload, documents),
        )?;
    }
    Ok(())
}

/// A stable colour per target: engines keep theirs across plots and runs.
fn color_of(name: &str) -> RGBColor {
    let index = engines::EngineKind::ALL
        .iter()
        .position(|k| k.name() == name)
        .unwrap_or_else(|| name.bytes().map(usize::from).sum::<usize>());
    palette(index)
}

/// The `i`-th colour of the plots' palette (it repeats after eight).
fn palette(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(0x4c, 0x72, 0xb0),
        RGBColor(0xdd, 0x84, 0x52),
        RGBColor(0x55, 0xa8, 0x68),
        RGBColor(0xc4, 0x4e, 0x52),
        RGBColor(0x81, 0x72, 0xb3),
        RGBColor(0x93, 0x78, 0x60),
        RGBColor(0xda, 0x8b, 0xc3),
        RGBColor(0x8c, 0x8c, 0x8c),
    ];
    COLORS[index % COLORS.len()]
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap_text(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().map(|l| l.chars().count()).unwrap_or(0);
        if line > 0 && line + 1 + word.chars().count() > width {
            lines.push(String::new());
        }
        if let Some(current) = lines.last_mut() {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
    }
    lines
}

/// Draws the title and subtitle, returns the area for the chart.
fn frame<'b>(
    root: &DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    first: &ResultDocument,
) -> std::result::Result<DrawingArea<SVGBackend<'b>, Shift>, Box<dyn Error>> {
    let subtitle = format!(
        "{} | {}",
        first.spec.settings_line_with(&first.durability.description),
        first.machine.summary()
    );
    titled(root, title, &subtitle)
}

/// Draws a title and a (wrapped) subtitle, returns the area for the chart.
fn titled<'b>(
    root: &DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    subtitle: &str,
) -> std::result::Result<DrawingArea<SVGBackend<'b>, Shift>, Box<dyn Error>> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    let center = Pos::new(HPos::Center, VPos::Top);
    header.draw_text(
        title,
        &TextStyle::from((FONT, 22).into_font()).pos(center),
        (SIZE.0 as i32 / 2, 6),
    )?;
    let style = TextStyle::from((FONT, 12).into_font())
        .color(&RGBColor(0x55, 0x55, 0x55))
        .pos(center);
    for (i, line) in wrap_text(subtitle, 150).iter().take(4).enumerate() {
        header.draw_text(line, &style, (SIZE.0 as i32 / 2, 34 + 15 * i as i32))?;
    }
    Ok(body)
}

fn percent_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn micros(nanos: u64) -> f64 {
    (nanos as f64 / 1000.0).max(0.001)
}

fn latency(path: &Path, workload: &str, documents: &[ResultDocument]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let body = frame(
        &root,
        &format!("{workload}: latency by percentile (all operations)"),
        &documents[0],
    )?;
    const STEPS: usize = 200;
    const MAX_X: f64 = 1e5;
    let mut lines = Vec::new();
    for doc in documents {
        let histogram = doc.overall.decode()?;
        let count = histogram.len().max(1) as f64;
        let mut points = Vec::new();
        for step in 0..=STEPS {
            let x = 10f64.powf(5.0 * step as f64 / STEPS as f64);
            // A percentile beyond 1 - 1/count is just the maximum again.
            if x > count {
                break;
            }
            let quantile = 1.0 - 1.0 / x;
            points.push((x, micros(histogram.value_at_quantile(quantile))));
        }
        lines.push((doc.target.name.clone(), display_name(doc), points));
    }
    let values = lines.iter().flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y));
    let (low, high) = bounds(values);
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (1f64..MAX_X)
                .log_scale()
                .with_key_points(vec![2.0, 10.0, 100.0, 1e3, 1e4, 1e5]),
            (low..high).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1/(1-p))")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| percent_label(*x))
        .y_label_formatter(&|y| format_axis(*y))
        .draw()?;
    for (name, label, points) in lines {
        let color = color_of(&name);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn throughput(path: &Path, workload: &str, documents: &[ResultDocument]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let body = frame(&root, &format!("{workload}: throughput"), &documents[0])?;
    let n = documents.len();
    let top = documents
        .iter()
        .map(|d| d.run.throughput_ops_per_sec)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let names: Vec<String> = documents.iter().map(display_name).collect();
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(slots(n), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("engine")
        .y_desc("throughput (operations/s)")
        .x_label_formatter(&|x| slot_name(&names, *x))
        .y_label_formatter(&|y| format_axis(*y))
        .draw()?;
    for (i, doc) in documents.iter().enumerate() {
        let color = color_of(&doc.target.name);
        let x = i as i32 * SLOT;
        let value = doc.run.throughput_ops_per_sec;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - SLOT * 35 / 100, 0.0), (x + SLOT * 35 / 100, value)],
                color.filled(),
            )))?
            .label(format!("{} ({})", display_name(doc), format_axis(value)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        chart.draw_series(std::iter::once(Text::new(
            format_axis(value),
            (x, value),
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn timeline(path: &Path, workload: &str, documents: &[ResultDocument]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let body = frame(
        &root,
        &format!("{workload}: throughput over time"),
        &documents[0],
    )?;
    let seconds = documents
        .iter()
        .map(|d| d.timeline.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let top = documents
        .iter()
        .flat_map(|d| d.timeline.iter().map(|p| p.throughput_ops_per_sec))
        .fold(0.0, f64::max)
        .max(1.0)
        // Headroom above the highest line for the legend.
        * 1.35;
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("time since the end of warm-up (s)")
        .y_desc("throughput (operations/s, 1 s buckets)")
        .y_label_formatter(&|y| format_axis(*y))
        .draw()?;
    for doc in documents {
        let color = color_of(&doc.target.name);
        let points = doc
            .timeline
            .iter()
            .map(|p| (p.second as f64 + 0.5, p.throughput_ops_per_sec));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(display_name(doc))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// One colour of bars: its label, colour and the value it shows.
type PercentileBars = (&'static str, RGBColor, fn(&ResultDocument) -> u64);

fn percentiles(path: &Path, workload: &str, documents: &[ResultDocument]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let body = frame(
        &root,
        &format!("{workload}: p50, p99 and p99.9 latency"),
        &documents[0],
    )?;
    let n = documents.len();
    let series: [PercentileBars; 3] = [
        ("p50", RGBColor(0x9e, 0xc5, 0xe8), |d| d.overall.p50_ns),
        ("p99", RGBColor(0x4c, 0x72, 0xb0), |d| d.overall.p99_ns),
        ("p99.9", RGBColor(0x1f, 0x2f, 0x5c), |d| d.overall.p999_ns),
    ];
    let values = documents
        .iter()
        .flat_map(|d| series.iter().map(move |(_, _, f)| micros(f(d))));
    let (low, high) = bounds(values);
    let names: Vec<String> = documents.iter().map(display_name).collect();
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(slots(n), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("engine")
        .y_desc("latency (µs, log scale)")
        .x_label_formatter(&|x| slot_name(&names, *x))
        .y_label_formatter(&|y| format_axis(*y))
        .draw()?;
    const WIDTH: i32 = SLOT / 4;
    for (j, (label, color, value)) in series.iter().enumerate() {
        let color = *color;
        let bars = documents.iter().enumerate().map(|(i, d)| {
            let left = i as i32 * SLOT - 3 * WIDTH / 2 + j as i32 * WIDTH;
            Rectangle::new(
                [(left + 2, low), (left + WIDTH - 2, micros(value(d)))],
                color.filled(),
            )
        });
        chart
            .draw_series(bars)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn device_reads(path: &Path, workload: &str, documents: &[ResultDocument]) -> DrawResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let body = frame(
        &root,
        &format!("{workload}: bytes read from the device per get"),
        &documents[0],
    )?;
    let value = |d: &ResultDocument| d.io.device_read_bytes_per_get.unwrap_or(0.0);
    let top = documents.iter().map(value).fold(0.0, f64::max).max(1.0) * 1.25;
    let names: Vec<String> = documents.iter().map(display_name).collect();
    let mut chart = ChartBuilder::on(&body)
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(slots(documents.len()), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("engine")
        .y_desc("bytes read from the device per get (run phase)")
        .x_label_formatter(&|x| slot_name(&names, *x))
        .y_label_formatter(&|y| format_axis(*y))
        .draw()?;
    for (i, doc) in documents.iter().enumerate() {
        let color = color_of(&doc.target.name);
        let x = i as i32 * SLOT;
        let bytes = value(doc);
        let limit = doc.memory.limit.as_ref().map_or(String::new(), |l| {
            format!(", limit {} MiB", l.limit_bytes >> 20)
        });
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - SLOT * 35 / 100, 0.0), (x + SLOT * 35 / 100, bytes)],
                color.filled(),
            )))?
            .label(format!(
                "{} ({} B/get, data {:.1}× memory{limit})",
                display_name(doc),
                format_axis(bytes),
                doc.memory.data_set_to_memory.unwrap_or(0.0)
            ))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        chart.draw_series(std::iter::once(Text::new(
            format_axis(bytes),
            (x, bytes),
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// A grouped bar chart outside the workload plots (e.g. `workbench mvcc`):
/// one group per name in `groups`, one bar per series in each, labelled with
/// its value; the series share a colour across groups.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    subtitle: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
    y_desc: &str,
) -> Result<()> {
    let draw = || -> DrawResult {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        let body = titled(&root, title, subtitle)?;
        let top = series
            .iter()
            .flat_map(|(_, values)| values.iter().copied())
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.2;
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d(slots(groups.len()), 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .x_label_formatter(&|x| slot_name(groups, *x))
            .y_label_formatter(&|y| format_axis(*y))
            .draw()?;
        let width = SLOT * 80 / 100 / series.len().max(1) as i32;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = palette(s);
            let offset = -SLOT * 40 / 100 + s as i32 * width;
            let bars = values.iter().enumerate().map(|(g, value)| {
                let x = g as i32 * SLOT + offset;
                Rectangle::new([(x, 0.0), (x + width - 2, *value)], color.filled())
            });
            chart
                .draw_series(bars)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
            chart.draw_series(values.iter().enumerate().map(|(g, value)| {
                Text::new(
                    format!("{value:.2}"),
                    (g as i32 * SLOT + offset + width / 2, *value),
                    TextStyle::from((FONT, 11).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| WorkloadError::Plot {
        plot: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Bar charts place target `i` at x = `i * SLOT` on an integer axis (whose
/// labels plotters can format), leaving room for grouped bars in between.
const SLOT: i32 = 100;

fn slots(
    n: usize,
) -> plotters::coord::combinators::WithKeyPoints<plotters::coord::types::RangedCoordi32> {
    let n = n as i32;
    (-SLOT / 2..n * SLOT - SLOT / 2).with_key_points((0..n).map(|i| i * SLOT).collect())
}

fn slot_name(names: &[String], x: i32) -> String {
    if x % SLOT != 0 {
        return String::new();
    }
    usize::try_from(x / SLOT)
        .ok()
        .and_then(|i| names.get(i))
        .cloned()
        .unwrap_or_default()
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// A log axis range that contains every value with some room.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut low, mut high) = (f64::INFINITY, 0f64);
    for v in values {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() || high <= 0.0 {
        return (0.01, 10.0);
    }
    (low.max(1e-3) / 2.0, high * 2.0)
}

/// Axis numbers: 1500 -> "1.5k", 2000000 -> "2M", 0.25 -> "0.25".
pub fn format_axis(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_labels_read_as_percentiles() {
        assert_eq!(percent_label(2.0), "50%");
        assert_eq!(percent_label(10.0), "90%");
        assert_eq!(percent_label(100.0), "99%");
        assert_eq!(percent_label(1000.0), "99.9%");
        assert_eq!(percent_label(10000.0), "99.99%");
        assert_eq!(percent_label(1.0), "0%");
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(format_axis(1500.0), "1.5k");
        assert_eq!(format_axis(2_000_000.0), "2M");
        assert_eq!(format_axis(12.0), "12");
        assert_eq!(format_axis(0.25), "0.25");
    }

    #[test]
    fn long_subtitles_wrap_at_spaces() {
        let lines = wrap_text("aaa bbb ccc ddd", 7);
        assert_eq!(lines, vec!["aaa bbb", "ccc ddd"]);
    }
}
