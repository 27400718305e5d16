//! Benchmark rows: the DeepBench list, the `lite` and `quick` subsets, custom `--rows`, and
//! the `--mode` filter.

/// DeepBench's RNN problem sizes; columns `suite,cell,hidden,batch,timesteps`.
const DEEPBENCH_CSV: &str = include_str!("../../../benches/deepbench_rnn.csv");

/// Cells the harness can run today.
const IMPLEMENTED_CELLS: &[&str] = &["lstm"];

/// `(H, B, T)` of the smoke suite: small enough for a software adapter (llvmpipe runs each
/// in well under a second), and covering B = 1, a long T and a wide B.
const QUICK_ROWS: &[(usize, usize, usize)] =
    &[(64, 16, 25), (128, 4, 50), (256, 1, 150), (256, 16, 25)];

/// `(H, B, T)` of the smoke suite's training rows (forward + backward, about 3x the work of a
/// forward): the two smallest inference rows, so the whole suite stays near half a minute on
/// a 2-core llvmpipe.
const QUICK_TRAIN_ROWS: &[(usize, usize, usize)] = &[(64, 16, 25), (128, 4, 50)];

/// Which suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteName {
    /// A few small LSTM rows sized for a software adapter.
    Quick,
    /// DeepBench's LSTM inference rows plus its LSTM training rows with H <= 1024.
    Lite,
    /// Every DeepBench LSTM row (inference, train and device).
    Deepbench,
}

impl SuiteName {
    pub fn as_str(self) -> &'static str {
        match self {
            SuiteName::Quick => "quick",
            SuiteName::Lite => "lite",
            SuiteName::Deepbench => "deepbench",
        }
    }
}

/// What a row times: a forward pass, or forward plus backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inference,
    Train,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inference => "inference",
            Mode::Train => "train",
        }
    }
}

/// `--mode`: which rows of a suite to run (and which modes `--rows` creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeFilter {
    /// Forward passes only.
    Inference,
    /// Forward + backward only.
    Train,
    /// Both.
    Both,
}

impl ModeFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeFilter::Inference => "inference",
            ModeFilter::Train => "train",
            ModeFilter::Both => "both",
        }
    }

    /// The modes this filter keeps, inference first.
    pub fn modes(self) -> &'static [Mode] {
        match self {
            ModeFilter::Inference => &[Mode::Inference],
            ModeFilter::Train => &[Mode::Train],
            ModeFilter::Both => &[Mode::Inference, Mode::Train],
        }
    }

    pub fn keeps(self, mode: Mode) -> bool {
        self.modes().contains(&mode)
    }
}

/// One benchmark problem. The input size is always `I = H`, as in DeepBench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cell: String,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    pub mode: Mode,
}

/// A suite's rows plus a one-line account of what it left out.
#[derive(Debug)]
pub struct Suite {
    pub name: String,
    pub rows: Vec<Row>,
    /// e.g. "skipped 87 gru/vanilla rows (cells not implemented yet)".
    pub left_out: Option<String>,
}

/// A row of `deepbench_rnn.csv`.
struct CsvRow {
    suite: String,
    row: Row,
}

fn parse_deepbench() -> Vec<CsvRow> {
    DEEPBENCH_CSV
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("suite,"))
        .map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            // The CSV is embedded at compile time, so a malformed line is a bug in this crate.
            assert_eq!(f.len(), 5, "deepbench_rnn.csv: bad line {line:?}");
            let num = |s: &str| -> usize {
                s.parse()
                    .unwrap_or_else(|_| panic!("deepbench_rnn.csv: bad number in {line:?}"))
            };
            CsvRow {
                suite: f[0].to_string(),
                row: Row {
                    cell: f[1].to_string(),
                    hidden: num(f[2]),
                    batch: num(f[3]),
                    steps: num(f[4]),
                    // DeepBench's `device` rows are inference problems sized for phones.
                    mode: if f[0] == "train" {
                        Mode::Train
                    } else {
                        Mode::Inference
                    },
                },
            }
        })
        .collect()
}

/// The rows of a named suite.
pub fn suite(name: SuiteName) -> Suite {
    if name == SuiteName::Quick {
        let lstm = |mode: Mode| {
            move |&(hidden, batch, steps): &(usize, usize, usize)| Row {
                cell: "lstm".into(),
                hidden,
                batch,
                steps,
                mode,
            }
        };
        let rows = QUICK_ROWS
            .iter()
            .map(lstm(Mode::Inference))
            .chain(QUICK_TRAIN_ROWS.iter().map(lstm(Mode::Train)))
            .collect();
        return Suite {
            name: name.as_str().into(),
            rows,
            left_out: None,
        };
    }
    let wanted = |r: &CsvRow| match name {
        SuiteName::Deepbench => true,
        SuiteName::Lite => r.suite == "inference" || (r.suite == "train" && r.row.hidden <= 1024),
        SuiteName::Quick => unreachable!("handled above"),
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut duplicates = 0;
    for r in parse_deepbench().into_iter().filter(wanted) {
        if !IMPLEMENTED_CELLS.contains(&r.row.cell.as_str()) {
            skipped.push(r.row.cell);
        } else if rows.contains(&r.row) {
            // DeepBench's `device` LSTM row repeats an inference row; time it once.
            duplicates += 1;
        } else {
            rows.push(r.row);
        }
    }
    let mut notes = Vec::new();
    if !skipped.is_empty() {
        let mut cells = skipped.clone();
        cells.sort();
        cells.dedup();
        notes.push(format!(
            "skipped {} {} rows (cells not implemented yet)",
            skipped.len(),
            cells.join("/")
        ));
    }
    if duplicates > 0 {
        notes.push(format!("{duplicates} duplicate row(s) timed once"));
    }
    Suite {
        name: name.as_str().into(),
        rows,
        left_out: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// Keep only the rows `filter` selects, noting how many were dropped.
pub fn filter_modes(mut suite: Suite, filter: ModeFilter) -> Suite {
    let before = suite.rows.len();
    suite.rows.retain(|r| filter.keeps(r.mode));
    let dropped = before - suite.rows.len();
    if dropped > 0 {
        let note = format!("{dropped} row(s) left out by --mode {}", filter.as_str());
        suite.left_out = Some(match suite.left_out.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }
    suite
}

/// Parse `--rows H,B,T[;H,B,T...]` into LSTM rows, one per mode in `modes` for each problem.
pub fn parse_rows(spec: &str, modes: &[Mode]) -> Result<Suite, String> {
    let mut rows = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let nums: Vec<usize> = part
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--rows: {part:?}: {e}"))?;
        let &[hidden, batch, steps] = nums.as_slice() else {
            return Err(format!("--rows: {part:?} is not H,B,T"));
        };
        if hidden == 0 || batch == 0 || steps == 0 {
            return Err(format!("--rows: {part:?} has a zero size"));
        }
        rows.extend(modes.iter().map(|&mode| Row {
            cell: "lstm".into(),
            hidden,
            batch,
            steps,
            mode,
        }));
    }
    if rows.is_empty() {
        return Err("--rows: no rows given".into());
    }
    Ok(Suite {
        name: "custom".into(),
        rows,
        left_out: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepbench_has_every_lstm_row_once() {
        let s = suite(SuiteName::Deepbench);
        assert!(s.rows.iter().all(|r| r.cell == "lstm"));
        let inference = s.rows.iter().filter(|r| r.mode == Mode::Inference).count();
        let train = s.rows.iter().filter(|r| r.mode == Mode::Train).count();
        assert_eq!((inference, train), (15, 22));
    }

    #[test]
    fn lite_keeps_train_rows_up_to_1024() {
        let s = suite(SuiteName::Lite);
        assert!(
            s.rows
                .iter()
                .all(|r| r.mode == Mode::Inference || r.hidden <= 1024)
        );
        assert!(s.rows.iter().any(|r| r.mode == Mode::Train));
    }

    #[test]
    fn lite_train_rows_are_deepbench_train_rows_up_to_1024() {
        let lite = suite(SuiteName::Lite);
        let deep = suite(SuiteName::Deepbench);
        let train = |s: &Suite, max_h: usize| -> Vec<Row> {
            s.rows
                .iter()
                .filter(|r| r.mode == Mode::Train && r.hidden <= max_h)
                .cloned()
                .collect()
        };
        assert_eq!(train(&lite, usize::MAX), train(&deep, 1024));
        assert_eq!(train(&lite, usize::MAX).len(), 11);
    }

    #[test]
    fn quick_has_small_train_rows() {
        let s = suite(SuiteName::Quick);
        let train: Vec<_> = s.rows.iter().filter(|r| r.mode == Mode::Train).collect();
        assert_eq!(train.len(), QUICK_TRAIN_ROWS.len());
        assert!(train.iter().all(|r| r.hidden <= 128));
    }

    #[test]
    fn mode_filter_keeps_one_mode() {
        let s = filter_modes(suite(SuiteName::Quick), ModeFilter::Train);
        assert!(s.rows.iter().all(|r| r.mode == Mode::Train));
        assert_eq!(s.rows.len(), QUICK_TRAIN_ROWS.len());
        assert!(s.left_out.unwrap().contains("--mode train"));
        let s = filter_modes(suite(SuiteName::Quick), ModeFilter::Both);
        assert_eq!(s.rows.len(), QUICK_ROWS.len() + QUICK_TRAIN_ROWS.len());
        assert!(s.left_out.is_none());
    }

    #[test]
    fn custom_rows_parse() {
        let s = parse_rows("64,2,3; 8,1,1", ModeFilter::Inference.modes()).unwrap();
        assert_eq!(s.rows.len(), 2);
        assert_eq!(
            (s.rows[0].hidden, s.rows[0].batch, s.rows[0].steps),
            (64, 2, 3)
        );
        let both = parse_rows("64,2,3", ModeFilter::Both.modes()).unwrap();
        let modes: Vec<Mode> = both.rows.iter().map(|r| r.mode).collect();
        assert_eq!(modes, [Mode::Inference, Mode::Train]);
        assert!(parse_rows("64,2", &[Mode::Inference]).is_err());
        assert!(parse_rows("64,0,3", &[Mode::Inference]).is_err());
    }
}
