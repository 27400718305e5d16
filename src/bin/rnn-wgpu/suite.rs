//! Benchmark rows: the DeepBench list, the `lite` and `quick` subsets, custom `--rows`, the
//! `--cell` and `--mode` filters, and the `--layers` / `--bidirectional` topology.

/// DeepBench's RNN problem sizes; columns `suite,cell,hidden,batch,timesteps`.
const DEEPBENCH_CSV: &str = include_str!("../../../benches/deepbench_rnn.csv");

/// The smoke suite: small enough for a software adapter (llvmpipe runs each row in well under
/// a second or two, the whole suite in under a minute on 2 cores). One-layer rows cover B = 1,
/// a long T and a wide B for the LSTM, and one inference and one training row for the GRU and
/// the plain RNN; 2-layer bidirectional LSTM and GRU rows (inference and train) cover stacked
/// topologies; `stream` rows time a [`rnn_wgpu::Session`] one step at a time at B = 1.
/// Training rows (forward + backward, about 3x the work of a forward) are the smallest
/// problems. Keep in step with QUICK_ROWS in `scripts/bench_torch.py`.
const QUICK_ROWS: &[Row] = &[
    Row::plain(Cell::Lstm, Mode::Inference, 64, 16, 25),
    Row::plain(Cell::Lstm, Mode::Inference, 128, 4, 50),
    Row::plain(Cell::Lstm, Mode::Inference, 256, 1, 150),
    Row::plain(Cell::Lstm, Mode::Inference, 256, 16, 25),
    Row::plain(Cell::Lstm, Mode::Inference, 64, 16, 25).stacked(2, true),
    Row::plain(Cell::Lstm, Mode::Train, 64, 16, 25),
    Row::plain(Cell::Lstm, Mode::Train, 128, 4, 50),
    Row::plain(Cell::Lstm, Mode::Train, 64, 16, 25).stacked(2, true),
    Row::plain(Cell::Gru, Mode::Inference, 64, 16, 25),
    Row::plain(Cell::Gru, Mode::Inference, 64, 16, 25).stacked(2, true),
    Row::plain(Cell::Gru, Mode::Train, 64, 16, 25),
    Row::plain(Cell::Gru, Mode::Train, 64, 16, 25).stacked(2, true),
    Row::plain(Cell::Rnn, Mode::Inference, 128, 16, 25),
    Row::plain(Cell::Rnn, Mode::Train, 128, 16, 25),
    Row::plain(Cell::Lstm, Mode::Stream, 128, 1, 25).stacked(2, false),
    Row::plain(Cell::Lstm, Mode::Stream, 256, 1, 25),
    Row::plain(Cell::Gru, Mode::Stream, 128, 1, 25).stacked(2, false),
];

/// `lite`'s cap on a GRU or vanilla row: FLOPs of one pass (forward, 3x for train). It is
/// about the size of lite's largest LSTM inference row (H=1536, B=4, T=50: 7.5 GFLOP).
const LITE_MAX_FLOPS: f64 = 8e9;

/// What `lite` keeps of DeepBench, printed under the suite line and stored in the JSON.
pub const LITE_ABOUT: &str = "lite = DeepBench's LSTM inference rows and LSTM train rows with \
     H <= 1024, plus its GRU and vanilla rows of at most 8 GFLOP a pass (about its largest LSTM \
     inference row): gru inference H=512 T=1 (B=1,2,4) and H=1536 B=1 T=187, gru train H=512 \
     B=32 T=1, vanilla device H=32 T=672 and H=64 T=96. The other GRU rows (T up to 1500, H \
     up to 2816) and the vanilla train rows (H >= 1760, B up to 128) are far too slow for a \
     software adapter";

/// The recurrent cell of a row (ordered as in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    /// PyTorch `nn.LSTM`.
    Lstm,
    /// PyTorch `nn.GRU` (reset gate after the recurrent product).
    Gru,
    /// PyTorch `nn.RNN` with `relu` (DeepBench's "vanilla", cuDNN RNN_RELU).
    Rnn,
}

impl Cell {
    /// Every cell, in table order.
    pub const ALL: [Cell; 3] = [Cell::Lstm, Cell::Gru, Cell::Rnn];

    /// Gates per hidden unit, the `G` of the FLOP count `2*G*B*H*(I+H)*T`.
    pub fn gate_count(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::Rnn => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
            Cell::Rnn => "rnn",
        }
    }

    /// The cell of a `deepbench_rnn.csv` line (`vanilla` is the plain RNN).
    fn from_deepbench(name: &str) -> Option<Cell> {
        match name {
            "lstm" => Some(Cell::Lstm),
            "gru" => Some(Cell::Gru),
            "vanilla" => Some(Cell::Rnn),
            _ => None,
        }
    }
}

/// `--cell`: which cells to run (and which cells `--rows` creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CellFilter {
    /// LSTM rows only.
    Lstm,
    /// GRU rows only.
    Gru,
    /// Plain RNN (relu) rows only.
    Rnn,
    /// Every cell.
    All,
}

impl CellFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            CellFilter::Lstm => "lstm",
            CellFilter::Gru => "gru",
            CellFilter::Rnn => "rnn",
            CellFilter::All => "all",
        }
    }

    /// The cells this filter keeps, in table order.
    pub fn cells(self) -> &'static [Cell] {
        match self {
            CellFilter::Lstm => &[Cell::Lstm],
            CellFilter::Gru => &[Cell::Gru],
            CellFilter::Rnn => &[Cell::Rnn],
            CellFilter::All => &Cell::ALL,
        }
    }

    pub fn keeps(self, cell: Cell) -> bool {
        self.cells().contains(&cell)
    }
}

/// Which suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteName {
    /// A few small LSTM, GRU and RNN rows sized for a software adapter: one-layer rows,
    /// 2-layer bidirectional rows and B = 1 streaming rows.
    Quick,
    /// DeepBench's LSTM inference rows, GRU/vanilla inference rows with H <= 1024, and
    /// training rows with H <= 1024 and T <= 150.
    Lite,
    /// Every DeepBench row (LSTM, GRU and vanilla; inference, train and device).
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

/// What a row times: a forward pass, forward plus backward, or a streaming session stepped
/// one timestep at a time (ordered as in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Inference,
    Train,
    Stream,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inference => "inference",
            Mode::Train => "train",
            Mode::Stream => "stream",
        }
    }

    /// Forward passes' worth of FLOPs in one pass of this mode: a training step (forward +
    /// backward) counts as 3 forwards, since backward does the two products of each forward
    /// GEMM, for the data and for the weight gradients. A stream pass is `T` steps of one
    /// forward timestep each.
    pub fn forward_passes(self) -> f64 {
        match self {
            Mode::Inference | Mode::Stream => 1.0,
            Mode::Train => 3.0,
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
    /// Streaming sessions (one `step` per timestep, B as given; the quick suite's are B = 1).
    Stream,
    /// Inference and train.
    Both,
    /// Inference, train and stream.
    All,
}

impl ModeFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeFilter::Inference => "inference",
            ModeFilter::Train => "train",
            ModeFilter::Stream => "stream",
            ModeFilter::Both => "both",
            ModeFilter::All => "all",
        }
    }

    /// The modes this filter keeps, in table order.
    pub fn modes(self) -> &'static [Mode] {
        match self {
            ModeFilter::Inference => &[Mode::Inference],
            ModeFilter::Train => &[Mode::Train],
            ModeFilter::Stream => &[Mode::Stream],
            ModeFilter::Both => &[Mode::Inference, Mode::Train],
            ModeFilter::All => &[Mode::Inference, Mode::Train, Mode::Stream],
        }
    }

    pub fn keeps(self, mode: Mode) -> bool {
        self.modes().contains(&mode)
    }
}

/// One benchmark problem. The input size is always `I = H`, as in DeepBench; a stacked
/// model's layer `l > 0` reads the `D*H` outputs of the layer below (`D` = 2 when
/// bidirectional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cell: Cell,
    /// Stacked layers (PyTorch `num_layers`).
    pub layers: usize,
    /// Both directions in every layer (PyTorch `bidirectional=True`).
    pub bidirectional: bool,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    pub mode: Mode,
}

impl Row {
    /// One layer, forward direction.
    pub const fn plain(cell: Cell, mode: Mode, hidden: usize, batch: usize, steps: usize) -> Row {
        Row {
            cell,
            layers: 1,
            bidirectional: false,
            hidden,
            batch,
            steps,
            mode,
        }
    }

    /// The same problem with `layers` layers, bidirectional or not.
    pub const fn stacked(mut self, layers: usize, bidirectional: bool) -> Row {
        self.layers = layers;
        self.bidirectional = bidirectional;
        self
    }

    /// Directions per layer, `D`.
    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// FLOPs of one pass with `I = H`, as `RnnConfig::forward_flops` of the row's model:
    /// forward `sum_l D*2*G*B*H*(I_l+H)*T` with `I_0 = H` and `I_l = D*H` above it (one layer:
    /// `2*G*B*H*(I+H)*T`), 3x that for a training step; a stream row's `T` steps count as
    /// one forward over `T`.
    pub fn pass_flops(&self) -> f64 {
        let (g, h, b, t) = (
            self.cell.gate_count() as f64,
            self.hidden as f64,
            self.batch as f64,
            self.steps as f64,
        );
        let d = self.directions() as f64;
        let forward: f64 = (0..self.layers)
            .map(|l| {
                let input = if l == 0 { h } else { d * h };
                d * 2.0 * g * b * h * (input + h) * t
            })
            .sum();
        self.mode.forward_passes() * forward
    }

    /// Short topology label for progress lines and the chart: `L=1`, `L=2 bi`, ...
    pub fn topology(&self) -> String {
        topology(self.layers, self.bidirectional)
    }
}

/// `L=<layers>`, plus ` bi` when bidirectional.
pub fn topology(layers: usize, bidirectional: bool) -> String {
    if bidirectional {
        format!("L={layers} bi")
    } else {
        format!("L={layers}")
    }
}

/// A suite's rows plus a one-line account of what it left out.
#[derive(Debug)]
pub struct Suite {
    pub name: String,
    /// What the suite selects, when that needs saying (`lite`).
    pub about: Option<&'static str>,
    pub rows: Vec<Row>,
    /// e.g. "2 duplicate row(s) timed once; 4 row(s) left out by --cell gru".
    pub left_out: Option<String>,
}

impl Suite {
    /// Append `note` to [`Suite::left_out`].
    fn note(&mut self, note: String) {
        self.left_out = Some(match self.left_out.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }
}

/// Every line of `deepbench_rnn.csv`, in order, duplicates included.
fn parse_deepbench() -> Vec<Row> {
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
            let cell = Cell::from_deepbench(f[1])
                .unwrap_or_else(|| panic!("deepbench_rnn.csv: unknown cell in {line:?}"));
            // DeepBench's `device` rows are inference problems sized for phones.
            let mode = if f[0] == "train" {
                Mode::Train
            } else {
                Mode::Inference
            };
            Row::plain(cell, mode, num(f[2]), num(f[3]), num(f[4]))
        })
        .collect()
}

/// Whether `lite` keeps a DeepBench row (see [`LITE_ABOUT`]).
fn in_lite(r: &Row) -> bool {
    match r.cell {
        Cell::Lstm => r.mode == Mode::Inference || r.hidden <= 1024,
        Cell::Gru | Cell::Rnn => r.pass_flops() <= LITE_MAX_FLOPS,
    }
}

/// The rows of a named suite: LSTM rows first, then GRU, then RNN; for each cell its
/// inference rows, then its train rows, each in the order of their source.
pub fn suite(name: SuiteName) -> Suite {
    let mut suite = Suite {
        name: name.as_str().into(),
        about: (name == SuiteName::Lite).then_some(LITE_ABOUT),
        rows: Vec::new(),
        left_out: None,
    };
    if name == SuiteName::Quick {
        suite.rows = QUICK_ROWS.to_vec();
        return suite;
    }
    let mut beyond_lite = 0;
    let mut duplicates = 0;
    for r in parse_deepbench() {
        if name == SuiteName::Lite && !in_lite(&r) {
            beyond_lite += 1;
        } else if suite.rows.contains(&r) {
            // DeepBench's `device` LSTM row repeats an inference row; time it once.
            duplicates += 1;
        } else {
            suite.rows.push(r);
        }
    }
    // A stable sort: each cell's inference rows, then its train rows, each in CSV order.
    suite.rows.sort_by_key(|r| (r.cell, r.mode));
    if beyond_lite > 0 {
        suite.note(format!(
            "{beyond_lite} DeepBench row(s) beyond lite's sizes left out"
        ));
    }
    if duplicates > 0 {
        suite.note(format!("{duplicates} duplicate row(s) timed once"));
    }
    suite
}

/// Keep only the rows `filter` selects, noting how many were dropped.
pub fn filter_modes(mut suite: Suite, filter: ModeFilter) -> Suite {
    let before = suite.rows.len();
    suite.rows.retain(|r| filter.keeps(r.mode));
    let dropped = before - suite.rows.len();
    if dropped > 0 {
        suite.note(format!(
            "{dropped} row(s) left out by --mode {}",
            filter.as_str()
        ));
    }
    suite
}

/// Keep only the cells `filter` selects, noting how many rows were dropped.
pub fn filter_cells(mut suite: Suite, filter: CellFilter) -> Suite {
    let before = suite.rows.len();
    suite.rows.retain(|r| filter.keeps(r.cell));
    let dropped = before - suite.rows.len();
    if dropped > 0 {
        suite.note(format!(
            "{dropped} row(s) left out by --cell {}",
            filter.as_str()
        ));
    }
    suite
}

/// `--layers` / `--bidirectional`: give every row `layers` layers (when given) and both
/// directions (when `bidirectional`); rows that then repeat an earlier row are timed once.
/// A stream row made bidirectional stays in the suite and is reported as skipped (a session
/// runs the forward direction only).
pub fn apply_topology(mut suite: Suite, layers: Option<usize>, bidirectional: bool) -> Suite {
    if layers.is_none() && !bidirectional {
        return suite;
    }
    let mut rows: Vec<Row> = Vec::with_capacity(suite.rows.len());
    let mut duplicates = 0;
    for mut r in std::mem::take(&mut suite.rows) {
        if let Some(l) = layers {
            r.layers = l;
        }
        r.bidirectional |= bidirectional;
        if rows.contains(&r) {
            duplicates += 1;
        } else {
            rows.push(r);
        }
    }
    suite.rows = rows;
    if duplicates > 0 {
        let mut flags = Vec::new();
        if let Some(l) = layers {
            flags.push(format!("--layers {l}"));
        }
        if bidirectional {
            flags.push("--bidirectional".to_string());
        }
        suite.note(format!(
            "{duplicates} row(s) identical under {} timed once",
            flags.join(" ")
        ));
    }
    suite
}

/// Parse `--rows H,B,T[;H,B,T...]`: for each problem, one row per cell in `cells` and per
/// mode in `modes` (cell-major, inference first).
pub fn parse_rows(spec: &str, cells: &[Cell], modes: &[Mode]) -> Result<Suite, String> {
    let mut problems = Vec::new();
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
        problems.push((hidden, batch, steps));
    }
    if problems.is_empty() {
        return Err("--rows: no rows given".into());
    }
    let mut rows = Vec::new();
    for &cell in cells {
        for &(hidden, batch, steps) in &problems {
            rows.extend(
                modes
                    .iter()
                    .map(|&mode| Row::plain(cell, mode, hidden, batch, steps)),
            );
        }
    }
    Ok(Suite {
        name: "custom".into(),
        about: None,
        rows,
        left_out: None,
    })
}

#[cfg(test)]
#[path = "suite_tests.rs"]
mod tests;
