//! [`ConvKernels`] for burn's CUDA backend without fusion (`CubeBackend<CudaRuntime>`):
//! cuDNN on the tensors' device memory.
//!
//! cuDNN runs on the CUDA stream that owns the output's memory, which the patched cubecl-cuda
//! exposes (`crates/patched/cubecl-cuda`): the stream orders cuDNN's reads and writes with
//! cubecl's kernels and with cubecl's reuse of freed memory, and nothing waits on the host.
//! `EWS_CUDNN_STREAM=own` runs each pass on a stream of the calling thread instead, waiting
//! for cubecl's pending work before and for cuDNN after (two host synchronisations a pass).

use burn::tensor::DType;
use burn::tensor::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::tensor::{Shape, Tensor, TensorPrimitive};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::{CudaDevice, CudaRuntime};

use super::api::{Buffers, Direction, Element, Prepared, Stream, own_stream};
use super::library::{CudnnStatus, status_or_probe};
use crate::conv::{ConvGeometry, ConvKernels};

/// burn's CUDA backend without fusion, as `burn::backend::Cuda` is without its `fusion`
/// feature.
pub type CubeCuda = CubeBackend<CudaRuntime, f32, i32, u8>;

type Cube = CubeTensor<CudaRuntime>;

/// The number format cuDNN computes `dtype` in, if it takes it.
pub(super) fn element(dtype: DType) -> Option<Element> {
    match dtype {
        DType::F32 => Some(Element::F32),
        DType::BF16 => Some(Element::Bf16),
        DType::F16 => Some(Element::F16),
        _ => None,
    }
}

/// Whether cuDNN takes operands of `dtypes` in `geometry`: one supported dtype, symmetric
/// padding, and (checked once per process, with a self-test on `device`) a loadable library.
pub(super) fn supports(dtypes: &[DType], geometry: &ConvGeometry, device: &CudaDevice) -> bool {
    let one_dtype = dtypes.windows(2).all(|pair| pair[0] == pair[1]);
    one_dtype
        && element(dtypes[0]).is_some()
        && geometry.pad_start == geometry.pad_end
        && status(device).is_enabled()
}

/// The process's cuDNN decision, probing on `device` the first time.
pub fn status(device: &CudaDevice) -> &'static CudnnStatus {
    status_or_probe(cudarc::cudnn::result::get_version, || self_test(device))
}

/// A 3x3 all-ones filter over a 4x4 all-ones image with padding 1: the centre of the output
/// sums nine ones.
fn self_test(device: &CudaDevice) -> Result<(), String> {
    let geometry = ConvGeometry::new([1, 1, 4, 4], [1, 1, 3, 3], &padded_options(1))
        .ok_or("self-test geometry")?;
    let x = Tensor::<CubeCuda, 4>::ones([1, 1, 4, 4], device);
    let w = Tensor::<CubeCuda, 4>::ones([1, 1, 3, 3], device);
    let y = run(Direction::Forward, &geometry, primitive(x), primitive(w))?;
    let y = Tensor::<CubeCuda, 4>::from_primitive(TensorPrimitive::Float(y));
    let values = y
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    match values.get(5) {
        Some(&centre) if (centre - 9.0).abs() < 1e-3 => Ok(()),
        other => Err(format!("a 3x3 sum of ones gave {other:?}, expected 9")),
    }
}

fn padded_options(padding: usize) -> burn::tensor::ops::PaddedConvOptions<2> {
    ConvOptions::new([1, 1], [padding, padding], [1, 1], 1).into()
}

fn primitive(tensor: Tensor<CubeCuda, 4>) -> Cube {
    tensor.into_primitive().tensor()
}

/// Runs `direction` on cuDNN. The operands are `(x, w)` forward, `(w, dy)` backward-data and
/// `(x, dy)` backward-filter.
pub(super) fn run(
    direction: Direction,
    geometry: &ConvGeometry,
    a: Cube,
    b: Cube,
) -> Result<Cube, String> {
    let (a, b) = (into_contiguous(a), into_contiguous(b));
    let (client, device, dtype) = (a.client.clone(), a.device.clone(), a.dtype);
    let element = element(dtype).ok_or_else(|| format!("dtype {dtype:?}"))?;
    if b.dtype != dtype {
        return Err(format!("operands in {dtype:?} and {:?}", b.dtype));
    }
    let shape = direction.written_shape(geometry);
    let prepared = Prepared::new(device.index, direction, geometry, element)?;
    let bytes = shape.iter().product::<usize>() * dtype.size();
    let output = client.empty(bytes);
    let workspace =
        (prepared.workspace_bytes() > 0).then(|| client.empty(prepared.workspace_bytes()));
    let pointer = |handle: &cubecl::server::Handle| {
        client
            .get_resource(handle.clone())
            .map_err(|e| format!("device pointer: {e:?}"))
    };
    // The resources keep their memory bound until the pass is done.
    let (ra, rb, ry) = (pointer(&a.handle)?, pointer(&b.handle)?, pointer(&output)?);
    let rw = workspace.as_ref().map(pointer).transpose()?;
    let (pa, pb, py) = (ra.resource().ptr, rb.resource().ptr, ry.resource().ptr);
    let buffers = Buffers::arrange(direction, pa, pb, py);
    let stream = if own_stream() {
        cubecl::future::block_on(client.sync()).map_err(|e| format!("cubecl sync: {e:?}"))?;
        Stream::Own
    } else {
        Stream::Cubecl(ry.resource().stream)
    };
    // SAFETY: the pointers are the live, contiguous buffers of the shapes `prepared` was made
    // for. On cubecl's stream the output and workspace were allocated from that stream's pool
    // and the inputs' producers were ordered before it by `get_resource`; on our own stream
    // cubecl's pending work has finished and `launch` waits for cuDNN before returning.
    unsafe { prepared.launch(buffers, rw.as_ref().map_or(0, |r| r.resource().ptr), stream) }?;
    drop((ra, rb, ry, rw));
    Ok(CubeTensor::new_contiguous(
        client,
        device,
        Shape::from(shape),
        output,
        dtype,
    ))
}

/// [`run`], or burn's kernel for the same pass where cuDNN fails (with one warning per
/// process).
pub(super) fn run_or_fallback(
    direction: Direction,
    geometry: &ConvGeometry,
    a: Cube,
    b: Cube,
) -> Cube {
    match run(direction, geometry, a.clone(), b.clone()) {
        Ok(out) => out,
        Err(why) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "warning: cuDNN {direction:?} failed for {geometry:?} ({why}); burn's kernel \
                     computes it (further failures are not reported)"
                )
            });
            burn_pass(direction, geometry, a, b)
        }
    }
}

/// burn's own kernel for `direction` (the operands as in [`run`]).
fn burn_pass(direction: Direction, geometry: &ConvGeometry, a: Cube, b: Cube) -> Cube {
    let options = ConvOptions::new(geometry.stride, geometry.pad_start, geometry.dilation, 1);
    let placeholder = |shape: [usize; 4], like: &Cube| {
        CubeCuda::float_empty(Shape::from(shape), &like.device, like.dtype.into())
    };
    match direction {
        Direction::Forward => CubeCuda::conv2d(a, b, None, options),
        Direction::BackwardData => {
            let x = placeholder(geometry.input_shape(), &a);
            CubeCuda::conv2d_x_backward(x, a, b, options)
        }
        Direction::BackwardFilter => {
            let w = placeholder(geometry.weight_shape(), &a);
            CubeCuda::conv2d_weight_backward(a, w, b, options)
        }
    }
}

/// `y + bias` broadcast over `[n, c, h, w]`, with burn's operations on backend `B`.
pub(super) fn add_bias<B: burn::tensor::backend::Backend>(
    y: burn::tensor::ops::FloatTensor<B>,
    bias: burn::tensor::ops::FloatTensor<B>,
) -> burn::tensor::ops::FloatTensor<B> {
    let y: Tensor<B, 4> = crate::dispatch::float(y);
    let bias: Tensor<B, 1> = crate::dispatch::float(bias);
    let channels = bias.dims()[0];
    (y + bias.reshape([1, channels, 1, 1]))
        .into_primitive()
        .tensor()
}

/// The bias gradient: `dy` summed over batch, rows and columns.
pub(super) fn bias_grad<B: burn::tensor::backend::Backend>(
    dy: burn::tensor::ops::FloatTensor<B>,
    geometry: &ConvGeometry,
) -> burn::tensor::ops::FloatTensor<B> {
    let dy: Tensor<B, 4> = crate::dispatch::float(dy);
    let summed = dy.sum_dim(0).sum_dim(2).sum_dim(3);
    summed
        .reshape([geometry.out_channels])
        .into_primitive()
        .tensor()
}

impl ConvKernels for CubeCuda {
    const KERNELS: &'static str = "cuDNN (CUDA)";

    fn conv_supports(
        x: &Cube,
        weight: &Cube,
        bias: Option<&Cube>,
        geometry: &ConvGeometry,
    ) -> bool {
        let mut dtypes = vec![x.dtype, weight.dtype];
        dtypes.extend(bias.map(|b| b.dtype));
        supports(&dtypes, geometry, &x.device)
    }

    fn conv_forward(x: Cube, weight: Cube, bias: Option<Cube>, geometry: &ConvGeometry) -> Cube {
        let y = run_or_fallback(Direction::Forward, geometry, x, weight);
        match bias {
            Some(bias) => add_bias::<Self>(y, bias),
            None => y,
        }
    }

    fn conv_backward_data(weight: Cube, dy: Cube, geometry: &ConvGeometry) -> Cube {
        run_or_fallback(Direction::BackwardData, geometry, weight, dy)
    }

    fn conv_backward_filter(x: Cube, dy: Cube, geometry: &ConvGeometry) -> Cube {
        run_or_fallback(Direction::BackwardFilter, geometry, x, dy)
    }

    fn conv_backward_bias(dy: Cube, geometry: &ConvGeometry) -> Cube {
        bias_grad::<Self>(dy, geometry)
    }
}
