//! [`ConvKernels`] for burn's CUDA backend with fusion (`Fusion<CubeBackend<CudaRuntime>>`,
//! what `burn::backend::Cuda` is with burn's `fusion` feature): each pass is a custom
//! operation in the fusion stream, executed by the cuDNN pass of [`super::cube`] when the
//! stream reaches it, so the fusion queue is never drained early.

use burn::tensor::Shape;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use super::api::Direction;
use super::cube::{CubeCuda, add_bias, bias_grad, run_or_fallback, supports};
use crate::conv::{ConvGeometry, ConvKernels};

/// burn's CUDA backend with fusion.
pub type FusionCuda = Fusion<CubeCuda>;

type Runtime = <CubeCuda as FusionBackend>::FusionRuntime;
type Handles = HandleContainer<<Runtime as FusionRuntime>::FusionHandle>;
type Tensor = FusionTensor<Runtime>;

/// One cuDNN pass recorded in the fusion stream.
#[derive(Clone, Debug)]
struct CudnnPass {
    desc: CustomOpIr,
    direction: Direction,
    geometry: ConvGeometry,
}

impl Operation<Runtime> for CudnnPass {
    fn execute(&self, handles: &mut Handles) {
        let ([a, b], [out]) = self.desc.as_fixed();
        let a = handles.get_float_tensor::<CubeCuda>(a);
        let b = handles.get_float_tensor::<CubeCuda>(b);
        let y = run_or_fallback(self.direction, &self.geometry, a, b);
        handles.register_float_tensor::<CubeCuda>(&out.id, y);
    }
}

/// Records `direction` on operands `(a, b)` (as in [`super::cube::run`]) and returns its
/// output, still to be computed.
fn record(direction: Direction, geometry: &ConvGeometry, a: Tensor, b: Tensor) -> Tensor {
    let shape = direction.written_shape(geometry);
    let client = a.client.clone();
    let streams = OperationStreams::with_inputs([&a, &b]);
    let out = TensorIr::uninit(client.create_empty_handle(), Shape::from(shape), a.dtype);
    let name = match direction {
        Direction::Forward => "ews_cudnn_conv2d_forward",
        Direction::BackwardData => "ews_cudnn_conv2d_backward_data",
        Direction::BackwardFilter => "ews_cudnn_conv2d_backward_filter",
    };
    let desc = CustomOpIr::new(name, &[a.into_ir(), b.into_ir()], &[out]);
    let pass = CudnnPass {
        desc: desc.clone(),
        direction,
        geometry: *geometry,
    };
    client
        .register(streams, OperationIr::Custom(desc), pass)
        .output()
}

impl ConvKernels for FusionCuda {
    const KERNELS: &'static str = "cuDNN (CUDA, fusion)";

    fn conv_supports(
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        geometry: &ConvGeometry,
    ) -> bool {
        let mut dtypes = vec![x.dtype, weight.dtype];
        dtypes.extend(bias.map(|b| b.dtype));
        supports(&dtypes, geometry, x.client.device())
    }

    fn conv_forward(
        x: Tensor,
        weight: Tensor,
        bias: Option<Tensor>,
        geometry: &ConvGeometry,
    ) -> Tensor {
        let y = record(Direction::Forward, geometry, x, weight);
        match bias {
            Some(bias) => add_bias::<Self>(y, bias),
            None => y,
        }
    }

    fn conv_backward_data(weight: Tensor, dy: Tensor, geometry: &ConvGeometry) -> Tensor {
        record(Direction::BackwardData, geometry, weight, dy)
    }

    fn conv_backward_filter(x: Tensor, dy: Tensor, geometry: &ConvGeometry) -> Tensor {
        record(Direction::BackwardFilter, geometry, x, dy)
    }

    fn conv_backward_bias(dy: Tensor, geometry: &ConvGeometry) -> Tensor {
        bias_grad::<Self>(dy, geometry)
    }
}
