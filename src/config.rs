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

/// The most stacked layers a configuration may have ([`RnnConfigBuilder::num_layers`]).
///
/// Each layer-direction is a separate recorded schedule (its own packed weights, one step
/// dispatch per timestep, its own slice of the state and of a training tape), so the work
/// recorded and the memory allocated grow linearly with the layer count. The bound is far above
/// the depths recurrent models are built with, and it turns an absurd value (a size passed
/// where a layer count was meant, say) into an [`Error::InvalidConfig`] at `build` instead of
/// a huge allocation later.
pub const MAX_LAYERS: usize = 64;

/// The recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CellKind {
    /// PyTorch `nn.LSTM`: gates i, f, g, o; `c' = f*c + i*g`; `h' = o*tanh(c')`.
    Lstm,
    /// PyTorch `nn.GRU`: gates r, z, n; `h' = (1-z)*n + z*h`. See [`GruReset`] for where the
    /// reset gate applies.
    Gru,
    /// PyTorch `nn.RNN`: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`, act per [`Nonlinearity`].
    Rnn,
}

impl CellKind {
    /// Gates per hidden unit: the `G` of `weight_ih_l0 [G*H, I]`.
    pub fn gate_count(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::Rnn => 1,
        }
    }

    /// Lower-case name used in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
            CellKind::Rnn => "rnn",
        }
    }
}

/// Where a GRU applies its reset gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GruReset {
    /// PyTorch and cuDNN ("reset after", ONNX `linear_before_reset = 1`):
    /// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`.
    #[default]
    After,
    /// ONNX default and Keras `reset_after = False` (`linear_before_reset = 0`):
    /// `n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)`.
    Before,
}

/// The plain RNN's nonlinearity (PyTorch `nn.RNN(nonlinearity=...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `max(0, x)`.
    Relu,
}

/// ONNX's activation functions (the `activations` attribute of `LSTM`/`GRU`/`RNN`).
/// `alpha`/`beta` follow the ONNX definitions.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, x)`.
    Relu,
    /// `clamp(alpha*x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x` for `x >= 0`, else `alpha*x`.
    LeakyRelu {
        /// Negative slope.
        alpha: f32,
    },
    /// `x` for `x > alpha`, else 0.
    ThresholdedRelu {
        /// Threshold.
        alpha: f32,
    },
    /// `alpha * tanh(beta * x)`.
    ScaledTanh {
        /// Output scale.
        alpha: f32,
        /// Input scale.
        beta: f32,
    },
    /// `alpha*x + beta`.
    Affine {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x` for `x >= 0`, else `alpha*(e^x - 1)`.
    Elu {
        /// Negative saturation.
        alpha: f32,
    },
    /// `x / (1 + |x|)`.
    Softsign,
    /// `ln(1 + e^x)`.
    Softplus,
}

impl Activation {
    /// Parse an ONNX activation name with its `activation_alpha`/`activation_beta` values.
    ///
    /// A missing `alpha`/`beta` takes the default of the standalone ONNX operator of that
    /// name, which onnxruntime's LSTM/GRU/RNN kernels use too: `LeakyRelu` alpha 0.01,
    /// `HardSigmoid` alpha 0.2 and beta 0.5, `Elu` alpha 1.0.
    ///
    /// Errors: [`Error::InvalidConfig`] for an unknown name, or for a missing `alpha`/`beta`
    /// of `ThresholdedRelu`, `ScaledTanh` or `Affine`: the ONNX operator `ThresholdedRelu`
    /// defaults alpha to 1.0 but onnxruntime's recurrent kernels use 0.0, and `ScaledTanh` /
    /// `Affine` have no ONNX default at all, so we ask for them explicitly.
    pub fn from_onnx(name: &str, alpha: Option<f32>, beta: Option<f32>) -> Result<Activation> {
        let need = |v: Option<f32>, what: &str| {
            v.ok_or_else(|| Error::InvalidConfig(format!("activation {name} needs {what}")))
        };
        Ok(match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "hardsigmoid" => Activation::HardSigmoid {
                alpha: alpha.unwrap_or(0.2),
                beta: beta.unwrap_or(0.5),
            },
            "leakyrelu" => Activation::LeakyRelu {
                alpha: alpha.unwrap_or(0.01),
            },
            "thresholdedrelu" => Activation::ThresholdedRelu {
                alpha: need(alpha, "alpha")?,
            },
            "scaledtanh" => Activation::ScaledTanh {
                alpha: need(alpha, "alpha")?,
                beta: need(beta, "beta")?,
            },
            "affine" => Activation::Affine {
                alpha: need(alpha, "alpha")?,
                beta: need(beta, "beta")?,
            },
            "elu" => Activation::Elu {
                alpha: alpha.unwrap_or(1.0),
            },
            "softsign" => Activation::Softsign,
            "softplus" => Activation::Softplus,
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown activation {name:?} (ONNX names: Sigmoid, Tanh, Relu, HardSigmoid, \
                     LeakyRelu, ThresholdedRelu, ScaledTanh, Affine, Elu, Softsign, Softplus)"
                )));
            }
        })
    }

    /// Its parameters, `(alpha, beta)`, zero where unused.
    pub fn params(self) -> (f32, f32) {
        match self {
            Activation::HardSigmoid { alpha, beta }
            | Activation::ScaledTanh { alpha, beta }
            | Activation::Affine { alpha, beta } => (alpha, beta),
            Activation::LeakyRelu { alpha }
            | Activation::ThresholdedRelu { alpha }
            | Activation::Elu { alpha } => (alpha, 0.0),
            _ => (0.0, 0.0),
        }
    }

    fn validate(self, role: &str) -> Result<()> {
        let (a, b) = self.params();
        if !a.is_finite() || !b.is_finite() {
            return Err(Error::InvalidConfig(format!(
                "{role} activation {self:?} has a non-finite parameter"
            )));
        }
        Ok(())
    }
}

/// The three activation roles of ONNX's cells: `f` for gates, `g` for the candidate/cell
/// input, `h` for the LSTM's output of the cell state. Defaults: sigmoid, tanh, tanh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activations {
    /// `f`: the gates (LSTM i, f, o; GRU r, z).
    pub gate: Activation,
    /// `g`: LSTM's cell input `g`, GRU's candidate `n`, the plain RNN's only activation.
    pub cell: Activation,
    /// `h`: LSTM's `h = o * h(c)`.
    pub hidden: Activation,
}

impl Default for Activations {
    fn default() -> Self {
        Activations {
            gate: Activation::Sigmoid,
            cell: Activation::Tanh,
            hidden: Activation::Tanh,
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
    /// t = T-1 .. 0 (ONNX `direction = "reverse"`); with per-sequence lengths each sequence
    /// starts at its own last valid step. Its weights carry the forward names (`_l{k}`).
    Reverse,
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
    gru_reset: GruReset,
    activations: Activations,
    proj_size: Option<usize>,
    peepholes: bool,
    input_forget: bool,
    gate_clip: Option<f32>,
    cell_clip: Option<(f32, f32)>,
    dropout: f32,
}

impl RnnConfig {
    /// Start an LSTM configuration (PyTorch `nn.LSTM(input_size, hidden_size)`).
    pub fn lstm(input_size: usize, hidden_size: usize) -> RnnConfigBuilder {
        Self::start(CellKind::Lstm, input_size, hidden_size)
    }

    /// Start a GRU configuration (PyTorch `nn.GRU(input_size, hidden_size)`, reset after).
    pub fn gru(input_size: usize, hidden_size: usize) -> RnnConfigBuilder {
        Self::start(CellKind::Gru, input_size, hidden_size)
    }

    /// Start a plain RNN configuration (PyTorch `nn.RNN(input_size, hidden_size,
    /// nonlinearity=...)`).
    pub fn rnn(
        input_size: usize,
        hidden_size: usize,
        nonlinearity: Nonlinearity,
    ) -> RnnConfigBuilder {
        let mut b = Self::start(CellKind::Rnn, input_size, hidden_size);
        b.cfg.activations.cell = match nonlinearity {
            Nonlinearity::Tanh => Activation::Tanh,
            Nonlinearity::Relu => Activation::Relu,
        };
        b
    }

    fn start(cell: CellKind, input_size: usize, hidden_size: usize) -> RnnConfigBuilder {
        RnnConfigBuilder {
            cfg: RnnConfig {
                cell,
                input_size,
                hidden_size,
                num_layers: 1,
                bias: true,
                direction: Direction::Forward,
                layout: Layout::SeqMajor,
                gru_reset: GruReset::After,
                activations: Activations::default(),
                proj_size: None,
                peepholes: false,
                input_forget: false,
                gate_clip: None,
                cell_clip: None,
                dropout: 0.0,
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

    /// This configuration with another layout (a per-call [`crate::RunOptions::layout`]).
    pub(crate) fn with_layout(&self, layout: Layout) -> RnnConfig {
        RnnConfig {
            layout,
            ..self.clone()
        }
    }
    /// Where a GRU applies its reset gate.
    pub fn gru_reset(&self) -> GruReset {
        self.gru_reset
    }
    /// The activation of each role.
    pub fn activations(&self) -> Activations {
        self.activations
    }
    /// LSTM projection size `P` (PyTorch `proj_size`), if any.
    pub fn proj_size(&self) -> Option<usize> {
        self.proj_size
    }
    /// Size of the recurrent state `h`: `P` with a projection, else `H`.
    pub fn state_size(&self) -> usize {
        self.proj_size.unwrap_or(self.hidden_size)
    }
    /// LSTM peephole connections (ONNX `P`).
    pub fn peepholes(&self) -> bool {
        self.peepholes
    }
    /// LSTM coupled input/forget gate (ONNX `input_forget`): `f = 1 - i`.
    pub fn input_forget(&self) -> bool {
        self.input_forget
    }
    /// Gate pre-activation clip (ONNX `clip`): pre-activations clamped to `[-c, c]`.
    pub fn gate_clip(&self) -> Option<f32> {
        self.gate_clip
    }
    /// LSTM cell-state clip (cuDNN `cudnnRNNSetClip`): `c` clamped to `[min, max]`.
    pub fn cell_clip(&self) -> Option<(f32, f32)> {
        self.cell_clip
    }
    /// Dropout probability on the outputs of every layer but the last, in training only
    /// (PyTorch `dropout`); `0.0` (the default) means none.
    pub fn dropout(&self) -> f32 {
        self.dropout
    }
    /// Whether this is exactly PyTorch's default cell of its kind (no variant, default
    /// activations): the configurations the GPU path implements so far.
    pub fn is_plain(&self) -> bool {
        let default_acts = match self.cell {
            CellKind::Rnn => {
                self.activations.cell == Activation::Tanh
                    || self.activations.cell == Activation::Relu
            }
            _ => self.activations == Activations::default(),
        };
        default_acts
            && self.gru_reset == GruReset::After
            && self.proj_size.is_none()
            && !self.peepholes
            && !self.input_forget
            && self.gate_clip.is_none()
            && self.cell_clip.is_none()
    }
    /// `G`: gates per hidden unit.
    pub fn gate_count(&self) -> usize {
        self.cell.gate_count()
    }
    /// Directions per layer (1 or 2).
    pub fn num_directions(&self) -> usize {
        match self.direction {
            Direction::Forward | Direction::Reverse => 1,
            Direction::Bidirectional => 2,
        }
    }
    /// Input features of layer `layer` (layer 0 reads `x`, later layers read the layer below).
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }
    /// Features of `y`: `state_size * directions` (`H`, or `P` with a projection).
    pub fn output_size(&self) -> usize {
        self.state_size() * self.num_directions()
    }

    /// The configuration one layer-direction of this model sees: layer `layer`'s input size,
    /// one layer, direction [`Direction::Forward`], seq-major, no dropout. The per-layer CPU
    /// reference ([`crate::cpu::forward`]) runs on it; the stack reference supplies the time
    /// order and the layout.
    pub(crate) fn layer_config(&self, layer: usize) -> RnnConfig {
        RnnConfig {
            input_size: self.layer_input_size(layer),
            num_layers: 1,
            direction: Direction::Forward,
            layout: Layout::SeqMajor,
            dropout: 0.0,
            ..self.clone()
        }
    }

    /// Forward FLOPs for `T` steps at batch `B`, the convention of DeepBench and cuDNN: two
    /// GEMMs of `G*H` columns per layer-direction, 2 FLOPs per MAC, summed over layers and
    /// directions: `sum_l D * 2*G*B*H*(I_l + S)*T` (`S` = `proj_size` or `H`). One layer with
    /// `I`: LSTM `8*B*H*(I+H)*T`, GRU `6*...`, RNN `2*...`. Element-wise work and the
    /// projection GEMM are not counted.
    pub fn forward_flops(&self, batch: usize, steps: usize) -> f64 {
        let g = self.gate_count() as f64;
        let (b, t, h, s) = (
            batch as f64,
            steps as f64,
            self.hidden_size as f64,
            self.state_size() as f64,
        );
        let d = self.num_directions() as f64;
        (0..self.num_layers)
            .map(|l| d * 2.0 * g * b * h * (self.layer_input_size(l) as f64 + s) * t)
            .sum()
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
    /// Number of stacked layers (default 1), at most [`MAX_LAYERS`].
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
    /// Dropout probability between layers, in training only (PyTorch `dropout`; default 0).
    /// Must lie in `[0, 1)`.
    pub fn dropout(mut self, p: f32) -> Self {
        self.cfg.dropout = p;
        self
    }
    /// GRU only: ONNX `linear_before_reset` (`true`, the default, is PyTorch's form).
    pub fn linear_before_reset(mut self, yes: bool) -> Self {
        self.cfg.gru_reset = if yes {
            GruReset::After
        } else {
            GruReset::Before
        };
        self
    }
    /// Activations per role (ONNX `activations`; default sigmoid, tanh, tanh).
    pub fn activations(mut self, activations: Activations) -> Self {
        self.cfg.activations = activations;
        self
    }
    /// LSTM only: project `h` to `P < H` features (PyTorch `proj_size`).
    pub fn proj_size(mut self, p: usize) -> Self {
        self.cfg.proj_size = Some(p);
        self
    }
    /// LSTM only: peephole connections (ONNX `P`).
    pub fn peepholes(mut self, yes: bool) -> Self {
        self.cfg.peepholes = yes;
        self
    }
    /// LSTM only: couple the input and forget gates, `f = 1 - i` (ONNX `input_forget`).
    pub fn input_forget(mut self, yes: bool) -> Self {
        self.cfg.input_forget = yes;
        self
    }
    /// Clamp every gate pre-activation to `[-c, c]` (ONNX `clip`).
    pub fn gate_clip(mut self, c: f32) -> Self {
        self.cfg.gate_clip = Some(c);
        self
    }
    /// LSTM only: clamp the cell state to `[min, max]` after each step (cuDNN).
    pub fn cell_clip(mut self, min: f32, max: f32) -> Self {
        self.cfg.cell_clip = Some((min, max));
        self
    }

    /// Validate and return the configuration.
    ///
    /// Errors: [`Error::ZeroSize`] for a zero input/hidden size or layer count;
    /// [`Error::InvalidConfig`] for a dropout outside `[0, 1)`, a variant on the wrong cell,
    /// a size out of range, or more than [`MAX_LAYERS`] layers.
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
        if c.num_layers > MAX_LAYERS {
            return Err(Error::InvalidConfig(format!(
                "num_layers must be at most MAX_LAYERS = {MAX_LAYERS}, got {}",
                c.num_layers
            )));
        }
        // Sizes whose packed weights could not even be indexed with 32-bit words are refused
        // here; the device limits are checked again against the real adapter in `Rnn::new`.
        let g = c.gate_count() as u64;
        let widest = c.input_size.max(c.hidden_size) as u64;
        let words = g
            .saturating_mul(c.hidden_size as u64)
            .saturating_mul(widest);
        if words > u32::MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "weights of {}x{} elements overflow 32-bit indexing",
                g.saturating_mul(c.hidden_size as u64),
                widest
            )));
        }
        let lstm_only = |what: &str| {
            Err(Error::InvalidConfig(format!(
                "{what} applies to LSTM only, not {}",
                c.cell.name()
            )))
        };
        if c.cell != CellKind::Lstm {
            if c.proj_size.is_some() {
                return lstm_only("proj_size");
            }
            if c.peepholes {
                return lstm_only("peepholes");
            }
            if c.input_forget {
                return lstm_only("input_forget");
            }
            if c.cell_clip.is_some() {
                return lstm_only("cell_clip");
            }
        }
        if c.cell != CellKind::Gru && c.gru_reset != GruReset::After {
            return Err(Error::InvalidConfig(format!(
                "linear_before_reset applies to GRU only, not {}",
                c.cell.name()
            )));
        }
        if let Some(p) = c.proj_size {
            if p == 0 || p >= c.hidden_size {
                return Err(Error::InvalidConfig(format!(
                    "proj_size must be in 1..hidden_size ({}), got {p}",
                    c.hidden_size
                )));
            }
        }
        if let Some(clip) = c.gate_clip {
            if !(clip > 0.0 && clip.is_finite()) {
                return Err(Error::InvalidConfig(format!(
                    "gate_clip must be positive and finite, got {clip}"
                )));
            }
        }
        if let Some((lo, hi)) = c.cell_clip {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Error::InvalidConfig(format!(
                    "cell_clip needs finite min < max, got [{lo}, {hi}]"
                )));
            }
        }
        c.activations.gate.validate("gate")?;
        c.activations.cell.validate("cell")?;
        c.activations.hidden.validate("hidden")?;
        // `!(..)` so that NaN is refused too. PyTorch accepts p = 1 (everything dropped); a
        // mask that keeps nothing has no `1/(1-p)` scale, so we stop short of it.
        if !(c.dropout >= 0.0 && c.dropout < 1.0) {
            return Err(Error::InvalidConfig(format!(
                "dropout must be in [0, 1), got {}",
                c.dropout
            )));
        }
        Ok(c)
    }
}
