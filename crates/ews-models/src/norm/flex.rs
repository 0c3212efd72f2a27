//! [`NormKernels`] for burn's flex CPU backend: the f32 kernels of [`super::cpu`].

use burn::tensor::DType;
use burn_flex::{Flex, FlexTensor};

use super::cpu::{self, Planes};
use super::{NormKernels, Statistics};
use crate::flex_io::{contiguous, f32s, tensor};

fn planes(x: &FlexTensor) -> Planes {
    let dims = x.layout().shape().to_vec();
    let [batch, channels, h, w] = dims[..] else {
        panic!("batch norm takes [n, c, h, w], got {dims:?}");
    };
    Planes {
        batch,
        channels,
        pixels: h * w,
    }
}

/// The contiguous copies (or views) of per-channel vectors.
fn vectors<const N: usize>(tensors: [&FlexTensor; N]) -> [FlexTensor; N] {
    tensors.map(contiguous)
}

impl NormKernels for Flex {
    fn norm_supports(x: &FlexTensor, vectors: &[&FlexTensor]) -> bool {
        let f32 = |t: &FlexTensor| t.dtype() == DType::F32;
        f32(x) && x.layout().shape().len() == 4 && vectors.iter().all(|v| f32(v))
    }

    fn norm_stats(x: FlexTensor) -> (FlexTensor, FlexTensor) {
        let p = planes(&x);
        let x = contiguous(&x);
        let (mean, var) = cpu::stats(&p, f32s(&x));
        (
            tensor(mean, vec![p.channels]),
            tensor(var, vec![p.channels]),
        )
    }

    fn norm_forward(
        x: FlexTensor,
        stats: Statistics<Flex>,
        [gamma, beta]: [FlexTensor; 2],
        eps: f64,
    ) -> FlexTensor {
        let p = planes(&x);
        let x = contiguous(&x);
        let [mean, var, gamma, beta] = vectors([&stats.mean, &stats.var, &gamma, &beta]);
        let parameters = [f32s(&mean), f32s(&var), f32s(&gamma), f32s(&beta)];
        let y = cpu::forward(&p, f32s(&x), parameters, eps);
        tensor(y, x.layout().shape().to_vec())
    }

    fn norm_backward(
        x: FlexTensor,
        dy: FlexTensor,
        stats: Statistics<Flex>,
        gamma: FlexTensor,
        eps: f64,
        batch_stats: bool,
    ) -> [FlexTensor; 3] {
        let p = planes(&x);
        let (x, dy) = (contiguous(&x), contiguous(&dy));
        let [mean, var, gamma] = vectors([&stats.mean, &stats.var, &gamma]);
        let parameters = [f32s(&mean), f32s(&var), f32s(&gamma)];
        let (dx, dgamma, dbeta) =
            cpu::backward(&p, f32s(&x), f32s(&dy), parameters, eps, batch_stats);
        [
            tensor(dx, x.layout().shape().to_vec()),
            tensor(dgamma, vec![p.channels]),
            tensor(dbeta, vec![p.channels]),
        ]
    }
}
