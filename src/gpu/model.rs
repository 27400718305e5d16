//! `Rnn`: a model's packed parameters on the GPU, its parameter version, and its bounded cache
//! of workspaces and result tensors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::gpu::context::{Context, lock};
pub(crate) use crate::gpu::packed::{LayerView, PackedLayer};
use crate::gpu::packed::{encode, host_packed, pack_layer};
use crate::gpu::plan::{Plan, PlanKey, PlanLimits, PlanMode};
use crate::gpu::precision::{WeightPrecision, f16_words, specialise_f16, training_refused};
use crate::gpu::tensor::GpuTensor;
use crate::gpu::workspace::Workspace;
use crate::weights::Weights;

/// Shapes whose workspaces (and pooled results) a model keeps: the least recently used shape
/// is dropped when a ninth arrives. A training loop uses one or two shapes, a server with
/// bucketed lengths a handful; 8 bounds the memory of a model that sees many.
pub const WORKSPACE_CACHE_SHAPES: usize = 8;

/// Unique id of each model, so a tape can be matched to the model that recorded it.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A recurrent network whose weights live on the GPU: any cell of [`RnnConfig`], any number of
/// layers, forward, reverse or bidirectional, seq-major or batch-first.
///
/// Cheap to clone: clones share the parameters, their version and the workspace cache, so a
/// server can keep a model and its [`crate::Session`]s in one struct, or hand clones to threads
/// (`Rnn` is `Send + Sync`).
#[derive(Clone)]
pub struct Rnn {
    pub(crate) inner: Arc<RnnInner>,
    pub(crate) max_chunk_steps: Option<usize>,
}

pub(crate) struct RnnInner {
    pub ctx: Context,
    pub cfg: RnnConfig,
    /// Per layer-direction, `l*D + d`.
    pub layers: Vec<PackedLayer>,
    /// Per layer: its one-layer, one-direction, seq-major configuration (input size `I_l`).
    pub layer_cfgs: Vec<RnnConfig>,
    /// How the weight matrices are stored (`F32` or `F16`, never `Auto`).
    pub precision: WeightPrecision,
    pub id: u64,
    /// Bumped by every parameter update (optimiser step, weight upload); tapes record it.
    pub version: Arc<AtomicU64>,
    pub dropout_draws: AtomicU64,
    pub cache: Mutex<Cache>,
}

/// Entries a pool keeps once they are free again: one per thread or tape in flight is the
/// steady state; more are let go as soon as they are free.
pub const POOL_KEEP: usize = 4;

/// A pool of `T`s handed out while nobody else holds them.
pub(crate) struct Pool<T>(Vec<Arc<T>>);

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} items)", self.0.len())
    }
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool(Vec::new())
    }
}

impl<T> Pool<T> {
    /// A pooled value nobody else holds (the clone returned holds it from now on).
    pub(crate) fn free(&mut self) -> Option<Arc<T>> {
        self.trim();
        self.0.iter().find(|a| Arc::strong_count(a) == 1).cloned()
    }

    /// Keep `value` for later calls.
    pub(crate) fn add(&mut self, value: Arc<T>) {
        self.0.push(value);
        self.trim();
    }

    /// Past [`POOL_KEEP`] entries, free ones are let go, so a caller who once held many
    /// results at a time does not pin their memory for good.
    fn trim(&mut self) {
        let mut excess = self.0.len().saturating_sub(POOL_KEEP);
        self.0.retain(|a| {
            let drop = excess > 0 && Arc::strong_count(a) == 1;
            excess -= drop as usize;
            !drop
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// A pooled value nobody holds, or a new one from `make` (kept for later calls).
    pub(crate) fn take(&mut self, make: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        if let Some(free) = self.free() {
            return Ok(free);
        }
        let new = Arc::new(make()?);
        self.add(new.clone());
        Ok(new)
    }
}

/// What a model keeps per shape.
#[derive(Default)]
pub(crate) struct ShapeEntry {
    pub workspaces: Pool<Workspace>,
    pub outputs: Pool<crate::gpu::run::OutputSlot>,
    pub grads: Pool<crate::gpu::run::GradsSlot>,
}

/// The model's bounded cache, least recently used shape first out.
#[derive(Default)]
pub(crate) struct Cache {
    entries: Vec<(PlanKey, ShapeEntry, u64)>,
    clock: u64,
}

impl Cache {
    /// The entry of `key`, created (and the oldest evicted) if absent.
    pub(crate) fn entry(&mut self, key: PlanKey) -> &mut ShapeEntry {
        self.clock += 1;
        let now = self.clock;
        if let Some(i) = self.entries.iter().position(|e| e.0 == key) {
            self.entries[i].2 = now;
            return &mut self.entries[i].1;
        }
        if self.entries.len() >= WORKSPACE_CACHE_SHAPES {
            let oldest = (0..self.entries.len())
                .min_by_key(|&i| self.entries[i].2)
                .expect("non-empty");
            self.entries.swap_remove(oldest);
        }
        self.entries.push((key, ShapeEntry::default(), now));
        &mut self.entries.last_mut().expect("just pushed").1
    }

    /// Shapes cached.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Pooled result sets (outputs and gradients) over every shape.
    pub(crate) fn results(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.1.outputs.len() + e.1.grads.len())
            .sum()
    }
}

impl std::fmt::Debug for Rnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rnn")
            .field("cfg", &self.inner.cfg)
            .field("ctx", &self.inner.ctx)
            .finish_non_exhaustive()
    }
}

impl Rnn {
    /// Validate `weights` (which carry their [`RnnConfig`]) against the device limits, pack
    /// and upload them once.
    ///
    /// Errors: [`Error::ShapeMismatch`]/[`Error::MissingTensor`] for weights that do not fit
    /// `cfg`; [`Error::LimitExceeded`] when a packed weight matrix exceeds
    /// `max_storage_buffer_binding_size`.
    pub fn new(ctx: &Context, weights: &Weights) -> Result<Rnn> {
        Rnn::with_config(ctx, weights.config(), weights)
    }

    /// [`Rnn::new`] with the configuration spelled out: `cfg` must equal the weights' own
    /// configuration ([`Weights::config`]).
    ///
    /// Errors: as [`Rnn::new`], plus [`Error::InvalidConfig`] when `cfg` differs from the
    /// weights' configuration.
    pub fn with_config(ctx: &Context, cfg: &RnnConfig, weights: &Weights) -> Result<Rnn> {
        Rnn::build(ctx, cfg, weights, WeightPrecision::F32)
    }

    /// [`Rnn::new`] with the weight matrices stored in `precision` (see [`WeightPrecision`]:
    /// `F16` halves the weight bytes each step reads, with f32 accumulation; inference only).
    ///
    /// Errors: as [`Rnn::new`], plus [`Error::Unsupported`] for `F16` on a device without
    /// `SHADER_F16` ([`Context::shader_f16`]; `Auto` then stores f32) or for a weight that
    /// overflows f16.
    pub fn with_precision(
        ctx: &Context,
        weights: &Weights,
        precision: WeightPrecision,
    ) -> Result<Rnn> {
        Rnn::build(ctx, weights.config(), weights, precision)
    }

    fn build(
        ctx: &Context,
        cfg: &RnnConfig,
        weights: &Weights,
        precision: WeightPrecision,
    ) -> Result<Rnn> {
        check_weights(cfg, weights)?;
        let precision = precision.resolve(ctx)?;
        let lim = PlanLimits::of(ctx.limits());
        let (g, h, st) = (cfg.gate_count(), cfg.hidden_size(), cfg.state_size());
        let dirs = cfg.num_directions();
        let version = Arc::new(AtomicU64::new(0));
        let mut layers = Vec::with_capacity(cfg.num_layers() * dirs);
        let mut layer_cfgs = Vec::with_capacity(cfg.num_layers());
        for l in 0..cfg.num_layers() {
            let lcfg = cfg.layer_config(l);
            let i = lcfg.input_size();
            for (name, words) in [
                (format!("weight_ih_l{l}"), g * h * i),
                (format!("weight_hh_l{l}"), g * h * st),
            ] {
                let words = match precision {
                    WeightPrecision::F16 => f16_words(words),
                    _ => words,
                };
                lim.fits_binding(&format!("packed `{name}`"), words as u64 * 4)?;
            }
            for d in 0..dirs {
                let w = weights.layer(l, d)?;
                let packed = ctx.scoped("Rnn::new", || pack_layer(ctx, &lcfg, w, precision))?;
                layers.push(packed.versioned(&version));
            }
            layer_cfgs.push(lcfg);
        }
        Ok(Rnn {
            inner: Arc::new(RnnInner {
                ctx: ctx.clone(),
                cfg: cfg.clone(),
                layers,
                layer_cfgs,
                precision,
                id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
                version,
                dropout_draws: AtomicU64::new(0),
                cache: Mutex::new(Cache::default()),
            }),
            max_chunk_steps: None,
        })
    }

    /// Upload new parameter values (same configuration) into the model's buffers, in place:
    /// workspaces stay valid, tapes recorded before become stale ([`Error::StaleTape`]).
    ///
    /// Errors: [`Error::InvalidConfig`] for weights of another configuration, and the shape
    /// errors of [`Weights::validate`].
    pub fn set_weights(&self, weights: &Weights) -> Result<()> {
        let cfg = &self.inner.cfg;
        check_weights(cfg, weights)?;
        let ctx = &self.inner.ctx;
        let dirs = cfg.num_directions();
        for (j, packed) in self.inner.layers.iter().enumerate() {
            let lcfg = &self.inner.layer_cfgs[j / dirs];
            let host = host_packed(lcfg, weights.layer(j / dirs, j % dirs)?)?;
            for (t, (kind, data)) in packed.view().tensors().into_iter().zip(host) {
                let data = encode(kind, &data, self.inner.precision)?;
                ctx.queue()
                    .write_buffer(t.buffer(), 0, bytemuck::cast_slice(&data));
            }
        }
        self.bump_version();
        Ok(())
    }

    /// The parameters on the GPU, in the packed layout gradients share (see
    /// [`crate::gpu::pack`]): for each layer-direction in PyTorch's order (`l0`, `l0_reverse`,
    /// `l1`, ...): `W_ih^T (I_l, H*G)`, `W_hh^T (S, H*G)`, biases `(2, H*G)`, `W_hr^T (H, P)`,
    /// peepholes `(3H)`, the last three only when the model has them. Same order as
    /// [`crate::gpu::ParamGrads::tensors`], so an optimiser can pair them up. An optimiser step
    /// on these tensors bumps the model's [`Rnn::parameter_version`].
    ///
    /// Errors: [`Error::Unsupported`] for a model with f16 weights ([`WeightPrecision::F16`]):
    /// its matrices are not f32 tensors of these shapes (use [`Rnn::weights`] to read them).
    pub fn parameters(&self) -> Result<Vec<&GpuTensor>> {
        self.require_f32()?;
        Ok(self
            .inner
            .layers
            .iter()
            .flat_map(|l| l.view().tensors())
            .collect())
    }

    /// How the weight matrices are stored: `F32` or `F16` (an `Auto` request resolved).
    pub fn precision(&self) -> WeightPrecision {
        self.inner.precision
    }

    /// `Err` ([`Error::Unsupported`]) for a model with f16 weights: the training and
    /// parameter-tensor paths work on f32 parameters only.
    pub(crate) fn require_f32(&self) -> Result<()> {
        match self.inner.precision {
            WeightPrecision::F16 => Err(training_refused()),
            _ => Ok(()),
        }
    }

    /// Download the current parameters in PyTorch layout (e.g. after training; an f16 model
    /// gives its f16-rounded weights, as f32).
    pub fn weights(&self) -> Result<Weights> {
        let dirs = self.dirs();
        let layers = self
            .inner
            .layers
            .iter()
            .enumerate()
            .map(|(j, l)| {
                l.view().to_host_as(
                    &self.inner.ctx,
                    &self.inner.layer_cfgs[j / dirs],
                    self.inner.precision,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Weights::from_layers(&self.inner.cfg, layers)
    }

    /// How many times the parameters have been updated (optimiser steps, weight uploads).
    pub fn parameter_version(&self) -> u64 {
        self.inner.version.load(Ordering::Relaxed)
    }

    pub(crate) fn bump_version(&self) {
        self.inner.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Cap the number of timesteps per chunk of the input projection (default: as many as
    /// fit the device). Lower it to trade scratch memory for one extra GEMM dispatch per chunk.
    pub fn with_max_chunk_steps(mut self, steps: usize) -> Result<Rnn> {
        if steps == 0 {
            return Err(Error::ZeroSize("max_chunk_steps"));
        }
        self.max_chunk_steps = Some(steps);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.inner.cfg
    }
    /// The context the weights live on.
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    pub(crate) fn ctx(&self) -> &Context {
        &self.inner.ctx
    }
    pub(crate) fn cfg(&self) -> &RnnConfig {
        &self.inner.cfg
    }
    pub(crate) fn dirs(&self) -> usize {
        self.inner.cfg.num_directions()
    }

    /// The plan of a pass over `steps` x `batch`, with per-row lengths when `variable_lengths`
    /// (validated against this device's limits, no
    /// GPU work). Print it to see every dispatch.
    ///
    /// Errors: [`Error::ZeroSize`], [`Error::LimitExceeded`].
    pub fn plan(
        &self,
        steps: usize,
        batch: usize,
        mode: PlanMode,
        variable_lengths: bool,
    ) -> Result<Plan> {
        self.build_plan(self.plan_key(steps, batch, mode, variable_lengths))
    }

    /// The plan of `key` for this model's weight storage: f16 models get their inference
    /// plans specialised ([`specialise_f16`]) and no training plans.
    ///
    /// Errors: those of [`Plan::build`], and [`Error::Unsupported`] for training an f16 model.
    pub(crate) fn build_plan(&self, key: PlanKey) -> Result<Plan> {
        let f16 = self.inner.precision == WeightPrecision::F16;
        if f16 && key.mode == PlanMode::Training {
            return Err(training_refused());
        }
        let mut plan = Plan::build(
            &self.inner.cfg,
            &self.inner.layer_cfgs,
            key,
            PlanLimits::of_context(&self.inner.ctx),
        )?;
        if f16 {
            specialise_f16(&mut plan)?;
        }
        Ok(plan)
    }

    pub(crate) fn plan_key(
        &self,
        steps: usize,
        batch: usize,
        mode: PlanMode,
        lengths: bool,
    ) -> PlanKey {
        PlanKey {
            steps,
            batch,
            mode,
            lengths,
            chunk_cap: self.max_chunk_steps,
        }
    }

    /// A workspace of your own for passes of `plan`'s shape (see
    /// [`Rnn::record_forward_in`]); the model's cache is not involved.
    pub fn workspace(&self, plan: &Plan) -> Result<Workspace> {
        if plan.key.chunk_cap != self.max_chunk_steps {
            return Err(Error::InvalidConfig(
                "the plan was made by a model with another time-chunk cap".into(),
            ));
        }
        let fresh = self.build_plan(plan.key)?;
        Workspace::new(&self.inner.ctx, fresh)
    }

    /// A free cached workspace of `key`'s shape, made on first use (outside the cache lock:
    /// planning and creating buffers may compile a kernel variant new to the context).
    pub(crate) fn cached_workspace(&self, key: PlanKey) -> Result<Arc<Workspace>> {
        if let Some(ws) = lock(&self.inner.cache).entry(key).workspaces.free() {
            return Ok(ws);
        }
        let plan = self.build_plan(key)?;
        let ws = Arc::new(Workspace::new(&self.inner.ctx, plan)?);
        lock(&self.inner.cache)
            .entry(key)
            .workspaces
            .add(ws.clone());
        Ok(ws)
    }

    /// Shapes in the model's workspace cache (at most [`WORKSPACE_CACHE_SHAPES`]).
    pub fn cached_shapes(&self) -> usize {
        lock(&self.inner.cache).len()
    }

    /// Result sets (outputs, gradients) the model's pools keep, over every cached shape.
    pub fn pooled_results(&self) -> usize {
        lock(&self.inner.cache).results()
    }
}

/// `Err` unless `weights` were made for `cfg` and hold every tensor it needs, shaped right.
fn check_weights(cfg: &RnnConfig, weights: &Weights) -> Result<()> {
    if weights.config() != cfg {
        return Err(Error::InvalidConfig(format!(
            "weights were made for {:?}, model configured as {:?}",
            weights.config(),
            cfg
        )));
    }
    weights.validate()
}
