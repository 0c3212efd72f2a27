//! One convolution for every network: [`conv2d`].
//!
//! Backends with kernels of their own implement [`ConvKernels`] (forward, backward-data,
//! backward-filter on primitives); [`conv2d`] uses them, and their autodiff wrapper
//! (`Autodiff<K>`, whose backward calls the same kernels), wherever the shape and dtype
//! allow, and burn's own `conv2d` everywhere else: the flex CPU backend (im2col + GEMM,
//! `cpu`) and, with the `cudnn` feature, the CUDA backend with or without fusion (`cudnn`).
//!
//! The backend is recognised by its type at run time, so generic code needs no extra bound:
//! a network generic over `B: Backend` gets the fast path when `B` is `Flex` or
//! `Autodiff<Flex>`. `EWS_KERNELS=burn` turns the fast path off (for comparisons and as an
//! escape hatch).

pub mod autodiff;
#[cfg(feature = "flex")]
pub mod cpu;
#[cfg(feature = "cudnn")]
pub mod cudnn;
pub mod cudnn_library;
#[cfg(feature = "flex")]
mod flex;
mod geometry;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, PaddedConvOptions};
#[cfg(any(feature = "flex", feature = "cudnn"))]
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};

pub use geometry::ConvGeometry;

pub use crate::dispatch::{fast_kernels_enabled, with_burn_kernels};
use crate::dispatch::{float, is, is_or_wraps, same_type};

/// A backend with convolution kernels of its own, used by [`conv2d`] in place of burn's.
pub trait ConvKernels: Backend {
    /// What runs the convolutions, as `ews backend` prints it.
    const KERNELS: &'static str;

    /// Whether the kernels take these operands (dtype, device) and this geometry; burn's
    /// convolution runs otherwise.
    fn conv_supports(
        x: &FloatTensor<Self>,
        weight: &FloatTensor<Self>,
        bias: Option<&FloatTensor<Self>>,
        geometry: &ConvGeometry,
    ) -> bool;

    /// `[n, cout, oh, ow]` from `x` `[n, cin, h, w]`, `weight` `[cout, cin, kh, kw]` and an
    /// optional `bias` `[cout]`.
    fn conv_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        geometry: &ConvGeometry,
    ) -> FloatTensor<Self>;

    /// The input gradient `[n, cin, h, w]` from the output gradient `dy`.
    fn conv_backward_data(
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        geometry: &ConvGeometry,
    ) -> FloatTensor<Self>;

    /// The weight gradient `[cout, cin, kh, kw]` from the output gradient `dy`.
    fn conv_backward_filter(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        geometry: &ConvGeometry,
    ) -> FloatTensor<Self>;

    /// The bias gradient `[cout]` from the output gradient `dy`.
    fn conv_backward_bias(dy: FloatTensor<Self>, geometry: &ConvGeometry) -> FloatTensor<Self>;
}

/// What computes an f32 convolution on backend `B` (on its default device): the name of its
/// kernels, or burn's.
pub fn kernels_of<B: Backend>() -> String {
    if !fast_kernels_enabled() {
        return "burn's conv2d (EWS_KERNELS=burn)".into();
    }
    #[cfg(feature = "flex")]
    if is_or_wraps::<B, burn_flex::Flex>() {
        return <burn_flex::Flex as ConvKernels>::KERNELS.into();
    }
    #[cfg(feature = "cudnn")]
    if is_or_wraps::<B, cudnn::CubeCuda>() || is_or_wraps::<B, cudnn::FusionCuda>() {
        return cudnn::describe(&Default::default());
    }
    "burn's conv2d".into()
}

/// `conv2d(x, weight, bias)` with `options`, on the backend's own kernels where it has them
/// (see the module documentation), else burn's.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: PaddedConvOptions<2>,
) -> Tensor<B, 4> {
    let geometry =
        ConvGeometry::new(x.dims(), weight.dims(), &options).filter(|_| fast_kernels_enabled());
    let Some(geometry) = geometry else {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    };
    let operands = Operands {
        x: x.into_primitive().tensor(),
        weight: weight.into_primitive().tensor(),
        bias: bias.map(|b| b.into_primitive().tensor()),
    };
    match try_kernels::<B>(operands, &geometry) {
        Ok(y) => float(y),
        Err(operands) => burn::tensor::module::conv2d(
            float(operands.x),
            float(operands.weight),
            operands.bias.map(float),
            options,
        ),
    }
}

/// The three operands of a convolution, as primitives of backend `B`.
pub struct Operands<B: Backend> {
    /// The input `[n, cin, h, w]`.
    pub x: FloatTensor<B>,
    /// The weight `[cout, cin, kh, kw]`.
    pub weight: FloatTensor<B>,
    /// The bias `[cout]`.
    pub bias: Option<FloatTensor<B>>,
}

/// One way to run a convolution: the result, or the operands handed back untouched.
type Attempt<B> = fn(Operands<B>, &ConvGeometry) -> Result<FloatTensor<B>, Operands<B>>;

/// Runs the convolution on the first kernels that take backend `B`, or hands the operands
/// back.
fn try_kernels<B: Backend>(
    mut operands: Operands<B>,
    geometry: &ConvGeometry,
) -> Result<FloatTensor<B>, Operands<B>> {
    let attempts: &[Attempt<B>] = &[
        #[cfg(feature = "flex")]
        on_kernels::<B, burn_flex::Flex>,
        #[cfg(feature = "flex")]
        autodiff::on_kernels::<B, burn_flex::Flex, NoCheckpointing>,
        #[cfg(feature = "flex")]
        autodiff::on_kernels::<B, burn_flex::Flex, BalancedCheckpointing>,
        #[cfg(feature = "cudnn")]
        on_kernels::<B, cudnn::FusionCuda>,
        #[cfg(feature = "cudnn")]
        autodiff::on_kernels::<B, cudnn::FusionCuda, NoCheckpointing>,
        #[cfg(feature = "cudnn")]
        autodiff::on_kernels::<B, cudnn::FusionCuda, BalancedCheckpointing>,
        #[cfg(feature = "cudnn")]
        on_kernels::<B, cudnn::CubeCuda>,
        #[cfg(feature = "cudnn")]
        autodiff::on_kernels::<B, cudnn::CubeCuda, NoCheckpointing>,
        #[cfg(feature = "cudnn")]
        autodiff::on_kernels::<B, cudnn::CubeCuda, BalancedCheckpointing>,
    ];
    for attempt in attempts {
        match attempt(operands, geometry) {
            Ok(y) => return Ok(y),
            Err(back) => operands = back,
        }
    }
    Err(operands)
}

/// Runs on `K`'s kernels if `B` is `K` and the kernels take the operands.
fn on_kernels<B: Backend, K: ConvKernels>(
    operands: Operands<B>,
    geometry: &ConvGeometry,
) -> Result<FloatTensor<B>, Operands<B>> {
    if !is::<B, K>() {
        return Err(operands);
    }
    let operands: Operands<K> = same_type(operands);
    if !K::conv_supports(
        &operands.x,
        &operands.weight,
        operands.bias.as_ref(),
        geometry,
    ) {
        return Err(same_type(operands));
    }
    let y = K::conv_forward(operands.x, operands.weight, operands.bias, geometry);
    Ok(same_type(y))
}
