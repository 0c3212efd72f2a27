//! [`ConvKernels`] for burn's flex CPU backend: the f32 kernels of [`super::cpu`].

use burn::tensor::DType;
use burn_flex::{Flex, FlexTensor};

use super::{ConvGeometry, ConvKernels, cpu};
use crate::flex_io::{contiguous, f32s, tensor};

impl ConvKernels for Flex {
    const KERNELS: &'static str = "ews im2col + gemm (f32, CPU)";

    fn conv_supports(
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: Option<&FlexTensor>,
        _geometry: &ConvGeometry,
    ) -> bool {
        let f32 = |t: &FlexTensor| t.dtype() == DType::F32;
        f32(x) && f32(weight) && bias.is_none_or(f32)
    }

    fn conv_forward(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        geometry: &ConvGeometry,
    ) -> FlexTensor {
        let (x, weight) = (contiguous(&x), contiguous(&weight));
        let bias = bias.as_ref().map(contiguous);
        let bias = bias.as_ref().map(f32s);
        let y = cpu::forward(geometry, f32s(&x), f32s(&weight), bias);
        tensor(y, geometry.output_shape())
    }

    fn conv_backward_data(
        weight: FlexTensor,
        dy: FlexTensor,
        geometry: &ConvGeometry,
    ) -> FlexTensor {
        let (weight, dy) = (contiguous(&weight), contiguous(&dy));
        let dx = cpu::backward_data(geometry, f32s(&weight), f32s(&dy));
        tensor(dx, geometry.input_shape())
    }

    fn conv_backward_filter(x: FlexTensor, dy: FlexTensor, geometry: &ConvGeometry) -> FlexTensor {
        let (x, dy) = (contiguous(&x), contiguous(&dy));
        let dw = cpu::backward_filter(geometry, f32s(&x), f32s(&dy));
        tensor(dw, geometry.weight_shape())
    }

    fn conv_backward_bias(dy: FlexTensor, geometry: &ConvGeometry) -> FlexTensor {
        let dy = contiguous(&dy);
        tensor(
            cpu::backward_bias(geometry, f32s(&dy)),
            [geometry.out_channels],
        )
    }
}
