//! Max pooling and input normalisation for the networks, with an f32 CPU kernel for burn's
//! flex backend in inference.
//!
//! burn-flex 0.21 pools through its generic 3-D kernel, which also writes an index per output
//! and checks every tap's bounds: 38 ms for AlexNet's first pool on 31 frames at 224 px,
//! about as long as the convolution before it. Ours pools each row window first and then
//! the columns (9x faster there: 4.1 ms). Under autodiff burn's pooling runs, since its
//! backward needs the indices.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[cfg(feature = "flex")]
use burn::tensor::DType;

#[cfg(feature = "flex")]
use crate::dispatch::{fast_kernels_enabled, is, same_type};

/// `max_pool2d(x)` with a `kernel`, `stride` and zero `padding` (no dilation, floor mode):
/// ours on the flex backend for f32 (see the module documentation), burn's everywhere else.
///
/// NaN propagates as in PyTorch: a window holding a NaN gives NaN (burn's kernel keeps the
/// window's largest number unless the NaN comes first).
pub fn max_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if is::<B, burn_flex::Flex>() && fast_kernels_enabled() && x.dtype() == DType::F32 {
        return same_type(flex_max_pool2d(same_type(x), kernel, stride, padding));
    }
    burn::tensor::module::max_pool2d(x, kernel, stride, padding, [1, 1], false)
}

/// `(x - mean) / std` with per-channel `mean` and `std` of shape `[1, c, 1, 1]`.
///
/// The statistics are repeated over the batch first: broadcast over both the batch and the
/// pixels, burn-flex's binary ops fall back to an element-by-element strided walk (79 ms for
/// 31 frames at 224 px, against ~3 ms with one statistic row per image). Same values either
/// way.
pub fn normalise_input<B: Backend>(
    x: Tensor<B, 4>,
    mean: &Tensor<B, 4>,
    std: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let batch = x.dims()[0];
    let per_image = |t: &Tensor<B, 4>| {
        if batch > 1 {
            t.clone().repeat_dim(0, batch)
        } else {
            t.clone()
        }
    };
    (x - per_image(mean)) / per_image(std)
}

#[cfg(feature = "flex")]
fn flex_max_pool2d(
    x: Tensor<burn_flex::Flex, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Tensor<burn_flex::Flex, 4> {
    use crate::dispatch::float;
    use crate::flex_io::{contiguous, f32s, tensor};

    let [n, c, h, w] = x.dims();
    let x = contiguous(&x.into_primitive().tensor());
    let (y, [oh, ow]) = cpu::max_pool2d(f32s(&x), [n * c, h, w], kernel, stride, padding);
    float(tensor(y, [n, c, oh, ow]))
}

/// The f32 kernel on contiguous NCHW slices.
#[cfg(feature = "flex")]
pub mod cpu {
    use rayon::prelude::*;

    /// Output size of one axis (floor mode), as PyTorch computes it.
    fn out_len(len: usize, kernel: usize, stride: usize, padding: usize) -> usize {
        assert!(
            kernel > 0 && stride > 0 && padding * 2 <= kernel,
            "max pool: kernel {kernel}, stride {stride}, padding {padding} (padding must be at \
             most half the kernel, as in PyTorch)"
        );
        let padded = len + 2 * padding;
        assert!(
            padded >= kernel,
            "max pool: kernel {kernel} is larger than the padded input ({padded})"
        );
        (padded - kernel) / stride + 1
    }

    /// The larger of `a` and `b`, NaN if either is.
    #[inline]
    fn nan_max(a: f32, b: f32) -> f32 {
        if b > a || b.is_nan() { b } else { a }
    }

    /// The taps `start..end` of output position `o` on an axis of `len` (padding cut off).
    fn window(o: usize, [kernel, stride, padding]: [usize; 3], len: usize) -> (usize, usize) {
        let first = o * stride;
        let start = first.saturating_sub(padding);
        let end = (first + kernel).saturating_sub(padding).min(len);
        (start, end)
    }

    /// Max pooling of `planes` planes of `h x w` values; returns the pooled planes and their
    /// `[oh, ow]`.
    pub fn max_pool2d(
        x: &[f32],
        [planes, h, w]: [usize; 3],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> (Vec<f32>, [usize; 2]) {
        assert_eq!(x.len(), planes * h * w, "max pool: input length");
        assert!(h > 0 && w > 0, "max pool: empty {h} x {w} planes");
        let oh = out_len(h, kernel[0], stride[0], padding[0]);
        let ow = out_len(w, kernel[1], stride[1], padding[1]);
        let mut y = vec![0.0; planes * oh * ow];
        if y.is_empty() {
            return (y, [oh, ow]);
        }
        let rows = [kernel[0], stride[0], padding[0]];
        let cols = [kernel[1], stride[1], padding[1]];
        x.par_chunks(h * w)
            .zip(y.par_chunks_mut(oh * ow))
            .with_min_len(4)
            .for_each_init(
                || vec![0.0f32; w],
                |row_max, (plane, out)| {
                    for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                        let (y0, y1) = window(oy, rows, h);
                        row_max.copy_from_slice(&plane[y0 * w..(y0 + 1) * w]);
                        for line in plane[(y0 + 1) * w..y1 * w].chunks_exact(w) {
                            for (m, &v) in row_max.iter_mut().zip(line) {
                                *m = nan_max(*m, v);
                            }
                        }
                        for (ox, o) in out_row.iter_mut().enumerate() {
                            let (x0, x1) = window(ox, cols, w);
                            *o = row_max[x0 + 1..x1]
                                .iter()
                                .fold(row_max[x0], |m, &v| nan_max(m, v));
                        }
                    }
                },
            );
        (y, [oh, ow])
    }
}
