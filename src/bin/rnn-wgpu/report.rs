//! Results: the printed table, the JSON file, the SVG chart, and today's date.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Printed under the table and stored in the JSON: how our rows differ from DeepBench's.
pub const I_EQUALS_H_NOTE: &str = "whole layer timed with I = H, input projection included; DeepBench times only the recurrent part";

/// Printed under the table and stored in the JSON: what `max err` means per mode.
pub const MAX_ERR_NOTE: &str = "max err: inference and stream rows: max |gpu - ref| over y, h_n, c_n (c_n: lstm only; every layer-direction's h_n and c_n; a stream row's y is its stepped y_t and its h_n, c_n the session's state after T steps) (absolute); train rows: max over dx, dh0, dc0 (lstm only) and every layer-direction's dW_ih, dW_hh, db_ih, db_hh of max |gpu - ref| / max |ref| (relative to each tensor's scale), on a B' = min(B, --check-rows) problem; reference: the f64 CPU stack (cpu::stack_forward, cpu::stack_backward) of the same topology";

/// Printed under the table and stored in the JSON: the FLOP count of each cell.
pub const FLOPS_NOTE: &str = "FLOPs of a forward pass, summed over layers l and directions D: sum_l D*2*G*B*H*(I_l+H)*T with I_0 = H, I_l = D*H above (DeepBench/cuDNN, element-wise work not counted); one layer: lstm (G=4) 8*B*H*(I+H)*T, gru (G=3) 6*B*H*(I+H)*T, rnn (G=1) 2*B*H*(I+H)*T; a train row (forward + backward) counts 3x its forward, a stream row its T steps as one forward";

/// The adapter, as strings (wgpu's types are only serialisable behind a feature).
#[derive(Debug, Serialize)]
pub struct AdapterJson {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterJson {
    pub fn new(info: &wgpu::AdapterInfo) -> AdapterJson {
        AdapterJson {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        }
    }
}

/// Outcome of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Error,
}

/// One row of the table and of the JSON file.
#[derive(Debug, Serialize)]
pub struct RowResult {
    /// `lstm`, `gru` or `rnn` (PyTorch's `nn.RNN` with relu; DeepBench's "vanilla", cuDNN RNN_RELU).
    pub cell: &'static str,
    /// Stacked layers.
    pub layers: usize,
    /// Both directions in every layer.
    pub bidirectional: bool,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    pub input_size: usize,
    pub mode: &'static str,
    pub status: Status,
    /// Why a row was skipped or failed.
    pub note: Option<String>,
    /// FLOPs of one pass (forward: `2*G*B*H*(I+H)*T`, i.e. LSTM `8*...`, GRU `6*...`, RNN
    /// `2*...`; a training step, forward + backward: 3x that).
    pub flops: f64,
    /// Median wall time of one pass: `forward` + `wait`, `forward_train` + `backward` +
    /// `wait`, or (stream rows) `T` session steps, each `step` + download of `y_t`.
    pub ms: Option<f64>,
    pub samples_ms: Vec<f64>,
    /// Stream rows: latency of one step, `step` + download of `y_t`, in µs: the median over
    /// reps of the mean step time (`ms * 1000 / T`). `null` for other rows.
    pub us_per_step: Option<f64>,
    pub gflops: Option<f64>,
    pub percent_peak: Option<f64>,
    /// Queue submissions of one pass (a forward, or a training step); stream rows: of one
    /// `step` (the most any step made; the download of `y_t` adds one more, not counted).
    pub submissions: Option<u64>,
    /// Batch rows the CPU reference ran on (train rows: `B'` of the reduced problem).
    pub check_rows: Option<usize>,
    /// The CPU reference's time, extrapolated linearly to all B rows.
    pub cpu_ms: Option<f64>,
    /// `cpu_ms / ms`.
    pub vs_cpu: Option<f64>,
    /// The largest error (`null` in JSON if NaN), measured as `err_kind` says: `abs` is
    /// max |gpu - ref| over `y`, `h_n`, `c_n` of the checked rows; `scaled` is the max over
    /// gradient tensors of max |gpu - ref| / max |ref|.
    pub max_err: Option<f64>,
    /// `abs` or `scaled`.
    pub err_kind: Option<&'static str>,
    /// The tensor with the largest error (`y`, `h_n`, `dW_hh_l1_reverse`, ...).
    pub max_err_tensor: Option<String>,
    /// The tolerance this row is held to (`--tol` or `--train-tol`).
    pub tol: f64,
    pub within_tol: Option<bool>,
}

impl RowResult {
    /// Whether this row should make the run exit non-zero.
    pub fn failed(&self) -> bool {
        self.status == Status::Error || self.within_tol == Some(false)
    }
}

/// The whole run, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub suite: String,
    /// What the suite selects, when that needs saying (`lite`).
    pub suite_about: Option<&'static str>,
    pub date: String,
    pub adapter: AdapterJson,
    pub reps: usize,
    pub warmup: usize,
    /// `--tol`, for inference rows.
    pub tol: f64,
    /// `--train-tol`, for train rows.
    pub train_tol: f64,
    /// `--mode`.
    pub mode: &'static str,
    /// `--cell`.
    pub cell: &'static str,
    /// `--layers`, when given (`null`: each row's own).
    pub layers: Option<usize>,
    /// `--bidirectional`: every row made bidirectional (`false`: each row's own).
    pub bidirectional: bool,
    pub peak_gflops: Option<f64>,
    /// `--unchecked-shaders`: kernels compiled without wgpu's runtime checks.
    pub unchecked_shaders: bool,
    /// `--f16-weights`: weight matrices stored as f16 (inference and stream rows).
    pub f16_weights: bool,
    /// The smallest subgroup size when the step kernels may use subgroups (`null`: off).
    pub subgroups: Option<u32>,
    pub note: &'static str,
    /// The FLOP count of each cell.
    pub flops_note: &'static str,
    /// What `max err` means per mode.
    pub max_err_note: &'static str,
    pub left_out: Option<String>,
    /// False while the run is still going (the file is rewritten after every row).
    pub complete: bool,
    pub rows: Vec<RowResult>,
}

/// Header of the printed table.
pub fn table_header() -> String {
    let head = format!(
        "{:<5} {:>2} {:<3} {:>5} {:>4} {:>5} {:<9} {:>10} {:>8} {:>8} {:>6} {:>8} {:>8} {:>4}",
        "cell",
        "L",
        "dir",
        "H",
        "B",
        "T",
        "mode",
        "ms",
        "us/step",
        "GFLOP/s",
        "%peak",
        "vs CPU",
        "max err",
        "subs"
    );
    let rule = "-".repeat(head.len());
    format!("{head}\n{rule}")
}

/// One printed line for `r`.
pub fn table_line(r: &RowResult) -> String {
    let lead = format!(
        "{:<5} {:>2} {:<3} {:>5} {:>4} {:>5} {:<9}",
        r.cell,
        r.layers,
        if r.bidirectional { "bi" } else { "fwd" },
        r.hidden,
        r.batch,
        r.steps,
        r.mode
    );
    if r.status != Status::Ok {
        let what = if r.status == Status::Skipped {
            "skipped"
        } else {
            "ERROR"
        };
        return format!("{lead} {what}: {}", r.note.as_deref().unwrap_or(""));
    }
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
    let mut line = format!(
        "{lead} {:>10} {:>8} {:>8} {:>6} {:>8} {:>8} {:>4}",
        opt(r.ms, &|v| format!("{v:.3}")),
        r.us_per_step.map_or(String::new(), |v| format!("{v:.1}")),
        opt(r.gflops, &|v| format!("{v:.2}")),
        opt(r.percent_peak, &|v| format!("{v:.1}")),
        opt(r.vs_cpu, &|v| if v < 1.0 {
            format!("{v:.2}x")
        } else {
            format!("{v:.1}x")
        }),
        match (r.max_err, r.check_rows) {
            (Some(e), _) => format!("{e:.1e}"),
            (None, Some(_)) => "NaN".to_string(),
            (None, None) => "-".to_string(),
        },
        r.submissions.map_or("-".to_string(), |s| s.to_string()),
    );
    if r.within_tol == Some(false) {
        let flag = if r.mode == "train" {
            "--train-tol"
        } else {
            "--tol"
        };
        let _ = write!(
            line,
            "  FAIL: above {flag} {:e} (worst: {})",
            r.tol,
            r.max_err_tensor.as_deref().unwrap_or("-")
        );
    }
    line
}

/// Write `report` as pretty JSON, creating parent directories.
pub fn write_json(path: &Path, report: &Report) -> std::io::Result<()> {
    create_parent(path)?;
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Write a horizontal bar chart of GFLOP/s per row, creating parent directories.
pub fn write_svg(path: &Path, report: &Report) -> std::io::Result<()> {
    create_parent(path)?;
    std::fs::write(path, svg(report))
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Bar colours: inference, train, stream, failed parity.
const INFERENCE_FILL: &str = "#2e86c1";
const TRAIN_FILL: &str = "#d68910";
const STREAM_FILL: &str = "#229954";
const FAIL_FILL: &str = "#c0392b";

/// Hand-written SVG: one labelled bar per row (inference blue, train orange, stream green,
/// failed parity red; stream rows also show µs per step), skipped and failed rows named in
/// grey.
fn svg(report: &Report) -> String {
    const LABEL_W: f64 = 300.0;
    const BAR_W: f64 = 520.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 56.0;
    let width = LABEL_W + BAR_W + 190.0;
    let height = TOP + ROW_H * report.rows.len() as f64 + 62.0;
    let best = report
        .rows
        .iter()
        .filter_map(|r| r.gflops)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let a = &report.adapter;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">rnn-wgpu {} suite: GFLOP/s{}</text>"#,
        xml(&report.suite),
        if report.complete {
            ""
        } else {
            " (incomplete run)"
        }
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="38">{} ({}, {}), {}</text>"#,
        xml(&a.name),
        xml(&a.backend),
        xml(&a.device_type),
        xml(&report.date)
    );
    for (k, r) in report.rows.iter().enumerate() {
        let y = TOP + ROW_H * k as f64;
        let label = format!(
            "{} {} H={} B={} T={} {}",
            r.cell,
            crate::suite::topology(r.layers, r.bidirectional),
            r.hidden,
            r.batch,
            r.steps,
            r.mode
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + 14.0,
            xml(&label)
        );
        match (r.status, r.gflops) {
            (Status::Ok, Some(g)) => {
                let w = (BAR_W * g / best).max(1.0);
                let fill = if r.within_tol == Some(false) {
                    FAIL_FILL
                } else if r.mode == "train" {
                    TRAIN_FILL
                } else if r.mode == "stream" {
                    STREAM_FILL
                } else {
                    INFERENCE_FILL
                };
                let value = match r.us_per_step {
                    Some(us) => format!("{g:.2} ({us:.0} us/step)"),
                    None => format!("{g:.2}"),
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{LABEL_W}" y="{}" width="{w:.1}" height="{}" fill="{fill}"/>"#,
                    y + 3.0,
                    ROW_H - 6.0
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    LABEL_W + w + 5.0,
                    y + 14.0,
                    xml(&value)
                );
            }
            _ => {
                let why = r.note.as_deref().unwrap_or("no result");
                let _ = writeln!(
                    s,
                    r##"<text x="{LABEL_W}" y="{}" fill="#888">{}</text>"##,
                    y + 14.0,
                    xml(&format!(
                        "{}: {why}",
                        if r.status == Status::Error {
                            "error"
                        } else {
                            "skipped"
                        }
                    ))
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#555"><tspan fill="{INFERENCE_FILL}">&#9632;</tspan> inference: forward   <tspan fill="{TRAIN_FILL}">&#9632;</tspan> train: forward + backward, 3x forward FLOPs   <tspan fill="{STREAM_FILL}">&#9632;</tspan> stream: session steps, B as given   <tspan fill="{FAIL_FILL}">&#9632;</tspan> above tolerance</text>"##,
        height - 42.0,
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#555">forward FLOPs sum over layers and directions of 2*G*B*H*(I_l+H)*T (one layer: lstm 8*B*H*(I+H)*T, gru 6*..., rnn 2*...); L=2 bi: 2 layers, bidirectional</text>"##,
        height - 26.0,
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#555">{}</text>"##,
        height - 10.0,
        xml(report.note)
    );
    s.push_str("</svg>\n");
    s
}

/// Escape text for SVG content and attributes.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian `(year, month, day)` of `days` since 1970-01-01
/// (Howard Hinnant's `civil_from_days`: eras of 400 years, years starting in March so the
/// leap day falls last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    fn row(mode: &'static str, us_per_step: Option<f64>) -> RowResult {
        RowResult {
            cell: "lstm",
            layers: 2,
            bidirectional: mode != "stream",
            hidden: 64,
            batch: 1,
            steps: 25,
            input_size: 64,
            mode,
            status: Status::Ok,
            note: None,
            flops: 1e6,
            ms: Some(2.5),
            samples_ms: vec![2.5],
            us_per_step,
            gflops: Some(0.4),
            percent_peak: None,
            submissions: Some(1),
            check_rows: Some(1),
            cpu_ms: Some(1.0),
            vs_cpu: Some(0.4),
            max_err: Some(1e-7),
            err_kind: Some("abs"),
            max_err_tensor: Some("y".into()),
            tol: 1e-4,
            within_tol: Some(true),
        }
    }

    #[test]
    fn table_columns_line_up() {
        let header = table_header();
        let head = header.lines().next().unwrap();
        let stream = table_line(&row("stream", Some(100.0)));
        let inference = table_line(&row("inference", None));
        assert_eq!(stream.len(), head.len());
        assert_eq!(inference.len(), head.len());
        // us/step is filled for stream rows only; the topology reads `2 bi` / `2 fwd`.
        let col = head.find("us/step").unwrap();
        assert_eq!(stream[col..col + 7].trim(), "100.0");
        assert_eq!(inference[col..col + 7].trim(), "");
        assert!(inference.starts_with("lstm   2 bi "));
        assert!(stream.starts_with("lstm   2 fwd"));
    }

    #[test]
    fn svg_shows_topology_and_step_latency() {
        let report = Report {
            tool: "t".into(),
            suite: "quick".into(),
            suite_about: None,
            date: "2024-01-01".into(),
            adapter: AdapterJson {
                name: "a".into(),
                backend: "b".into(),
                device_type: "c".into(),
                driver: String::new(),
                driver_info: String::new(),
            },
            reps: 1,
            warmup: 0,
            tol: 1e-4,
            train_tol: 1e-3,
            mode: "all",
            cell: "all",
            layers: None,
            bidirectional: false,
            peak_gflops: None,
            unchecked_shaders: false,
            f16_weights: false,
            subgroups: None,
            note: I_EQUALS_H_NOTE,
            flops_note: FLOPS_NOTE,
            max_err_note: MAX_ERR_NOTE,
            left_out: None,
            complete: true,
            rows: vec![row("inference", None), row("stream", Some(100.0))],
        };
        let s = svg(&report);
        assert!(s.contains("lstm L=2 bi H=64 B=1 T=25 inference"));
        assert!(s.contains("0.40 (100 us/step)"));
        assert!(s.contains(STREAM_FILL));
        assert!(s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn xml_escapes() {
        assert_eq!(xml("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
