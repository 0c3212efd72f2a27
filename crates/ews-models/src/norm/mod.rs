//! Batch normalisation as one fused operation: [`batch_norm`].
//!
//! As a chain of tensor operations (statistics, subtract, multiply, add, each broadcast over
//! `[1, C, 1, 1]`) batch norm costs several strided passes forward and more backward on the
//! flex CPU backend. Backends with kernels of their own implement [`NormKernels`]; their
//! autodiff wrapper records one node whose backward is the closed-form gradient. Other
//! backends get `None` from [`batch_norm`] and the caller's tensor-operation version runs.
//! `EWS_KERNELS=burn` turns the fused path off.

mod autodiff;
#[cfg(feature = "flex")]
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use crate::dispatch::{fast_kernels_enabled, float, is, is_or_wraps, same_type};

/// A backend with fused batch-norm kernels, used by [`batch_norm`].
pub trait NormKernels: Backend {
    /// Whether the kernels take these operands: the input `x` and the per-channel vectors
    /// (scale, shift, and given statistics).
    fn norm_supports(x: &FloatTensor<Self>, vectors: &[&FloatTensor<Self>]) -> bool;

    /// Per-channel mean and biased variance of `x` `[n, c, h, w]`.
    fn norm_stats(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(x - mean) / sqrt(var + eps) * gamma + beta` per channel.
    fn norm_forward(
        x: FloatTensor<Self>,
        stats: Statistics<Self>,
        affine: [FloatTensor<Self>; 2],
        eps: f64,
    ) -> FloatTensor<Self>;

    /// `(dx, dgamma, dbeta)` for the output gradient `dy`; with `batch_stats` the statistics
    /// are `x`'s own and their gradient flows into `dx`.
    fn norm_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        stats: Statistics<Self>,
        gamma: FloatTensor<Self>,
        eps: f64,
        batch_stats: bool,
    ) -> [FloatTensor<Self>; 3];
}

/// What computes an f32 batch norm on backend `B`.
pub fn kernels_of<B: Backend>() -> &'static str {
    if !fast_kernels_enabled() {
        return "burn's tensor operations (EWS_KERNELS=burn)";
    }
    #[cfg(feature = "flex")]
    if is_or_wraps::<B, burn_flex::Flex>() {
        return "ews fused kernel (f32, CPU)";
    }
    "burn's tensor operations"
}

/// Per-channel mean and (biased) variance.
#[derive(Clone, Debug)]
pub struct Statistics<B: Backend> {
    /// Mean `[c]`.
    pub mean: FloatTensor<B>,
    /// Variance `[c]`.
    pub var: FloatTensor<B>,
}

/// Where the statistics of a batch norm come from.
pub enum NormStats<B: Backend> {
    /// The batch itself (training and subnet passes).
    Batch,
    /// Given values, e.g. running statistics (evaluation): `(mean, var)`.
    Given(Tensor<B, 1>, Tensor<B, 1>),
}

/// The result of [`batch_norm`].
pub struct Normalized<B: Backend> {
    /// The normalised batch.
    pub output: Tensor<B, 4>,
    /// The batch's mean and biased variance (detached), when they were computed.
    pub batch_stats: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

/// The operands of one batch norm as primitives of backend `B`.
struct Operands<B: Backend> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    given: Option<Statistics<B>>,
    eps: f64,
}

impl<B: Backend> Operands<B> {
    /// The per-channel operands: scale, shift and the given statistics.
    fn vectors(&self) -> Vec<&FloatTensor<B>> {
        let mut vectors = vec![&self.gamma, &self.beta];
        if let Some(given) = &self.given {
            vectors.extend([&given.mean, &given.var]);
        }
        vectors
    }
}

/// Fused batch norm of `x` `[n, c, h, w]` with scale `gamma` and shift `beta` `[c]`, on the
/// backend's own kernels; `None` where it has none (the caller then composes tensor ops).
pub fn batch_norm<B: Backend>(
    x: &Tensor<B, 4>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    stats: &NormStats<B>,
    eps: f64,
) -> Option<Normalized<B>> {
    if !fast_kernels_enabled() || x.shape().num_elements() == 0 {
        return None;
    }
    let primitive = |t: Tensor<B, 1>| t.into_primitive().tensor();
    let operands = Operands {
        x: x.clone().into_primitive().tensor(),
        gamma: primitive(gamma.clone()),
        beta: primitive(beta.clone()),
        given: match stats {
            NormStats::Batch => None,
            NormStats::Given(mean, var) => Some(Statistics {
                mean: primitive(mean.clone()),
                var: primitive(var.clone()),
            }),
        },
        eps,
    };
    let (output, batch_stats) = try_kernels::<B>(operands)?;
    Some(Normalized {
        output: float(output),
        batch_stats: batch_stats.map(|s: Statistics<B>| (float(s.mean), float(s.var))),
    })
}

/// The output and, for batch statistics, the statistics.
type Output<B> = (FloatTensor<B>, Option<Statistics<B>>);

fn try_kernels<B: Backend>(operands: Operands<B>) -> Option<Output<B>> {
    #[cfg(feature = "flex")]
    {
        use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
        use burn_flex::Flex;
        if is::<B, Flex>() {
            return on_kernels::<Flex>(same_type(operands)).map(same_type);
        }
        if is::<B, burn_autodiff::Autodiff<Flex>>() {
            let operands = same_type(operands);
            return autodiff::on_kernels::<Flex, NoCheckpointing>(operands).map(same_type);
        }
        if is::<B, burn_autodiff::Autodiff<Flex, BalancedCheckpointing>>() {
            let operands = same_type(operands);
            return autodiff::on_kernels::<Flex, BalancedCheckpointing>(operands).map(same_type);
        }
    }
    let _ = operands;
    None
}

/// Forward on `K`'s kernels, without autodiff.
fn on_kernels<K: NormKernels>(operands: Operands<K>) -> Option<Output<K>> {
    if !K::norm_supports(&operands.x, &operands.vectors()) {
        return None;
    }
    let (stats, computed) = match operands.given {
        Some(given) => (given, false),
        None => {
            let (mean, var) = K::norm_stats(operands.x.clone());
            (Statistics { mean, var }, true)
        }
    };
    let affine = [operands.gamma, operands.beta];
    let y = K::norm_forward(operands.x, stats.clone(), affine, operands.eps);
    Some((y, computed.then_some(stats)))
}
