//! WGSL sources, composed once: every kernel gets `shaders/common/` prepended.

/// How a kernel binds each slot of group 0, in binding order
/// (uniforms, then read-only inputs, then outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    Uniform,
    DynamicUniform,
    Read,
    ReadWrite,
}

const ACTIVATIONS: &str = include_str!("../../shaders/common/activations.wgsl");
const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
const LSTM_STEP: &str = include_str!("../../shaders/lstm_step.wgsl");

/// Every compute kernel of the crate. Names, not strings, select pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// `shaders/gemm.wgsl`: tiled `C = A·B + bias`.
    Gemm,
    /// `shaders/lstm_step.wgsl`: one fused LSTM timestep.
    LstmStep,
}

impl Kernel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Gemm => "gemm",
            Kernel::LstmStep => "lstm_step",
        }
    }

    /// Full WGSL: the shared snippets, then the kernel's own file.
    pub(crate) fn source(self) -> String {
        let body = match self {
            Kernel::Gemm => GEMM,
            Kernel::LstmStep => LSTM_STEP,
        };
        format!("{ACTIVATIONS}\n{body}")
    }

    pub(crate) fn bindings(self) -> &'static [Binding] {
        use Binding::*;
        match self {
            Kernel::Gemm => &[Uniform, Read, Read, Read, ReadWrite],
            Kernel::LstmStep => &[DynamicUniform, Read, Read, Read, ReadWrite, ReadWrite],
        }
    }
}
