//! How a [`Plan`] prints itself: every dispatch up to and including the first recurrent
//! step (kernel, grid, workgroups, threads, workgroup bytes, global bytes, what it does), then
//! per-kernel totals of each whole pass.

use std::collections::BTreeMap;
use std::fmt;

use crate::gpu::dispatch::{BufferCopy, Op, dispatch_geometry};
use crate::gpu::plan::Plan;

impl fmt::Display for Plan {
    /// Every dispatch up to and including the first recurrent step, then per-kernel totals of
    /// each whole pass.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        writeln!(
            f,
            "plan: {:?}, T = {}, B = {}, time chunk = {} steps, workspace {} buffers, {:.2} MiB",
            k.mode,
            k.steps,
            k.batch,
            self.chunk,
            self.buffers.len(),
            self.workspace_bytes() as f64 / (1 << 20) as f64
        )?;
        writeln!(f, "buffers:")?;
        for (i, b) in self.buffers.iter().enumerate() {
            writeln!(f, "  #{i:<3} {:<28} {:>12} bytes", b.name, b.words * 4)?;
        }
        let passes = [
            ("forward", Some(&self.forward)),
            ("backward", self.backward.as_ref().map(|b| &b[0])),
        ];
        for (name, ops) in passes {
            let Some(ops) = ops else { continue };
            writeln!(
                f,
                "{name}: every dispatch but those of the recurrent steps after the first:"
            )?;
            writeln!(
                f,
                "  {:<18} {:>16} {:>18} {:>7} {:>8} {:>12} {:>12}  what",
                "kernel", "grid", "", "threads", "wg bytes", "reads B", "writes B"
            )?;
            let first_step = ops.iter().find_map(|op| match op {
                Op::Dispatch(d) => d.step,
                _ => None,
            });
            let mut elided = 0;
            for op in ops {
                let Op::Dispatch(d) = op else { continue };
                if d.step.is_some() && d.step != first_step {
                    elided += 1;
                    continue;
                }
                let (threads, shared) = dispatch_geometry(d);
                let groups: u64 = d.grid.iter().map(|&n| n as u64).product();
                writeln!(
                    f,
                    "  {:<18} {:>16} {:>18} {:>7} {:>8} {:>12} {:>12}  {}",
                    d.kernel.name(),
                    format!("{}x{}x{}", d.grid[0], d.grid[1], d.grid[2]),
                    format!("workgroups={groups}"),
                    threads,
                    shared,
                    d.reads,
                    d.writes,
                    d.what
                )?;
            }
            if elided > 0 {
                writeln!(f, "  ... and {elided} dispatches of the other steps")?;
            }
            let mut totals: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
            let mut copies = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Dispatch(d) => {
                        let e = totals.entry(d.kernel.name()).or_default();
                        e.0 += 1;
                        e.1 += d.grid.iter().map(|&n| n as u64).product::<u64>();
                        e.2 += d.reads;
                        e.3 += d.writes;
                    }
                    Op::Copy(BufferCopy { bytes, .. }) => {
                        copies.0 += 1;
                        copies.1 += bytes;
                    }
                }
            }
            writeln!(f, "{name}: whole pass")?;
            writeln!(
                f,
                "  {:<18} {:>10} {:>12} {:>14} {:>14}",
                "kernel", "dispatches", "workgroups", "reads B", "writes B"
            )?;
            for (kernel, (n, groups, r, w)) in totals {
                writeln!(f, "  {kernel:<18} {n:>10} {groups:>12} {r:>14} {w:>14}")?;
            }
            writeln!(f, "  copies: {} ({} bytes)", copies.0, copies.1)?;
        }
        if self.forward_odd.is_some() {
            writeln!(
                f,
                "odd steps: the same ops, each layer's two state buffers swapped (the state \
                 ping-pongs; no step copies it)"
            )?;
        }
        Ok(())
    }
}
