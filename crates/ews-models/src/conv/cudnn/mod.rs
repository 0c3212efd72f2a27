//! cuDNN convolutions for burn's CUDA backend, with and without fusion.
//!
//! libcudnn (cuDNN 9) is loaded at run time through cudarc: the build needs neither CUDA nor
//! cuDNN, and where the library is missing, fails to load or fails a self-test the
//! convolutions stay on burn's kernels after one warning line ([`library`]). `EWS_CUDNN=off`
//! asks for burn's kernels; `EWS_CUDNN_TF32=0` forbids TF32 for f32 (allowed by default, as in
//! PyTorch); [`set_benchmark`] (or `EWS_CUDNN_BENCHMARK=1`) times the candidate algorithms once
//! per shape instead of taking cuDNN's heuristic.

mod api;
mod cube;
mod fusion;

pub use super::cudnn_library as library;

pub use api::{benchmark, own_stream, set_benchmark, tf32_allowed};
pub use cube::{CubeCuda, status};
pub use fusion::FusionCuda;
pub use library::CudnnStatus;

/// What runs the CUDA convolutions, as `ews backend` prints it: cuDNN's version, where it was
/// loaded from, and its stream, algorithm and TF32 settings; or why burn's kernels run.
pub fn describe(device: &cubecl::cuda::CudaDevice) -> String {
    let status = status(device);
    if !status.is_enabled() {
        return status.describe();
    }
    let stream = if own_stream() {
        "own stream, host-synchronised"
    } else {
        "on cubecl's stream"
    };
    let algorithms = if benchmark() { "timed" } else { "heuristic" };
    let tf32 = if tf32_allowed() { "on" } else { "off" };
    format!(
        "{} ({stream}; algorithms: {algorithms}; TF32 {tf32})",
        status.describe()
    )
}
