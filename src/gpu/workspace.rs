//! `Workspace`: the GPU objects one [`Plan`] needs (every scratch buffer, the uniform slots of
//! every dispatch, every bind group), created once and replayed by every later call of the
//! same shape. Recording a pass is then a walk over prepared commands: no buffer, bind group
//! or uniform buffer is created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::context::{Context, lock};
use crate::gpu::dispatch::{Buf, BufferCopy, Io, Op, UNUSED_BINDINGS};
use crate::gpu::grads::LayerGrads;
use crate::gpu::kernels::dropout::DropoutParams;
use crate::gpu::model::PackedLayer;
use crate::gpu::pipelines::CachedPipeline;
use crate::gpu::plan::Plan;
use crate::gpu::tensor::{GpuTensor, TENSOR_USAGES};

/// Buffers a schedule resolves at record time: the model's parameters, the caller's
/// parameter gradients, and the caller's tensors at the boundary.
#[derive(Default)]
pub(crate) struct Env<'a> {
    /// Per layer-direction: the model's packed parameters.
    pub params: &'a [PackedLayer],
    /// Per layer-direction: the gradients being written.
    pub grads: Option<&'a [LayerGrads]>,
    pub io: Vec<(Io, &'a wgpu::Buffer)>,
    /// A boundary input the caller already wrote where the schedule would copy it (a
    /// session's `x_t` from the host): copies from it are skipped.
    pub preloaded: Option<Io>,
}

impl<'a> Env<'a> {
    fn io(&self, which: Io) -> Option<&'a wgpu::Buffer> {
        self.io.iter().find(|(k, _)| *k == which).map(|(_, b)| *b)
    }
}

/// One prepared command.
enum Cmd {
    Dispatch {
        pipeline: Arc<CachedPipeline>,
        group: usize,
        offset: u32,
        grid: [u32; 3],
    },
    Copy(BufferCopy),
}

/// A bind group and what it binds, so groups that bind the caller's gradients can be rebuilt
/// when those change.
struct Group {
    pipeline: Arc<CachedPipeline>,
    bindings: Vec<Buf>,
    params_size: u64,
    bind: Option<wgpu::BindGroup>,
}

/// One op list, prepared.
struct Recorded {
    cmds: Vec<Cmd>,
    groups: Vec<Group>,
    /// The gradient buffers the groups were last built for.
    grads_bound: Option<Vec<wgpu::Buffer>>,
    /// Uniform slots of dropout dispatches: byte offset, layer, elements, grid row width, p.
    dropout: Vec<(u64, usize, u32, u32, f32)>,
}

/// The GPU objects of one [`Plan`]; see the module docs. Make one with
/// [`crate::Rnn::workspace`] to own it, or let the model's cache keep them.
pub struct Workspace {
    pub(crate) plan: Plan,
    buffers: Vec<wgpu::Buffer>,
    unused: Vec<wgpu::Buffer>,
    uniforms: wgpu::Buffer,
    /// Forward, then (training) backward overwriting and accumulating.
    lists: Vec<Mutex<Recorded>>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("steps", &self.plan.key.steps)
            .field("batch", &self.plan.key.batch)
            .field("mode", &self.plan.key.mode)
            .field("bytes", &self.plan.workspace_bytes())
            .finish()
    }
}

/// Which of a workspace's op lists to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    /// A [`crate::PlanMode::Stream`] workspace's odd steps (the state buffers swapped).
    ForwardOdd,
    Backward {
        accumulate: bool,
    },
}

impl Workspace {
    /// Create every buffer, uniform slot, pipeline and bind group of `plan`.
    pub(crate) fn new(ctx: &Context, plan: Plan) -> Result<Workspace> {
        ctx.scoped("workspace", || {
            let buffers = plan
                .buffers
                .iter()
                .map(|b| ctx.create_buffer(b.name, b.words * 4, TENSOR_USAGES))
                .collect::<Result<Vec<_>>>()?;
            for (buf, at, values) in &plan.inits {
                let Buf::Scratch(i) = buf else {
                    unreachable!("only scratch buffers are initialised")
                };
                ctx.queue().write_buffer(
                    &buffers[*i as usize],
                    *at as u64 * 4,
                    bytemuck::cast_slice(values),
                );
            }
            let unused = (0..UNUSED_BINDINGS)
                .map(|_| ctx.create_buffer("unused binding", 16, wgpu::BufferUsages::STORAGE))
                .collect::<Result<Vec<_>>>()?;
            let lists: Vec<&Vec<Op>> = plan.op_lists().collect();
            let (uniforms, recorded) = prepare(ctx, &lists)?;
            Ok(Workspace {
                plan,
                buffers,
                unused,
                uniforms,
                lists: recorded.into_iter().map(Mutex::new).collect(),
            })
        })
    }

    /// The plan this workspace was made for.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub(crate) fn scratch(&self, b: Buf) -> &wgpu::Buffer {
        match b {
            Buf::Scratch(i) => &self.buffers[i as usize],
            other => unreachable!("{other:?} is not scratch"),
        }
    }

    /// Write `seed`'s dropout keys into the uniform slots of `pass` (a training pass draws a
    /// new mask every call; backward must use its forward's).
    pub(crate) fn set_dropout_seed(&self, ctx: &Context, pass: Pass, seed: u64) {
        let Some(list) = self.lists.get(self.list_index(pass)).map(lock) else {
            return;
        };
        for &(at, layer, numel, groups_x, p) in &list.dropout {
            let params = DropoutParams::new(numel, groups_x, seed, layer, p);
            ctx.queue()
                .write_buffer(&self.uniforms, at, bytemuck::bytes_of(&params));
        }
    }

    /// Record `pass` into `encoder` with the buffers of `env`.
    pub(crate) fn record(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        pass: Pass,
        env: &Env<'_>,
    ) -> Result<()> {
        let mut list = self
            .lists
            .get(self.list_index(pass))
            .map(lock)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "a {:?} workspace has no {pass:?} list",
                    self.plan.key.mode
                ))
            })?;
        let resolve = |b| self.resolve(b, env);
        // A streaming workspace binds its odd steps' list with its even one, so that nothing
        // is created after the first step.
        if pass == Pass::Forward && self.plan.forward_odd.is_some() {
            let mut odd = lock(&self.lists[self.list_index(Pass::ForwardOdd)]);
            bind(ctx, &mut odd, &self.uniforms, &resolve)?;
        }
        bind(ctx, &mut list, &self.uniforms, &resolve)?;
        replay(encoder, &list, env.preloaded, &resolve)
    }

    fn resolve<'a>(&'a self, b: Buf, env: &Env<'a>) -> Option<&'a wgpu::Buffer> {
        match b {
            Buf::Scratch(i) => Some(&self.buffers[i as usize]),
            Buf::Unused(k) => Some(&self.unused[k as usize]),
            Buf::Param(j, k) => env
                .params
                .get(j as usize)?
                .view()
                .get(k)
                .map(|t| t.buffer()),
            Buf::Grad(j, k) => env
                .grads?
                .get(j as usize)?
                .view()
                .get(k)
                .map(|t| t.buffer()),
            Buf::Io(r) => env.io(r),
        }
    }
}

impl Workspace {
    /// Where `pass` sits in `lists` (the order of [`Plan::op_lists`]); past the end for a list
    /// the plan lacks.
    fn list_index(&self, pass: Pass) -> usize {
        let odd = usize::from(self.plan.forward_odd.is_some());
        match pass {
            Pass::Forward => 0,
            Pass::ForwardOdd if odd == 1 => 1,
            Pass::ForwardOdd => self.lists.len(),
            Pass::Backward { accumulate } => 1 + odd + usize::from(accumulate),
        }
    }
}

/// Pipelines, uniform slots and groups (not yet bound) of `lists`, with one uniform buffer for
/// all their dispatches.
fn prepare(ctx: &Context, lists: &[&Vec<Op>]) -> Result<(wgpu::Buffer, Vec<Recorded>)> {
    let align = ctx.limits().min_uniform_buffer_offset_alignment as u64;
    let stride = 64u64.next_multiple_of(align.max(1));
    let slots: usize = lists
        .iter()
        .map(|l| l.iter().filter(|o| matches!(o, Op::Dispatch(_))).count())
        .sum();
    let mut data = vec![0u8; (stride * slots.max(1) as u64) as usize];
    let mut slot = 0u64;
    let mut recorded = Vec::with_capacity(lists.len());
    for ops in lists {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<(usize, Vec<Buf>, u64), usize> = HashMap::new();
        let mut cmds = Vec::with_capacity(ops.len());
        let mut dropout = Vec::new();
        for op in ops.iter() {
            cmds.push(match op {
                Op::Dispatch(d) => {
                    let pipeline = ctx.pipeline(d.kernel, &d.constants)?;
                    let at = slot * stride;
                    data[at as usize..at as usize + d.params.len()].copy_from_slice(&d.params);
                    slot += 1;
                    if let Some((layer, p)) = d.dropout {
                        let params: DropoutParams = bytemuck::pod_read_unaligned(&d.params);
                        let (numel, groups_x) = params.extent();
                        dropout.push((at, layer, numel, groups_x, p));
                    }
                    let size = d.params.len() as u64;
                    let key = (Arc::as_ptr(&pipeline) as usize, d.bindings.clone(), size);
                    let group = *index.entry(key).or_insert_with(|| {
                        groups.push(Group {
                            pipeline: pipeline.clone(),
                            bindings: d.bindings.clone(),
                            params_size: size,
                            bind: None,
                        });
                        groups.len() - 1
                    });
                    Cmd::Dispatch {
                        pipeline,
                        group,
                        offset: at as u32,
                        grid: d.grid,
                    }
                }
                Op::Copy(c) => Cmd::Copy(*c),
            });
        }
        recorded.push(Recorded {
            cmds,
            groups,
            grads_bound: None,
            dropout,
        });
    }
    let uniforms = ctx.create_buffer(
        "uniform slots",
        data.len() as u64,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    )?;
    ctx.queue().write_buffer(&uniforms, 0, &data);
    Ok((uniforms, recorded))
}

fn missing(b: Buf) -> Error {
    Error::Internal(format!("schedule binds {b:?}, which is not there"))
}

/// Bind what is not bound yet (or binds gradients that changed).
fn bind<'a>(
    ctx: &Context,
    list: &mut Recorded,
    uniforms: &wgpu::Buffer,
    resolve: &dyn Fn(Buf) -> Option<&'a wgpu::Buffer>,
) -> Result<()> {
    // The caller's gradient buffers, in the order the groups meet them.
    let grads: Vec<wgpu::Buffer> = list
        .groups
        .iter()
        .flat_map(|g| g.bindings.iter())
        .filter(|b| matches!(b, Buf::Grad(..)))
        .map(|&b| resolve(b).cloned().ok_or_else(|| missing(b)))
        .collect::<Result<_>>()?;
    let grads_changed = list.grads_bound.as_ref() != Some(&grads);
    for g in &mut list.groups {
        let binds_grads = g.bindings.iter().any(|b| matches!(b, Buf::Grad(..)));
        if g.bind.is_some() && !(binds_grads && grads_changed) {
            continue;
        }
        let bufs = g
            .bindings
            .iter()
            .map(|&b| resolve(b).ok_or_else(|| missing(b)))
            .collect::<Result<Vec<_>>>()?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniforms,
                offset: 0,
                size: wgpu::BufferSize::new(g.params_size),
            }),
        }];
        entries.extend(bufs.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: b.as_entire_binding(),
        }));
        g.bind = Some(ctx.create_bind_group("schedule", &g.pipeline.layout, &entries));
    }
    list.grads_bound = Some(grads);
    Ok(())
}

/// Record every command of a bound list (copies from `preloaded` skipped).
fn replay<'a>(
    encoder: &mut wgpu::CommandEncoder,
    list: &Recorded,
    preloaded: Option<Io>,
    resolve: &dyn Fn(Buf) -> Option<&'a wgpu::Buffer>,
) -> Result<()> {
    let mut pass: Option<wgpu::ComputePass<'static>> = None;
    for cmd in &list.cmds {
        match cmd {
            Cmd::Dispatch {
                pipeline,
                group,
                offset,
                grid,
            } => {
                let p = pass.get_or_insert_with(|| {
                    crate::gpu::dispatch::compute_pass(encoder, "rnn").forget_lifetime()
                });
                p.set_pipeline(&pipeline.pipeline);
                p.set_bind_group(0, list.groups[*group].bind.as_ref(), &[*offset]);
                p.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
            &Cmd::Copy(BufferCopy {
                src,
                src_at,
                dst,
                dst_at,
                bytes,
            }) => {
                if preloaded.is_some_and(|io| src == Buf::Io(io)) {
                    continue;
                }
                pass = None;
                match (resolve(src), resolve(dst)) {
                    (Some(s), Some(d)) => {
                        encoder.copy_buffer_to_buffer(s, src_at, d, dst_at, bytes)
                    }
                    // A boundary input the caller did not give is zeros.
                    (None, Some(d)) if matches!(src, Buf::Io(_)) => {
                        encoder.clear_buffer(d, dst_at, Some(bytes))
                    }
                    // A boundary output the caller did not ask for is skipped.
                    (_, None) if matches!(dst, Buf::Io(_)) => {}
                    (None, _) => return Err(missing(src)),
                    (_, None) => return Err(missing(dst)),
                }
            }
        }
    }
    drop(pass);
    Ok(())
}

/// Record `ops` once into `encoder`, with `tensors[i]` as scratch buffer `i` (the kernels'
/// stand-alone entry points: [`crate::gpu::gemm::record_gemm`], `apply_dropout`). Makes its
/// uniform buffer and bind groups for this call only.
pub(crate) fn record_once(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    tensors: &[&GpuTensor],
    ops: &[Op],
    label: &str,
) -> Result<()> {
    let limits = crate::gpu::plan::PlanLimits::of(ctx.limits());
    for op in ops {
        let Op::Dispatch(d) = op else { continue };
        limits.fits_grid(d)?;
        for b in &d.bindings {
            if let Buf::Scratch(i) = b {
                limits.fits_binding(label, tensors[*i as usize].buffer().size())?;
            }
        }
    }
    let owned: Vec<Vec<Op>> = vec![ops.to_vec()];
    let lists: Vec<&Vec<Op>> = owned.iter().collect();
    let (uniforms, mut recorded) = prepare(ctx, &lists)?;
    let resolve = |b: Buf| match b {
        Buf::Scratch(i) => tensors.get(i as usize).map(|t| t.buffer()),
        _ => None,
    };
    bind(ctx, &mut recorded[0], &uniforms, &resolve)?;
    replay(encoder, &recorded[0], None, &resolve)
}
