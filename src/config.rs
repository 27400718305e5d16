//! The model configuration: cell kind, sizes, layers, direction, layout.
//!
//! Build one with [`RnnConfig::lstm`] and the builder methods, then [`RnnConfigBuilder::build`],
//! which validates every field and returns a typed [`Error`] for anything out of range.
//!
//! ```
//! use rnn_wgpu::RnnConfig;
//! let cfg = RnnConfig::lstm(32, 64).bias(true).build().unwrap();
//! assert_eq!(cfg.gate_count(), 4);
//! ```

use crate::error::{Error, Result};

/// The recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CellKind {
    /// PyTorch `nn.LSTM`: gates i, f, g, o; `c' = f*c + i*g`; `h' = o*tanh(c')`.
    Lstm,
}

impl CellKind {
    /// Gates per hidden unit: the `G` of `weight_ih_l0 [G*H, I]`.
    pub fn gate_count(self) -> usize {
        match self {
            CellKind::Lstm => 4,
        }
    }

    /// Lower-case name used in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Lstm => "lstm",
        }
    }
}

/// Which way(s) a layer runs over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Direction {
    /// t = 0 .. T-1.
    #[default]
    Forward,
    /// Both directions, outputs concatenated on the feature axis (PyTorch `bidirectional=True`).
    Bidirectional,
}

/// Memory layout of `x` and `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Layout {
    /// `[T, B, F]`, PyTorch's default.
    #[default]
    SeqMajor,
    /// `[B, T, F]`, PyTorch `batch_first=True`.
    BatchFirst,
}

/// A validated RNN configuration. Construct with [`RnnConfig::lstm`].
#[derive(Debug, Clone, PartialEq)]
pub struct RnnConfig {
    cell: CellKind,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bias: bool,
    direction: Direction,
    layout: Layout,
}

impl RnnConfig {
    /// Start an LSTM configuration (PyTorch `nn.LSTM(input_size, hidden_size)`).
    pub fn lstm(input_size: usize, hidden_size: usize) -> RnnConfigBuilder {
        RnnConfigBuilder {
            cfg: RnnConfig {
                cell: CellKind::Lstm,
                input_size,
                hidden_size,
                num_layers: 1,
                bias: true,
                direction: Direction::Forward,
                layout: Layout::SeqMajor,
            },
        }
    }

    /// The cell kind.
    pub fn cell(&self) -> CellKind {
        self.cell
    }
    /// `I`: features per input step.
    pub fn input_size(&self) -> usize {
        self.input_size
    }
    /// `H`: hidden units per layer and direction.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    /// Stacked layers.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }
    /// Whether `bias_ih` / `bias_hh` exist.
    pub fn bias(&self) -> bool {
        self.bias
    }
    /// Direction of every layer.
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// Layout of `x` and `y`.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// `G`: gates per hidden unit.
    pub fn gate_count(&self) -> usize {
        self.cell.gate_count()
    }
    /// Directions per layer (1 or 2).
    pub fn num_directions(&self) -> usize {
        match self.direction {
            Direction::Forward => 1,
            Direction::Bidirectional => 2,
        }
    }
    /// Input features of layer `layer` (layer 0 reads `x`, later layers read the layer below).
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.hidden_size * self.num_directions()
        }
    }
    /// Features of `y`: `H * directions`.
    pub fn output_size(&self) -> usize {
        self.hidden_size * self.num_directions()
    }

    /// Forward FLOPs for `T` steps at batch `B`, the convention of DeepBench and cuDNN:
    /// LSTM `8*B*H*(I+H)*T` (two GEMMs of 4H columns, 2 FLOPs per MAC). Element-wise work is
    /// not counted.
    pub fn forward_flops(&self, batch: usize, steps: usize) -> f64 {
        let g = self.gate_count() as f64;
        let (b, t, h, i) = (
            batch as f64,
            steps as f64,
            self.hidden_size as f64,
            self.input_size as f64,
        );
        2.0 * g * b * h * (i + h) * t
    }
}

/// Builder for [`RnnConfig`]; every setter is optional and `build` validates.
#[derive(Debug, Clone)]
pub struct RnnConfigBuilder {
    cfg: RnnConfig,
}

impl RnnConfigBuilder {
    /// Use `bias_ih` and `bias_hh` (default `true`, as PyTorch).
    pub fn bias(mut self, bias: bool) -> Self {
        self.cfg.bias = bias;
        self
    }
    /// Number of stacked layers (default 1).
    pub fn num_layers(mut self, layers: usize) -> Self {
        self.cfg.num_layers = layers;
        self
    }
    /// Direction (default forward).
    pub fn direction(mut self, direction: Direction) -> Self {
        self.cfg.direction = direction;
        self
    }
    /// Layout of `x` and `y` (default seq-major).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.cfg.layout = layout;
        self
    }

    /// Validate and return the configuration.
    ///
    /// Errors: [`Error::ZeroSize`] for a zero input/hidden size or layer count;
    /// [`Error::Unsupported`] for features this version does not implement yet
    /// (several layers, bidirectional, batch-first).
    pub fn build(self) -> Result<RnnConfig> {
        let c = self.cfg;
        if c.input_size == 0 {
            return Err(Error::ZeroSize("input_size"));
        }
        if c.hidden_size == 0 {
            return Err(Error::ZeroSize("hidden_size"));
        }
        if c.num_layers == 0 {
            return Err(Error::ZeroSize("num_layers"));
        }
        // Sizes whose packed weights could not even be indexed with 32-bit words are refused
        // here; the device limits are checked again against the real adapter in `Rnn::new`.
        let g = c.gate_count() as u64;
        let widest = c.input_size.max(c.hidden_size) as u64;
        if g * c.hidden_size as u64 * widest > u32::MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "weights of {}x{} elements overflow 32-bit indexing",
                g * c.hidden_size as u64,
                widest
            )));
        }
        if c.num_layers != 1 {
            return Err(Error::Unsupported(format!(
                "num_layers = {} (only 1 layer is implemented so far)",
                c.num_layers
            )));
        }
        if c.direction != Direction::Forward {
            return Err(Error::Unsupported(format!(
                "direction {:?} (only Forward is implemented so far)",
                c.direction
            )));
        }
        if c.layout != Layout::SeqMajor {
            return Err(Error::Unsupported(format!(
                "layout {:?} (only SeqMajor is implemented so far)",
                c.layout
            )));
        }
        Ok(c)
    }
}
