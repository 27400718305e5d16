//! Running an [`OnnxModel`] with ONNX's tensors and layouts, on the GPU ([`OnnxRunner`]) or
//! on the CPU reference ([`OnnxModel::run_cpu`]).
//!
//! Shapes (`L` layers, `D` directions, `H` hidden, `I` input size):
//!
//! | tensor          | `layout = 0`     | `layout = 1`     |
//! |-----------------|------------------|------------------|
//! | `X`             | `[T, B, I]`      | `[B, T, I]`      |
//! | `sequence_lens` | `[B]`            | `[B]`            |
//! | `initial_h/c`   | `[L*D, B, H]`    | `[B, L*D, H]`    |
//! | `Y`             | `[T, D, B, H]`   | `[B, T, D, H]`   |
//! | `Y_h`, `Y_c`    | `[L*D, B, H]`    | `[B, L*D, H]`    |
//!
//! For one node these are exactly the operator's inputs and outputs; for a stack, `Y` is the
//! last layer's and the states hold every layer's, layer 0 first (what the exported graphs
//! `Concat`). The engine's own order (PyTorch's) is seq-major `y [T, B, D*H]` and states
//! `[L*D, B, H]`; only the transposes between the two are done here.

use super::graph::{LengthsSource, StateSource};
use super::model::OnnxModel;
use super::tensor::Tensor;
use super::view::{Atom, Root, permute};
use crate::config::{CellKind, Layout};
use crate::cpu::{stack_forward, to_f64};
use crate::error::{Error, Result};
use crate::gpu::{Context, GpuTensor, Rnn, State};
use crate::options::{HostState, RunOptions};
use crate::validate::{check_len, check_lengths};

/// The operator-level inputs of a run (shapes in the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct OnnxInputs<'a> {
    /// `X`: `[T, B, I]` (`layout = 0`) or `[B, T, I]` (`layout = 1`), row-major.
    pub x: &'a [f32],
    /// `T`: timesteps.
    pub steps: usize,
    /// `B`: batch rows.
    pub batch: usize,
    /// `sequence_lens` `[B]`, each in `1..=T`; `None`: the model's constant lengths if it
    /// has them, else every row runs all `T` steps.
    pub sequence_lens: Option<&'a [usize]>,
    /// `initial_h`: `[L*D, B, H]` or `[B, L*D, H]`; `None`: the model's constant initial
    /// state where it has one, zeros elsewhere.
    pub initial_h: Option<&'a [f32]>,
    /// `initial_c` (LSTM), as `initial_h`. A missing `initial_c` beside a given `initial_h`
    /// is zeros, as PyTorch's functional API allows.
    pub initial_c: Option<&'a [f32]>,
}

/// The operator-level outputs of a run (shapes in the [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxOutputs {
    /// `Y`: `[T, D, B, H]` or `[B, T, D, H]`; zero past each row's length.
    pub y: Vec<f32>,
    /// The shape of `y`.
    pub y_shape: [usize; 4],
    /// `Y_h`: `[L*D, B, H]` or `[B, L*D, H]`, each row's state at its last valid step.
    pub y_h: Vec<f32>,
    /// `Y_c` (LSTM), as `y_h`.
    pub y_c: Option<Vec<f32>>,
    /// The shape of `y_h` (and `y_c`).
    pub state_shape: [usize; 3],
}

/// What the engine computes, in its own layout: `y` in the model's layout with the features
/// `[D, H]`, states `[L*D, B, H]`.
struct EngineOut {
    y: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Option<Vec<f32>>,
}

/// The engine's inputs, in its layout.
struct EngineIn<'a> {
    x: &'a [f32],
    steps: usize,
    batch: usize,
    lengths: Option<Vec<usize>>,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
}

/// An [`OnnxModel`] uploaded to a GPU: packs once, runs many times.
#[derive(Debug)]
pub struct OnnxRunner {
    model: OnnxModel,
    rnn: Rnn,
}

impl OnnxRunner {
    /// Pack and upload the model's weights. Errors: as [`Rnn::new`].
    pub fn new(ctx: &Context, model: &OnnxModel) -> Result<OnnxRunner> {
        Ok(OnnxRunner {
            rnn: Rnn::new(ctx, model.weights())?,
            model: model.clone(),
        })
    }

    /// The model.
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// The engine model, for its GPU-resident API ([`Rnn::forward_with`]).
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// Run on the GPU with the operator's tensors (blocking: uploads, one submission,
    /// downloads). Errors: as [`OnnxModel::run_cpu`], plus the GPU errors of
    /// [`Rnn::forward_with`].
    pub fn run(&self, inputs: &OnnxInputs<'_>) -> Result<OnnxOutputs> {
        self.model.run_with(inputs, |e| self.engine(e))
    }

    /// Run on the GPU with the graph's own inputs and outputs, by name. See
    /// [`OnnxModel::run_graph_cpu`].
    pub fn run_graph(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.model.run_graph_with(inputs, |e| self.engine(e))
    }

    fn engine(&self, e: EngineIn<'_>) -> Result<EngineOut> {
        let cfg = self.model.config();
        let ctx = self.rnn.context();
        let ld = cfg.num_layers() * cfg.num_directions();
        let (b, h) = (e.batch, cfg.hidden_size());
        let x_shape = match cfg.layout() {
            Layout::BatchFirst => [b, e.steps, cfg.input_size()],
            _ => [e.steps, b, cfg.input_size()],
        };
        let x = GpuTensor::upload(ctx, e.x, &x_shape)?;
        let lstm = cfg.cell() == CellKind::Lstm;
        let state = match (e.h0, e.c0) {
            (None, None) => None,
            (h0, c0) => Some(State {
                h: GpuTensor::upload(
                    ctx,
                    &h0.unwrap_or_else(|| vec![0.0; ld * b * h]),
                    &[ld, b, h],
                )?,
                c: if lstm {
                    Some(GpuTensor::upload(
                        ctx,
                        &c0.unwrap_or_else(|| vec![0.0; ld * b * h]),
                        &[ld, b, h],
                    )?)
                } else {
                    None
                },
            }),
        };
        let opts = RunOptions {
            lengths: e.lengths.as_deref(),
            ..Default::default()
        };
        let out = self.rnn.forward_with(&x, state.as_ref(), &opts)?;
        Ok(EngineOut {
            y: out.y.download(ctx)?,
            h_n: out.h_n.download(ctx)?,
            c_n: out.c_n.as_ref().map(|c| c.download(ctx)).transpose()?,
        })
    }
}

fn cpu_engine(model: &OnnxModel, e: EngineIn<'_>) -> Result<EngineOut> {
    let cfg = model.config();
    let to64 = |v: &Option<Vec<f32>>| v.as_deref().map(to_f64);
    let (h0, c0) = (to64(&e.h0), to64(&e.c0));
    let trace = stack_forward(
        cfg,
        model.weights(),
        &to_f64(e.x),
        e.steps,
        e.batch,
        HostState {
            h0: h0.as_deref(),
            c0: c0.as_deref(),
        },
        &RunOptions {
            lengths: e.lengths.as_deref(),
            ..Default::default()
        },
    )?;
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Ok(EngineOut {
        y: to32(&trace.y),
        h_n: to32(&trace.h_n),
        c_n: trace.c_n.as_deref().map(to32),
    })
}

impl OnnxModel {
    /// Run on the CPU reference (f64 inside, `f32` out) with the operator's tensors.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming `X`, `sequence_lens`, `initial_h`,
    /// `initial_c` or a constant state of the model whose batch differs;
    /// [`Error::ZeroSize`] for `T = 0`, `B = 0` or a zero length.
    pub fn run_cpu(&self, inputs: &OnnxInputs<'_>) -> Result<OnnxOutputs> {
        self.run_with(inputs, |e| cpu_engine(self, e))
    }

    /// Run on the CPU reference with the graph's own inputs, matched by name
    /// ([`OnnxModel::input_names`]), returning every graph output
    /// ([`OnnxModel::output_names`]) in its graph shape: what onnxruntime returns for the
    /// same file and feeds.
    ///
    /// Errors: [`Error::MissingTensor`] for a graph input not given; [`Error::ShapeMismatch`]
    /// for a tensor of the wrong shape; as [`OnnxModel::run_cpu`].
    pub fn run_graph_cpu(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_graph_with(inputs, |e| cpu_engine(self, e))
    }

    fn state_shape(&self, batch: usize) -> [usize; 3] {
        let cfg = self.config();
        let ld = cfg.num_layers() * cfg.num_directions();
        match cfg.layout() {
            Layout::BatchFirst => [batch, ld, cfg.hidden_size()],
            _ => [ld, batch, cfg.hidden_size()],
        }
    }

    fn run_with(
        &self,
        inputs: &OnnxInputs<'_>,
        engine: impl FnOnce(EngineIn<'_>) -> Result<EngineOut>,
    ) -> Result<OnnxOutputs> {
        let cfg = self.config();
        let (t, b) = (inputs.steps, inputs.batch);
        crate::validate::check_steps_batch(t, b)?;
        let x_shape = match cfg.layout() {
            Layout::BatchFirst => [b, t, cfg.input_size()],
            _ => [t, b, cfg.input_size()],
        };
        check_len("X", inputs.x, &x_shape)?;
        let lengths = match (inputs.sequence_lens, &self.lengths) {
            (Some(l), _) => Some(l.to_vec()),
            (None, LengthsSource::Const(l)) => Some(l.clone()),
            _ => None,
        };
        check_lengths(lengths.as_deref(), t, b).map_err(|e| rename(e, "sequence_lens"))?;
        let shape = self.state_shape(b);
        let state = |given: Option<&[f32]>,
                     name: &str,
                     sources: &[StateSource]|
         -> Result<Option<Vec<f32>>> {
            match given {
                Some(v) => {
                    check_len(name, v, &shape)?;
                    Ok(Some(self.state_to_engine(v, b)?))
                }
                None => self.assemble_state(sources, b, &[], name),
            }
        };
        let h0 = state(inputs.initial_h, "initial_h", &self.h0)?;
        let c0 = if cfg.cell() == CellKind::Lstm {
            state(inputs.initial_c, "initial_c", &self.c0)?
        } else if let Some(c) = inputs.initial_c {
            return Err(Error::ShapeMismatch {
                name: "initial_c (only an LSTM has one)".into(),
                expected: vec![],
                got: vec![c.len()],
            });
        } else {
            None
        };
        let out = engine(EngineIn {
            x: inputs.x,
            steps: t,
            batch: b,
            lengths,
            h0,
            c0,
        })?;
        let (d, h) = (cfg.num_directions(), cfg.hidden_size());
        let bf = cfg.layout() == Layout::BatchFirst;
        let size = self.sizer(t, b, &[]);
        let (from, to, y_shape) = if bf {
            (
                [Atom::B, Atom::T, Atom::Dir, Atom::H],
                [Atom::B, Atom::T, Atom::Dir, Atom::H],
                [b, t, d, h],
            )
        } else {
            (
                [Atom::T, Atom::B, Atom::Dir, Atom::H],
                [Atom::T, Atom::Dir, Atom::B, Atom::H],
                [t, d, b, h],
            )
        };
        let y = permute(&out.y, &from, &to, &size)?;
        let states = |v: &[f32]| self.state_from_engine(v, b);
        Ok(OnnxOutputs {
            y,
            y_shape,
            y_h: states(&out.h_n)?,
            y_c: out.c_n.as_deref().map(states).transpose()?,
            state_shape: shape,
        })
    }

    /// The size of each atom in a run over `(t, b)`; graph-input atoms from `x_dims`.
    fn sizer(&self, t: usize, b: usize, x_dims: &[usize]) -> impl Fn(Atom) -> usize + use<> {
        let cfg = self.config();
        let (d, h, l) = (cfg.num_directions(), cfg.hidden_size(), cfg.num_layers());
        let x_dims = x_dims.to_vec();
        move |a| match a {
            Atom::T => t,
            Atom::B => b,
            Atom::Dir => d,
            Atom::H => h,
            Atom::Layer => l,
            Atom::In(k) => x_dims.get(k).copied().unwrap_or(1),
        }
    }

    /// A full state in the model's layout (`[L*D, B, H]` or `[B, L*D, H]`) in the engine's.
    fn state_to_engine(&self, v: &[f32], b: usize) -> Result<Vec<f32>> {
        match self.config().layout() {
            Layout::BatchFirst => permute(
                v,
                &[Atom::B, Atom::Layer, Atom::H],
                &[Atom::Layer, Atom::B, Atom::H],
                self.state_rows(b),
            ),
            _ => Ok(v.to_vec()),
        }
    }

    fn state_from_engine(&self, v: &[f32], b: usize) -> Result<Vec<f32>> {
        match self.config().layout() {
            Layout::BatchFirst => permute(
                v,
                &[Atom::Layer, Atom::B, Atom::H],
                &[Atom::B, Atom::Layer, Atom::H],
                self.state_rows(b),
            ),
            _ => Ok(v.to_vec()),
        }
    }

    /// Sizes for moving whole states: `Layer` stands for all `L*D` rows.
    fn state_rows(&self, b: usize) -> impl Fn(Atom) -> usize + use<> {
        let cfg = self.config();
        let (ld, h) = (cfg.num_layers() * cfg.num_directions(), cfg.hidden_size());
        move |a| match a {
            Atom::B => b,
            Atom::Layer => ld,
            Atom::H => h,
            _ => 1,
        }
    }

    /// The engine's `[L*D, B, H]` initial state from each layer's source; `None` when every
    /// layer starts from zeros. `feeds` are the graph inputs of a graph run (empty for an
    /// operator-level run, where input-fed layers start from zeros).
    fn assemble_state(
        &self,
        sources: &[StateSource],
        b: usize,
        feeds: &[Tensor],
        name: &str,
    ) -> Result<Option<Vec<f32>>> {
        let cfg = self.config();
        let (d, h) = (cfg.num_directions(), cfg.hidden_size());
        let bf = cfg.layout() == Layout::BatchFirst;
        let block = d * b * h;
        let mut out = vec![0.0f32; sources.len() * block];
        let mut any = false;
        // One layer's `[D, B, H]` (or `[B, D, H]` in layout 1) block into the engine's order.
        let to_engine = |v: &[f32]| -> Result<Vec<f32>> {
            if bf {
                permute(
                    v,
                    &[Atom::B, Atom::Dir, Atom::H],
                    &[Atom::Dir, Atom::B, Atom::H],
                    |a| match a {
                        Atom::B => b,
                        Atom::Dir => d,
                        Atom::H => h,
                        _ => 1,
                    },
                )
            } else {
                Ok(v.to_vec())
            }
        };
        let node_shape = if bf { vec![b, d, h] } else { vec![d, b, h] };
        for (l, src) in sources.iter().enumerate() {
            let dst = &mut out[l * block..(l + 1) * block];
            match src {
                StateSource::Zeros => {}
                StateSource::Fill(v) => {
                    dst.fill(*v);
                    any |= *v != 0.0;
                }
                StateSource::Const(t) => {
                    if t.dims != node_shape {
                        return Err(Error::ShapeMismatch {
                            name: format!(
                                "{name} of layer {l} (the model's constant `{}`)",
                                t.name
                            ),
                            expected: node_shape.clone(),
                            got: t.dims.clone(),
                        });
                    }
                    dst.copy_from_slice(&to_engine(t.as_f32()?)?);
                    any = true;
                }
                StateSource::Input {
                    name: input,
                    start,
                    end,
                } => {
                    let Some(t) = feeds.iter().find(|t| &t.name == input) else {
                        if feeds.is_empty() {
                            continue;
                        }
                        return Err(Error::MissingTensor(input.clone()));
                    };
                    let rows = end.map_or(d, |e| e.saturating_sub(*start));
                    let ax = usize::from(bf);
                    let n = t.dims.get(ax).copied().unwrap_or(0);
                    let mut want = node_shape.clone();
                    want[ax] = n.max(start + d);
                    if rows != d || t.dims.len() != 3 || t.dims != want {
                        return Err(Error::ShapeMismatch {
                            name: format!("{input} (rows {start}..{} for layer {l})", start + d),
                            expected: want,
                            got: t.dims.clone(),
                        });
                    }
                    let v = t.as_f32()?;
                    // Take rows start..start+d of the direction axis.
                    let block_rows: Vec<f32> = if bf {
                        (0..b)
                            .flat_map(|bi| {
                                v[(bi * n + start) * h..(bi * n + start + d) * h]
                                    .iter()
                                    .copied()
                            })
                            .collect()
                    } else {
                        v[start * b * h..(start + d) * b * h].to_vec()
                    };
                    dst.copy_from_slice(&to_engine(&block_rows)?);
                    any = true;
                }
            }
        }
        Ok(any.then_some(out))
    }

    fn run_graph_with(
        &self,
        feeds: &[Tensor],
        engine: impl FnOnce(EngineIn<'_>) -> Result<EngineOut>,
    ) -> Result<Vec<Tensor>> {
        let cfg = self.config();
        let find = |name: &str| {
            feeds
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| Error::MissingTensor(name.to_string()))
        };
        let xg = find(&self.x_input)?;
        if xg.dims.len() != 3 {
            return Err(Error::ShapeMismatch {
                name: self.x_input.clone(),
                expected: vec![0, 0, cfg.input_size()],
                got: xg.dims.clone(),
            });
        }
        // The graph input in layer 0's layout.
        let node_dims: Vec<usize> = self.x_axes.iter().map(|&k| xg.dims[k]).collect();
        let (t, b) = match cfg.layout() {
            Layout::BatchFirst => (node_dims[1], node_dims[0]),
            _ => (node_dims[0], node_dims[1]),
        };
        if node_dims[2] != cfg.input_size() {
            return Err(Error::ShapeMismatch {
                name: self.x_input.clone(),
                expected: self
                    .x_axes
                    .iter()
                    .map(|&k| {
                        if k == self.x_axes[2] {
                            cfg.input_size()
                        } else {
                            xg.dims[k]
                        }
                    })
                    .collect(),
                got: xg.dims.clone(),
            });
        }
        crate::validate::check_steps_batch(t, b)?;
        let in_atoms: Vec<Atom> = (0..3).map(Atom::In).collect();
        let node_atoms: Vec<Atom> = self.x_axes.iter().map(|&k| Atom::In(k)).collect();
        let x = permute(
            xg.as_f32()?,
            &in_atoms,
            &node_atoms,
            self.sizer(t, b, &xg.dims),
        )?;
        let lengths = match &self.lengths {
            LengthsSource::None => None,
            LengthsSource::Const(l) => Some(l.clone()),
            LengthsSource::Input(name) => Some(find(name)?.to_lengths()?),
        };
        check_lengths(lengths.as_deref(), t, b).map_err(|e| rename(e, "sequence_lens"))?;
        let h0 = self.assemble_state(&self.h0, b, feeds, "initial_h")?;
        let c0 = if cfg.cell() == CellKind::Lstm {
            self.assemble_state(&self.c0, b, feeds, "initial_c")?
        } else {
            None
        };
        let out = engine(EngineIn {
            x: &x,
            steps: t,
            batch: b,
            lengths,
            h0,
            c0,
        })?;
        let size = self.sizer(t, b, &xg.dims);
        let bf = cfg.layout() == Layout::BatchFirst;
        let block = cfg.num_directions() * b * cfg.hidden_size();
        self.outputs
            .iter()
            .map(|(name, view)| {
                let (data, from): (&[f32], Vec<Atom>) = match view.root {
                    Root::Y(_) => (
                        &out.y,
                        if bf {
                            vec![Atom::B, Atom::T, Atom::Dir, Atom::H]
                        } else {
                            vec![Atom::T, Atom::B, Atom::Dir, Atom::H]
                        },
                    ),
                    Root::State { c, layer } => {
                        let all = if c {
                            out.c_n
                                .as_deref()
                                .ok_or_else(|| Error::Internal("no c_n".into()))?
                        } else {
                            &out.h_n
                        };
                        match layer {
                            Some(l) if l * block < all.len() => (
                                &all[l * block..(l + 1) * block],
                                vec![Atom::Dir, Atom::B, Atom::H],
                            ),
                            Some(_) => return Err(Error::Internal("layer out of range".into())),
                            None => (all, vec![Atom::Layer, Atom::Dir, Atom::B, Atom::H]),
                        }
                    }
                    Root::Input(_) => {
                        return Err(Error::Internal("graph output of an input".into()));
                    }
                };
                let dims: Vec<usize> = view
                    .axes
                    .iter()
                    .map(|axis| axis.iter().map(|&a| size(a)).product())
                    .collect();
                Tensor::from_f32(name, &dims, permute(data, &from, &view.atoms(), &size)?)
            })
            .collect()
    }
}

fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::ShapeMismatch {
            name: n,
            expected,
            got,
        } => Error::ShapeMismatch {
            name: format!("{name}: {n}"),
            expected,
            got,
        },
        other => other,
    }
}
