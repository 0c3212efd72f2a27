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
pub mod library;

pub use api::{benchmark, set_benchmark};
pub use cube::{CubeCuda, status};
pub use fusion::FusionCuda;
pub use library::CudnnStatus;
