//! `bench-plot`: draws the sweep CSVs that `bench/run.sh` writes
//! (`SWEEP=connections body records`) as PNG charts, one line per target.
//!
//! For each sweep found in the CSVs it writes `<sweep>-throughput.png`
//! (requests/s against x) and `<sweep>-p99.png` (p99 latency against x)
//! into `--out`. The x axis is logarithmic for `connections` and `body`
//! (ticks at the measured points) and evenly spaced by point for `records`
//! (its first point, 0, has no place on a log scale).
//!
//! Text is drawn with ab_glyph from a TrueType file, by default DejaVu Sans
//! (Debian's `fonts-dejavu-core`); `--font` or `BENCH_PLOT_FONT` name
//! another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

/// The font used unless `--font` says otherwise.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The CSV header `bench/run.sh` writes.
const HEADER: [&str; 9] = [
    "sweep",
    "target",
    "x",
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "passthrough_requests_per_s_at_same_x",
    "ratio",
];

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "bench-plot",
    about = "Draw the benchmark sweep CSVs of bench/run.sh as PNG charts"
)]
struct Args {
    /// Directory the PNGs are written to.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    /// TrueType font for the text.
    #[arg(long, env = "BENCH_PLOT_FONT", default_value = DEFAULT_FONT)]
    font: PathBuf,
    /// Sweep CSV files (columns: sweep, target, x, requests_per_s, p50_ms,
    /// p99_ms, errors, passthrough_requests_per_s_at_same_x, ratio).
    #[arg(required = true)]
    csv: Vec<PathBuf>,
}

/// One measured point of a sweep.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    sweep: String,
    target: String,
    x: f64,
    rps: f64,
    p99_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    load_font(&args.font)?;
    let mut points = Vec::new();
    for path in &args.csv {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        points.extend(parse_csv(&text).with_context(|| format!("in {}", path.display()))?);
    }
    if points.is_empty() {
        bail!("no data rows in the CSV files given: nothing to plot");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut sweeps: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in &points {
        sweeps.entry(p.sweep.as_str()).or_default().push(p);
    }
    for (sweep, points) in sweeps {
        for metric in [Metric::Throughput, Metric::P99] {
            let path = args
                .out
                .join(format!("{sweep}-{}.png", metric.file_suffix()));
            draw(sweep, &points, metric, &path)
                .with_context(|| format!("drawing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// Registers the font file as plotters' `sans-serif`, or says which file
/// is missing.
fn load_font(path: &Path) -> anyhow::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "font file {} not found: install it (Debian: apt-get install fonts-dejavu-core) \
             or name another TrueType file with --font or BENCH_PLOT_FONT",
            path.display()
        ),
        Err(e) => bail!("cannot read the font file {}: {e}", path.display()),
    };
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable TrueType/OpenType font", path.display()))
}

/// Parses one sweep CSV; rows with an empty `requests_per_s` (a point that
/// was not measured) are skipped.
fn parse_csv(text: &str) -> anyhow::Result<Vec<Point>> {
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, l)| l.trim())
        .ok_or_else(|| anyhow!("the file is empty (expected the header line)"))?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    if columns != HEADER {
        bail!(
            "unexpected header `{header}`: expected `{}`",
            HEADER.join(",")
        );
    }
    let mut points = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != HEADER.len() {
            bail!(
                "line {line_no}: {} fields, expected {}",
                fields.len(),
                HEADER.len()
            );
        }
        if fields[3].is_empty() {
            continue;
        }
        let number = |col: usize| -> anyhow::Result<f64> {
            let value: f64 = fields[col].parse().map_err(|_| {
                anyhow!(
                    "line {line_no}: {} is `{}`, not a number",
                    HEADER[col],
                    fields[col]
                )
            })?;
            if !value.is_finite() || value < 0.0 {
                bail!(
                    "line {line_no}: {} is {value}, expected a number >= 0",
                    HEADER[col]
                );
            }
            Ok(value)
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(fields[0]) || !name_ok(fields[1]) {
            bail!(
                "line {line_no}: sweep and target must be letters, digits, - or _ (got `{}`, `{}`)",
                fields[0],
                fields[1]
            );
        }
        points.push(Point {
            sweep: fields[0].to_owned(),
            target: fields[1].to_owned(),
            x: number(2)?,
            rps: number(3)?,
            p99_ms: number(5)?,
        });
    }
    Ok(points)
}

/// What a chart plots on its y axis.
#[derive(Debug, Clone, Copy)]
enum Metric {
    Throughput,
    P99,
}

impl Metric {
    fn file_suffix(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P99 => "p99",
        }
    }
    fn value(self, p: &Point) -> f64 {
        match self {
            Metric::Throughput => p.rps,
            Metric::P99 => p.p99_ms,
        }
    }
    fn axis(self) -> &'static str {
        match self {
            Metric::Throughput => "requests/s",
            Metric::P99 => "p99 latency (ms)",
        }
    }
}

/// How a sweep's x values are laid out and labelled.
struct XAxis {
    /// The measured x values, ascending, without duplicates.
    values: Vec<f64>,
    /// Log scale (else one evenly spaced slot per value).
    log: bool,
    /// The axis description.
    desc: &'static str,
    /// Formats one x value as a tick label.
    label: fn(f64) -> String,
}

impl XAxis {
    fn of(sweep: &str, points: &[&Point]) -> Self {
        let mut values: Vec<f64> = points.iter().map(|p| p.x).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let (log, desc, label): (bool, &'static str, fn(f64) -> String) = match sweep {
            "connections" => (true, "wrk connections (-t1), log scale", plain),
            "body" => (true, "request body size, log scale", bytes),
            "records" => (false, "completed records stored before the run", count),
            _ => (false, "x", plain),
        };
        // A log axis needs x > 0.
        let log = log && values.iter().all(|&x| x > 0.0);
        Self {
            values,
            log,
            desc,
            label,
        }
    }
    /// Where `x` is drawn on the chart's (linear) x coordinate.
    fn position(&self, x: f64) -> f64 {
        if self.log {
            x.log10()
        } else {
            // `x` is one of `values` (they come from the same points).
            self.values.iter().position(|&v| v == x).unwrap_or(0) as f64
        }
    }
    fn range(&self) -> std::ops::Range<f64> {
        let first = self.position(self.values[0]);
        let last = self.position(self.values[self.values.len() - 1]);
        let pad = if self.log {
            ((last - first) * 0.05).max(0.1)
        } else {
            0.3
        };
        first - pad..last + pad
    }
    /// The tick label of a chart position (the measured x it stands for).
    fn label_at(&self, pos: f64) -> String {
        self.values
            .iter()
            .find(|&&v| (self.position(v) - pos).abs() < 1e-9)
            .map(|&v| (self.label)(v))
            .unwrap_or_default()
    }
}

fn plain(x: f64) -> String {
    format!("{x}")
}

fn bytes(x: f64) -> String {
    const KIB: f64 = 1024.0;
    if x >= KIB * KIB && x % (KIB * KIB) == 0.0 {
        format!("{} MiB", x / (KIB * KIB))
    } else if x >= KIB && x % KIB == 0.0 {
        format!("{} KiB", x / KIB)
    } else {
        format!("{x} B")
    }
}

fn count(x: f64) -> String {
    if x >= 1e6 && x % 1e6 == 0.0 {
        format!("{}M", x / 1e6)
    } else if x >= 1e3 && x % 1e3 == 0.0 {
        format!("{}k", x / 1e3)
    } else {
        format!("{x}")
    }
}

/// Line colours by target order.
const COLOURS: [RGBColor; 10] = [
    RGBColor(0, 0, 0),
    RGBColor(128, 128, 128),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Draws one chart of `points` (all of one sweep) into the PNG `path`.
fn draw(sweep: &str, points: &[&Point], metric: Metric, path: &Path) -> anyhow::Result<()> {
    let axis = XAxis::of(sweep, points);
    // Targets in the order they first appear (the run's order).
    let mut targets: Vec<&str> = Vec::new();
    for p in points {
        if !targets.contains(&p.target.as_str()) {
            targets.push(&p.target);
        }
    }
    let top = points
        .iter()
        .map(|p| metric.value(p))
        .fold(0.0_f64, f64::max);
    // Head room above the highest point for the legend.
    let top = if top > 0.0 { top * 1.35 } else { 1.0 };
    let ticks: Vec<f64> = axis.values.iter().map(|&x| axis.position(x)).collect();

    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let title = format!("{sweep} sweep: {} (unique workload)", metric.axis());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(Ticked::new(axis.range(), ticks), 0.0..top)
        .map_err(plot_err)?;
    let label_x = |pos: &f64| axis.label_at(*pos);
    let label_y = |y: &f64| match metric {
        Metric::Throughput => format!("{y:.0}"),
        Metric::P99 => format!("{y:.1}"),
    };
    chart
        .configure_mesh()
        .x_desc(axis.desc)
        .y_desc(metric.axis())
        .x_label_formatter(&label_x)
        .y_label_formatter(&label_y)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(plot_err)?;
    for (i, target) in targets.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.target == *target)
            .map(|p| (axis.position(p.x), metric.value(p)))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))
            .map_err(plot_err)?
            .label(*target)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                line.into_iter()
                    .map(|(x, y)| Circle::new((x, y), 4, colour.filled())),
            )
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(legend_corner(points, &axis, metric, top))
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The upper corner where the lines run lowest (the legend covers less).
fn legend_corner(points: &[&Point], axis: &XAxis, metric: Metric, top: f64) -> SeriesLabelPosition {
    let range = axis.range();
    let mid = (range.start + range.end) / 2.0;
    let (mut left, mut right) = (0.0_f64, 0.0_f64);
    for p in points {
        let y = metric.value(p) / top;
        if axis.position(p.x) <= mid {
            left = left.max(y);
        } else {
            right = right.max(y);
        }
    }
    if left <= right {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// A linear f64 axis whose ticks (and grid lines) are exactly the given
/// points: the measured x values, not round numbers.
struct Ticked {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        Self { range, ticks }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        if span <= 0.0 {
            return (limit.0 + limit.1) / 2;
        }
        let share = (value - self.range.start) / span;
        // Pixel coordinates: rounding to the nearest pixel is intended.
        #[allow(clippy::cast_possible_truncation)]
        let offset = (f64::from(limit.1 - limit.0) * share).round() as i32;
        limit.0 + offset
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// plotters' drawing errors borrow the backend; keep their text.
fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "sweep,target,x,requests_per_s,p50_ms,p99_ms,errors,passthrough_requests_per_s_at_same_x,ratio\n\
        connections,passthrough,1,1000.5,0.1,0.5,0,1000.5,1.00\n\
        connections,memory,1,800,0.2,0.7,0,1000.5,0.80\n\
        connections,memory,8,,,,,,\n";

    #[test]
    fn parses_rows_and_skips_unmeasured_points() {
        let points = parse_csv(CSV).expect("valid CSV");
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].target, "memory");
        assert_eq!(points[1].rps, 800.0);
        assert_eq!(points[1].p99_ms, 0.7);
    }

    #[test]
    fn rejects_bad_input_with_the_line() {
        let err = parse_csv("a,b\n").expect_err("bad header");
        assert!(err.to_string().contains("unexpected header"), "{err}");
        let bad = CSV.replace("800", "fast");
        let err = parse_csv(&bad).expect_err("bad number");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_csv("").expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn labels() {
        assert_eq!(bytes(100.0), "100 B");
        assert_eq!(bytes(10240.0), "10 KiB");
        assert_eq!(bytes(1_048_576.0), "1 MiB");
        assert_eq!(count(0.0), "0");
        assert_eq!(count(1e6), "1M");
        assert_eq!(count(1e5), "100k");
    }

    #[test]
    fn missing_font_is_named() {
        let err = load_font(Path::new("/nonexistent/font.ttf")).expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/font.ttf"), "{err}");
    }
}
