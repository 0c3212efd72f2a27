//! Reading and writing flex tensors as f32 slices, for the kernels of [`crate::conv`] and
//! [`crate::norm`].

use burn::tensor::{Shape, TensorData};
use burn_flex::FlexTensor;

/// `tensor` as contiguous storage (a view when it already is).
pub(crate) fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    tensor.to_contiguous()
}

/// The values of a contiguous f32 tensor.
pub(crate) fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("contiguous f32 tensor (dtype checked before dispatch)")
}

/// A tensor of `shape` holding `values`.
pub(crate) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}
