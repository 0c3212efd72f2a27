//! The cuDNN calls of one convolution on raw device pointers: descriptors, the algorithm
//! (chosen once per shape), the workspace size and the launch, on a cuDNN handle and stream
//! of the calling thread (cuDNN handles must not be shared between threads).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cudarc::cudnn::result::{self as cudnn, CudnnError};
use cudarc::cudnn::sys;
use cudarc::driver::result as driver;

use super::super::ConvGeometry;

/// Which of the three convolution passes runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx` from `w` and `dy`.
    BackwardData,
    /// `dw` from `x` and `dy`.
    BackwardFilter,
}

impl Direction {
    /// The shape the pass writes: `y` forward, `dx` backward-data, `dw` backward-filter.
    pub fn written_shape(self, geometry: &ConvGeometry) -> [usize; 4] {
        match self {
            Self::Forward => geometry.output_shape(),
            Self::BackwardData => geometry.input_shape(),
            Self::BackwardFilter => geometry.weight_shape(),
        }
    }
}

/// The number format of the operands (accumulation is always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Element {
    /// f32, with TF32 tensor cores where allowed (as PyTorch's default).
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl Element {
    fn data_type(self) -> sys::cudnnDataType_t {
        match self {
            Self::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            Self::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
            Self::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        }
    }

    /// The math cuDNN may use: tensor cores for 16-bit data, TF32 for f32 unless
    /// `EWS_CUDNN_TF32=0` (PyTorch's `allow_tf32 = False`).
    fn math(self) -> sys::cudnnMathType_t {
        match self {
            Self::F32 if tf32_allowed() => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
            Self::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
            Self::Bf16 | Self::F16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        }
    }
}

/// Whether cuDNN may use TF32 for f32 convolutions (`EWS_CUDNN_TF32=0` says no).
pub fn tf32_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("EWS_CUDNN_TF32").map_or(true, |v| v != "0"))
}

static BENCHMARK: AtomicBool = AtomicBool::new(false);

/// Chooses algorithms by timing every candidate once per shape (PyTorch's
/// `cudnn.benchmark = True`) instead of by cuDNN's heuristic.
pub fn set_benchmark(on: bool) {
    BENCHMARK.store(on, Ordering::Relaxed);
}

/// Whether algorithms are chosen by timing (see [`set_benchmark`]).
pub fn benchmark() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    BENCHMARK.load(Ordering::Relaxed)
        || *FROM_ENV.get_or_init(|| std::env::var("EWS_CUDNN_BENCHMARK").is_ok_and(|v| v == "1"))
}

/// Device pointers of one call: the convolution's input, filter and output. The pass writes
/// one of them (`y` forward, `x` backward-data, `w` backward-filter) and reads the others.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// The input `[n, cin, h, w]` (or its gradient).
    pub x: u64,
    /// The filter `[cout, cin, kh, kw]` (or its gradient).
    pub w: u64,
    /// The output `[n, cout, oh, ow]` (or its gradient).
    pub y: u64,
}

impl Buffers {
    /// The buffers of `direction` from its two operands, `(x, w)` forward, `(w, dy)`
    /// backward-data and `(x, dy)` backward-filter, and the buffer it writes.
    pub fn arrange(direction: Direction, a: u64, b: u64, written: u64) -> Self {
        match direction {
            Direction::Forward => Self {
                x: a,
                w: b,
                y: written,
            },
            Direction::BackwardData => Self {
                w: a,
                y: b,
                x: written,
            },
            Direction::BackwardFilter => Self {
                x: a,
                y: b,
                w: written,
            },
        }
    }
}

/// An algorithm of one pass and the math it was chosen with.
#[derive(Clone, Copy, Debug)]
enum Algorithm {
    Forward(sys::cudnnConvolutionFwdAlgo_t, sys::cudnnMathType_t),
    BackwardData(sys::cudnnConvolutionBwdDataAlgo_t, sys::cudnnMathType_t),
    BackwardFilter(sys::cudnnConvolutionBwdFilterAlgo_t, sys::cudnnMathType_t),
}

/// What an algorithm was chosen for: device, pass, shape, dtype, timed, TF32.
type Key = (usize, Direction, ConvGeometry, Element, bool, bool);

/// Algorithms chosen so far, shared by all threads.
static CHOSEN: Mutex<Option<HashMap<Key, Algorithm>>> = Mutex::new(None);

/// The calling thread's cuDNN handle and stream on one device.
#[derive(Clone, Copy)]
struct ThreadHandle {
    handle: sys::cudnnHandle_t,
    stream: cudarc::driver::sys::CUstream,
    context: cudarc::driver::sys::CUcontext,
}

thread_local! {
    // Kept for the thread's life: destroying handles at exit can race the driver's teardown.
    static HANDLES: RefCell<HashMap<usize, ThreadHandle>> = RefCell::new(HashMap::new());
}

fn error(call: &str) -> impl Fn(CudnnError) -> String + '_ {
    move |e| format!("{call}: {:?}", e.0)
}

fn driver_error(call: &str) -> impl Fn(cudarc::driver::DriverError) -> String + '_ {
    move |e| format!("{call}: {e:?}")
}

/// The calling thread's handle on device `index`, in the primary context cubecl uses.
fn thread_handle(index: usize) -> Result<ThreadHandle, String> {
    if let Some(found) = HANDLES.with(|h| h.borrow().get(&index).copied()) {
        // SAFETY: the context was retained when the handle was made and is never released.
        unsafe { driver::ctx::set_current(found.context) }
            .map_err(driver_error("cuCtxSetCurrent"))?;
        return Ok(found);
    }
    driver::init().map_err(driver_error("cuInit"))?;
    let device = driver::device::get(index as i32).map_err(driver_error("cuDeviceGet"))?;
    // SAFETY: `device` is valid; the primary context is retained for the process's life.
    let context = unsafe { driver::primary_ctx::retain(device) }
        .map_err(driver_error("cuDevicePrimaryCtxRetain"))?;
    // SAFETY: `context` was just retained.
    unsafe { driver::ctx::set_current(context) }.map_err(driver_error("cuCtxSetCurrent"))?;
    let stream = driver::stream::create(driver::stream::StreamKind::NonBlocking)
        .map_err(driver_error("cuStreamCreate"))?;
    let handle = cudnn::create_handle().map_err(error("cudnnCreate"))?;
    // SAFETY: both the handle and the stream were just created.
    unsafe { cudnn::set_stream(handle, stream as _) }.map_err(error("cudnnSetStream"))?;
    let made = ThreadHandle {
        handle,
        stream,
        context,
    };
    HANDLES.with(|h| h.borrow_mut().insert(index, made));
    Ok(made)
}

/// The four descriptors of one convolution, destroyed on drop.
struct Descriptors {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each descriptor is either null or was created by `Descriptors::new` and is
        // destroyed only here. Errors on destruction cannot be acted on.
        unsafe {
            if !self.x.is_null() {
                let _ = cudnn::destroy_tensor_descriptor(self.x);
            }
            if !self.y.is_null() {
                let _ = cudnn::destroy_tensor_descriptor(self.y);
            }
            if !self.w.is_null() {
                let _ = cudnn::destroy_filter_descriptor(self.w);
            }
            if !self.conv.is_null() {
                let _ = cudnn::destroy_convolution_descriptor(self.conv);
            }
        }
    }
}

/// `value` as a C int, or an error naming what overflowed.
fn int(value: usize, what: &str) -> Result<i32, String> {
    i32::try_from(value).map_err(|_| format!("{what} {value} exceeds cuDNN's 32-bit sizes"))
}

fn dims(shape: [usize; 4], what: &str) -> Result<[i32; 4], String> {
    let mut out = [0; 4];
    for (o, s) in out.iter_mut().zip(shape) {
        *o = int(s, what)?;
    }
    Ok(out)
}

impl Descriptors {
    /// Packed NCHW descriptors of `geometry` (symmetric padding, one group).
    fn new(geometry: &ConvGeometry, element: Element) -> Result<Self, String> {
        let mut made = Self {
            x: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
        };
        let format = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let data = element.data_type();
        made.x = cudnn::create_tensor_descriptor().map_err(error("cudnnCreateTensorDescriptor"))?;
        made.y = cudnn::create_tensor_descriptor().map_err(error("cudnnCreateTensorDescriptor"))?;
        made.w = cudnn::create_filter_descriptor().map_err(error("cudnnCreateFilterDescriptor"))?;
        made.conv = cudnn::create_convolution_descriptor()
            .map_err(error("cudnnCreateConvolutionDescriptor"))?;
        let [pad_h, pad_w] = geometry.pad_start.map(|p| p as i32);
        let [stride_h, stride_w] = geometry.stride.map(|s| s as i32);
        let [dilation_h, dilation_w] = geometry.dilation.map(|d| d as i32);
        // SAFETY: the descriptors were just created and are owned by `made`.
        unsafe {
            let tensor4d = |desc, shape, what| {
                let dims = dims(shape, what)?;
                cudnn::set_tensor4d_descriptor(desc, format, data, dims)
                    .map_err(error("cudnnSetTensor4dDescriptor"))
            };
            tensor4d(made.x, geometry.input_shape(), "input size")?;
            tensor4d(made.y, geometry.output_shape(), "output size")?;
            cudnn::set_filter4d_descriptor(
                made.w,
                data,
                format,
                dims(geometry.weight_shape(), "filter size")?,
            )
            .map_err(error("cudnnSetFilter4dDescriptor"))?;
            cudnn::set_convolution2d_descriptor(
                made.conv,
                pad_h,
                pad_w,
                stride_h,
                stride_w,
                dilation_h,
                dilation_w,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )
            .map_err(error("cudnnSetConvolution2dDescriptor"))?;
            cudnn::set_convolution_math_type(made.conv, element.math())
                .map_err(error("cudnnSetConvolutionMathType"))?;
        }
        Ok(made)
    }
}

/// The most workspace one pass may take, in bytes: `EWS_CUDNN_WORKSPACE_MIB`, default 1 GiB
/// (faster algorithms that need more, such as some FFT ones, are passed over, as in PyTorch).
pub fn workspace_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mib = std::env::var("EWS_CUDNN_WORKSPACE_MIB").ok();
        mib.and_then(|v| v.parse::<usize>().ok()).unwrap_or(1024) << 20
    })
}

/// The first usable entry of cuDNN's ranked list: a successful one within the workspace
/// limit, and (for f32 without TF32) one without tensor-core math.
macro_rules! first_usable {
    ($perfs:expr, $returned:expr, $element:expr) => {
        $perfs[..$returned.max(0) as usize]
            .iter()
            .find(|perf| {
                perf.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                    && perf.memory <= workspace_limit()
                    && ($element != Element::F32
                        || tf32_allowed()
                        || perf.mathType == sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
                        || perf.mathType == sys::cudnnMathType_t::CUDNN_FMA_MATH)
            })
            .map(|perf| (perf.algo, perf.mathType))
    };
}

/// How many ranked candidates to ask cuDNN for (more than it has for any pass).
const CANDIDATES: usize = 16;

/// Ranks the candidates of `direction`: by timing each when `timed`, else by heuristic.
fn rank(
    handle: sys::cudnnHandle_t,
    d: &Descriptors,
    direction: Direction,
    element: Element,
    timed: bool,
) -> Result<Option<Algorithm>, sys::cudnnStatus_t> {
    let mut returned = 0;
    let asked = CANDIDATES as i32;
    // SAFETY: the descriptors are live; each perf array holds `CANDIDATES` entries, which
    // cuDNN fills up to `returned`. The structs are plain C data, valid when zeroed.
    unsafe {
        match direction {
            Direction::Forward => {
                let mut perfs: [sys::cudnnConvolutionFwdAlgoPerf_t; CANDIDATES] =
                    std::mem::zeroed();
                let call = if timed {
                    sys::cudnnFindConvolutionForwardAlgorithm
                } else {
                    sys::cudnnGetConvolutionForwardAlgorithm_v7
                };
                call(
                    handle,
                    d.x,
                    d.w,
                    d.conv,
                    d.y,
                    asked,
                    &mut returned,
                    perfs.as_mut_ptr(),
                )
                .result()
                .map_err(|e| e.0)?;
                Ok(first_usable!(perfs, returned, element).map(|(a, m)| Algorithm::Forward(a, m)))
            }
            Direction::BackwardData => {
                let mut perfs: [sys::cudnnConvolutionBwdDataAlgoPerf_t; CANDIDATES] =
                    std::mem::zeroed();
                let call = if timed {
                    sys::cudnnFindConvolutionBackwardDataAlgorithm
                } else {
                    sys::cudnnGetConvolutionBackwardDataAlgorithm_v7
                };
                call(
                    handle,
                    d.w,
                    d.y,
                    d.conv,
                    d.x,
                    asked,
                    &mut returned,
                    perfs.as_mut_ptr(),
                )
                .result()
                .map_err(|e| e.0)?;
                Ok(first_usable!(perfs, returned, element)
                    .map(|(a, m)| Algorithm::BackwardData(a, m)))
            }
            Direction::BackwardFilter => {
                let mut perfs: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; CANDIDATES] =
                    std::mem::zeroed();
                let call = if timed {
                    sys::cudnnFindConvolutionBackwardFilterAlgorithm
                } else {
                    sys::cudnnGetConvolutionBackwardFilterAlgorithm_v7
                };
                call(
                    handle,
                    d.x,
                    d.y,
                    d.conv,
                    d.w,
                    asked,
                    &mut returned,
                    perfs.as_mut_ptr(),
                )
                .result()
                .map_err(|e| e.0)?;
                Ok(first_usable!(perfs, returned, element)
                    .map(|(a, m)| Algorithm::BackwardFilter(a, m)))
            }
        }
    }
}

/// The algorithm for this pass and shape: from the cache, else ranked now (timed in benchmark
/// mode, falling back to the heuristic where timing fails, e.g. for lack of memory).
fn algorithm(
    index: usize,
    handle: sys::cudnnHandle_t,
    d: &Descriptors,
    direction: Direction,
    geometry: &ConvGeometry,
    element: Element,
) -> Result<Algorithm, String> {
    let timed = benchmark();
    let key = (index, direction, *geometry, element, timed, tf32_allowed());
    let mut chosen = CHOSEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = chosen.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(*found);
    }
    let ranked = match rank(handle, d, direction, element, timed) {
        Ok(Some(found)) => Some(found),
        _ if timed => rank(handle, d, direction, element, false)
            .map_err(|e| format!("{direction:?} heuristic: {e:?}"))?,
        Ok(None) => None,
        Err(e) => return Err(format!("{direction:?} heuristic: {e:?}")),
    };
    let found = ranked.ok_or_else(|| {
        format!("cuDNN has no {direction:?} algorithm for {geometry:?} in {element:?}")
    })?;
    chosen.get_or_insert_with(HashMap::new).insert(key, found);
    Ok(found)
}

/// One pass, prepared: its descriptors and algorithm on the calling thread's handle.
pub struct Prepared {
    handle: ThreadHandle,
    descriptors: Descriptors,
    algorithm: Algorithm,
    workspace: usize,
}

impl Prepared {
    /// Prepares `direction` of the convolution `geometry` on device `index`.
    pub fn new(
        index: usize,
        direction: Direction,
        geometry: &ConvGeometry,
        element: Element,
    ) -> Result<Self, String> {
        let handle = thread_handle(index)?;
        let descriptors = Descriptors::new(geometry, element)?;
        let algorithm = algorithm(
            index,
            handle.handle,
            &descriptors,
            direction,
            geometry,
            element,
        )?;
        let (h, d) = (handle.handle, &descriptors);
        let math = match algorithm {
            Algorithm::Forward(_, m)
            | Algorithm::BackwardData(_, m)
            | Algorithm::BackwardFilter(_, m) => m,
        };
        // SAFETY: the handle and descriptors are live.
        let workspace = unsafe {
            cudnn::set_convolution_math_type(d.conv, math)
                .map_err(error("cudnnSetConvolutionMathType"))?;
            match algorithm {
                Algorithm::Forward(a, _) => {
                    cudnn::get_convolution_forward_workspace_size(h, d.x, d.w, d.conv, d.y, a)
                }
                Algorithm::BackwardData(a, _) => {
                    cudnn::get_convolution_backward_data_workspace_size(h, d.w, d.y, d.conv, d.x, a)
                }
                Algorithm::BackwardFilter(a, _) => {
                    cudnn::get_convolution_backward_filter_workspace_size(
                        h, d.x, d.y, d.conv, d.w, a,
                    )
                }
            }
        }
        .map_err(error("cudnnGetConvolutionWorkspaceSize"))?;
        Ok(Self {
            handle,
            descriptors,
            algorithm,
            workspace,
        })
    }

    /// Bytes of scratch memory the launch needs.
    pub fn workspace_bytes(&self) -> usize {
        self.workspace
    }

    /// Queues the pass on `stream`; on [`Stream::Own`] also waits for it to finish.
    ///
    /// # Safety
    /// `buffers` must point to device memory of the prepared sizes and dtype, and `workspace`
    /// to `workspace_bytes()` bytes (or be 0 when that is 0). On [`Stream::Own`] none of it may
    /// be in use by other work until this returns; on [`Stream::Cubecl`] the memory must
    /// belong to that stream, which orders the pass with the stream's other work.
    pub unsafe fn launch(
        &self,
        buffers: Buffers,
        workspace: u64,
        stream: Stream,
    ) -> Result<(), String> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (alpha, beta) = (
            &alpha as *const f32 as *const c_void,
            &beta as *const f32 as *const c_void,
        );
        let (h, d) = (self.handle.handle, &self.descriptors);
        let (x, w, y) = (
            buffers.x as *mut c_void,
            buffers.w as *mut c_void,
            buffers.y as *mut c_void,
        );
        let (ws, ws_len) = (workspace as *mut c_void, self.workspace);
        let on = match stream {
            Stream::Cubecl(stream) => stream,
            Stream::Own => self.handle.stream,
        };
        // SAFETY: as the caller promises; the descriptors match the buffers.
        unsafe {
            cudnn::set_stream(h, on as _).map_err(error("cudnnSetStream"))?;
            match self.algorithm {
                Algorithm::Forward(a, _) => cudnn::convolution_forward(
                    h, alpha, d.x, x, d.w, w, d.conv, a, ws, ws_len, beta, d.y, y,
                ),
                Algorithm::BackwardData(a, _) => cudnn::convolution_backward_data(
                    h, alpha, d.w, w, d.y, y, d.conv, a, ws, ws_len, beta, d.x, x,
                ),
                Algorithm::BackwardFilter(a, _) => cudnn::convolution_backward_filter(
                    h, alpha, d.x, x, d.y, y, d.conv, a, ws, ws_len, beta, d.w, w,
                ),
            }
            .map_err(error("cudnnConvolution"))?;
            if matches!(stream, Stream::Own) {
                driver::stream::synchronize(on).map_err(driver_error("cuStreamSynchronize"))?;
            }
        }
        Ok(())
    }
}

/// The CUDA stream a pass runs on.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// cubecl's stream that owns the operands' memory (exposed by the patched cubecl-cuda):
    /// ordered with cubecl's kernels, no host synchronisation.
    Cubecl(cudarc::driver::sys::CUstream),
    /// A stream of the calling thread, with cubecl's work waited for before and the pass
    /// after (`EWS_CUDNN_STREAM=own`).
    Own,
}

/// Whether passes run on a stream of their own (`EWS_CUDNN_STREAM=own`) rather than cubecl's.
pub fn own_stream() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        std::env::var("EWS_CUDNN_STREAM").is_ok_and(|v| v.eq_ignore_ascii_case("own"))
    })
}
