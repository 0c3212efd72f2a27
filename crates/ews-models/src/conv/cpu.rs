//! f32 convolution kernels for the CPU: im2col / col2im around a pure-Rust GEMM (the `gemm`
//! crate, which burn-flex and candle also use), on contiguous NCHW slices.
//!
//! The batch is cut into groups of images whose im2col matrices sit side by side, so one
//! GEMM covers a whole group: late layers (4x4 pixels at 32 px) would otherwise read the
//! full weight once per image. Groups run in parallel on rayon's pool; a batch that makes
//! fewer groups than threads lets the GEMMs use the idle threads. The im2col buffers live in
//! per-thread scratch that grows once and is reused by every later call.

use std::cell::RefCell;

use gemm::Parallelism;
use rayon::prelude::*;

use super::geometry::ConvGeometry;

/// Columns (images x output pixels) one GEMM should cover before images are grouped.
const TARGET_COLUMNS: usize = 256;
/// Most elements of one group's im2col matrix (64 MiB of f32).
const COLUMN_BUDGET: usize = 1 << 24;

thread_local! {
    /// im2col matrix of the group this thread works on.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A group's output gradient (or output) as one `[out_channels, columns]` matrix.
    static GATHERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch `cell`, grown to at least `len` elements.
///
/// A thread that waits inside a parallel GEMM can pick up another convolution's work while
/// its own scratch is in use; that work gets a buffer of its own instead.
fn with_scratch<R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    cell.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// How the batch is split into image groups.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Images per group (the last group may hold fewer).
    images: usize,
    /// Number of groups.
    groups: usize,
    /// The GEMM's own threading: the threads the groups leave idle.
    gemm: Parallelism,
}

impl Plan {
    fn new(g: &ConvGeometry) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let pixels = g.out_pixels();
        let per_thread = g.batch.div_ceil(threads);
        let by_budget = (COLUMN_BUDGET / (g.patch_len() * pixels).max(1)).max(1);
        let images = TARGET_COLUMNS
            .div_ceil(pixels)
            .min(per_thread)
            .min(by_budget)
            .clamp(1, g.batch);
        let groups = g.batch.div_ceil(images);
        let gemm = if groups < threads {
            Parallelism::Rayon(threads / groups)
        } else {
            Parallelism::None
        };
        Self {
            images,
            groups,
            gemm,
        }
    }
}

/// Elements of one group's input and output.
fn group_lens(plan: &Plan, g: &ConvGeometry) -> (usize, usize) {
    let images = plan.images;
    (
        images * g.in_channels * g.in_pixels(),
        images * g.out_channels * g.out_pixels(),
    )
}

/// Runs `work` on each group: `(input, output)` chunks of `group` elements each, in parallel,
/// or directly when the batch is one group.
fn for_each_group<F>(
    plan: &Plan,
    (input, output): (&[f32], &mut [f32]),
    group: (usize, usize),
    work: F,
) where
    F: Fn((&[f32], &mut [f32])) + Sync + Send,
{
    if plan.groups == 1 {
        work((input, output));
    } else {
        let groups = input
            .par_chunks(group.0)
            .zip(output.par_chunks_mut(group.1));
        groups.for_each(work);
    }
}

/// `dst = beta * dst + lhs * rhs` for row-major views given by (row stride, column stride).
#[allow(clippy::too_many_arguments)]
fn matmul(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    dst_row_stride: usize,
    accumulate: bool,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [usize; 2],
    parallelism: Parallelism,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(dst_row_stride >= n, "GEMM destination rows overlap");
    assert!(
        dst.len() >= last(m, n, dst_row_stride, 1),
        "GEMM destination too short"
    );
    assert!(
        lhs.len() >= last(m, k, lhs_rs, lhs_cs),
        "GEMM left operand too short"
    );
    assert!(
        rhs.len() >= last(k, n, rhs_rs, rhs_cs),
        "GEMM right operand too short"
    );
    // SAFETY: the asserts above keep every (row, column) of the three views inside their
    // slices, and `dst` is borrowed mutably so it cannot alias the operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Output columns `lo..hi` whose input column `ow * stride + offset` lies inside `0..width`.
fn valid_range(offset: isize, stride: usize, width: usize, out_width: usize) -> (usize, usize) {
    let stride = stride as isize;
    let lo = if offset < 0 {
        (-offset + stride - 1) / stride
    } else {
        0
    };
    let hi = (width as isize - offset + stride - 1)
        .div_euclid(stride)
        .max(0);
    let lo = (lo as usize).min(out_width);
    (lo, (hi as usize).clamp(lo, out_width))
}

/// Input row read by output row `oh` at kernel row `ki`, if inside the image.
fn input_row(g: &ConvGeometry, oh: usize, ki: usize) -> Option<usize> {
    let ih = (oh * g.stride[0] + ki * g.dilation[0]) as isize - g.pad_start[0] as isize;
    (0..g.input[0] as isize)
        .contains(&ih)
        .then_some(ih as usize)
}

/// Offset of the input column read at kernel column `kj`, relative to `ow * stride`.
fn column_offset(g: &ConvGeometry, kj: usize) -> isize {
    (kj * g.dilation[1]) as isize - g.pad_start[1] as isize
}

/// Zeroes `values`. The edge columns of a shifted plane are one or two values per row: store
/// them directly, since a fill loop becomes a `memset` call per row (about 4% of an AutoAttack
/// run on a 16-channel network went to such calls).
fn zero(values: &mut [f32]) {
    match values {
        [] => {}
        [a] => *a = 0.0,
        [a, b] => (*a, *b) = (0.0, 0.0),
        _ => values.fill(0.0),
    }
}

/// One kernel offset of a convolution whose output rows line up with its input rows (stride
/// 1, output as wide as the input): the patch plane is the input plane shifted by a constant,
/// so a whole block of rows moves in one copy, and only the few columns that wrap around a
/// row edge need fixing.
struct Shift {
    width: usize,
    /// Output rows `rows.0..rows.1` read input rows inside the image.
    rows: (usize, usize),
    /// Output columns `columns.0..columns.1` read input columns inside the image.
    columns: (usize, usize),
    /// Input index minus output index.
    offset: isize,
}

impl Shift {
    fn new(g: &ConvGeometry, ki: usize, kj: usize) -> Option<Self> {
        if g.stride != [1, 1] || g.output[1] != g.input[1] {
            return None;
        }
        let width = g.input[1];
        let row_offset = (ki * g.dilation[0]) as isize - g.pad_start[0] as isize;
        let column_offset = column_offset(g, kj);
        Some(Self {
            width,
            rows: valid_range(row_offset, 1, g.input[0], g.output[0]),
            columns: valid_range(column_offset, 1, width, width),
            offset: row_offset * width as isize + column_offset,
        })
    }

    /// The output range `start..end` covered by the block copy (empty when nothing is
    /// inside the image).
    fn block(&self) -> (usize, usize) {
        let ((r0, r1), (lo, hi)) = (self.rows, self.columns);
        if r0 >= r1 || lo >= hi {
            return (0, 0);
        }
        (r0 * self.width + lo, (r1 - 1) * self.width + hi)
    }

    /// Calls `f` on every output range that reads outside the image.
    fn outside(&self, out_len: usize, mut f: impl FnMut(std::ops::Range<usize>)) {
        let (start, end) = self.block();
        if start == end {
            return f(0..out_len);
        }
        let ((r0, r1), (lo, hi)) = (self.rows, self.columns);
        f(0..r0 * self.width);
        for r in r0..r1 {
            f(r * self.width..r * self.width + lo);
            f(r * self.width + hi..(r + 1) * self.width);
        }
        f(r1 * self.width..out_len);
    }

    /// `dst` = the shifted `plane`, zero outside the image.
    fn copy(&self, plane: &[f32], dst: &mut [f32]) {
        let (start, end) = self.block();
        if start < end {
            let from = (start as isize + self.offset) as usize;
            dst[start..end].copy_from_slice(&plane[from..from + end - start]);
        }
        self.outside(dst.len(), |range| zero(&mut dst[range]));
    }

    /// `plane += ` the shifted-back `src`; `src` is clobbered outside the image.
    fn add(&self, src: &mut [f32], plane: &mut [f32]) {
        let (start, end) = self.block();
        if start == end {
            return;
        }
        self.outside(src.len(), |range| zero(&mut src[range]));
        let from = (start as isize + self.offset) as usize;
        let dst = &mut plane[from..from + end - start];
        dst.iter_mut()
            .zip(&src[start..end])
            .for_each(|(d, s)| *d += s);
    }
}

/// Fills `cols` (`[patch_len, images * out_pixels]`) with the patches of `images` images.
fn im2col(g: &ConvGeometry, x: &[f32], images: usize, cols: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let (pixels, width) = (g.out_pixels(), images * g.out_pixels());
    let [_, ow_len] = g.output;
    for (row, dst_row) in cols.chunks_exact_mut(width).enumerate() {
        let (ci, ki, kj) = (row / (kh * kw), row / kw % kh, row % kw);
        if let Some(shift) = Shift::new(g, ki, kj) {
            for (n, dst) in dst_row.chunks_exact_mut(pixels).enumerate() {
                let plane = &x[(n * g.in_channels + ci) * g.in_pixels()..][..g.in_pixels()];
                shift.copy(plane, dst);
            }
            continue;
        }
        let offset = column_offset(g, kj);
        let (lo, hi) = valid_range(offset, g.stride[1], g.input[1], ow_len);
        for (n, dst) in dst_row.chunks_exact_mut(pixels).enumerate() {
            let plane = &x[(n * g.in_channels + ci) * g.in_pixels()..][..g.in_pixels()];
            for (oh, out) in dst.chunks_exact_mut(ow_len).enumerate() {
                let Some(ih) = input_row(g, oh, ki) else {
                    out.fill(0.0);
                    continue;
                };
                let src = &plane[ih * g.input[1]..][..g.input[1]];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                if lo == hi {
                    continue; // this kernel column reads only padding
                }
                let start = (lo * g.stride[1]) as isize + offset;
                if g.stride[1] == 1 {
                    out[lo..hi].copy_from_slice(&src[start as usize..][..hi - lo]);
                } else {
                    let src = src[start as usize..].iter().step_by(g.stride[1]);
                    out[lo..hi].iter_mut().zip(src).for_each(|(o, s)| *o = *s);
                }
            }
        }
    }
}

/// Adds the patches in `cols` back onto `dx` (`images` images), the adjoint of [`im2col`].
fn col2im(g: &ConvGeometry, cols: &mut [f32], images: usize, dx: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let (pixels, width) = (g.out_pixels(), images * g.out_pixels());
    let [_, ow_len] = g.output;
    for (row, src_row) in cols.chunks_exact_mut(width).enumerate() {
        let (ci, ki, kj) = (row / (kh * kw), row / kw % kh, row % kw);
        if let Some(shift) = Shift::new(g, ki, kj) {
            for (n, src) in src_row.chunks_exact_mut(pixels).enumerate() {
                let plane = &mut dx[(n * g.in_channels + ci) * g.in_pixels()..][..g.in_pixels()];
                shift.add(src, plane);
            }
            continue;
        }
        let offset = column_offset(g, kj);
        let (lo, hi) = valid_range(offset, g.stride[1], g.input[1], ow_len);
        if lo == hi {
            continue; // this kernel column reads only padding
        }
        for (n, src) in src_row.chunks_exact(pixels).enumerate() {
            let plane = &mut dx[(n * g.in_channels + ci) * g.in_pixels()..][..g.in_pixels()];
            for (oh, grad) in src.chunks_exact(ow_len).enumerate() {
                let Some(ih) = input_row(g, oh, ki) else {
                    continue;
                };
                let dst = &mut plane[ih * g.input[1]..][..g.input[1]];
                let start = ((lo * g.stride[1]) as isize + offset) as usize;
                if g.stride[1] == 1 {
                    let dst = &mut dst[start..][..hi - lo];
                    dst.iter_mut()
                        .zip(&grad[lo..hi])
                        .for_each(|(d, s)| *d += *s);
                } else {
                    let dst = dst[start..].iter_mut().step_by(g.stride[1]);
                    dst.zip(&grad[lo..hi]).for_each(|(d, s)| *d += *s);
                }
            }
        }
    }
}

/// Copies `images` NCHW images of `channels` channels into one `[channels, images * pixels]`
/// matrix.
fn gather(nchw: &[f32], matrix: &mut [f32], channels: usize, pixels: usize) {
    let width = matrix.len() / channels;
    for (i, image) in nchw.chunks_exact(pixels).enumerate() {
        let (n, c) = (i / channels, i % channels);
        matrix[c * width + n * pixels..][..pixels].copy_from_slice(image);
    }
}

/// The inverse of [`gather`].
fn scatter(matrix: &[f32], nchw: &mut [f32], channels: usize, pixels: usize) {
    let width = matrix.len() / channels;
    for (i, image) in nchw.chunks_exact_mut(pixels).enumerate() {
        let (n, c) = (i / channels, i % channels);
        image.copy_from_slice(&matrix[c * width + n * pixels..][..pixels]);
    }
}

/// The im2col matrix of a group: the input itself for pointwise convolutions of one image,
/// else built in `scratch`.
fn columns<'a>(g: &ConvGeometry, x: &'a [f32], images: usize, scratch: &'a mut [f32]) -> &'a [f32] {
    if g.is_pointwise() && images == 1 {
        x
    } else {
        im2col(g, x, images, scratch);
        scratch
    }
}

/// Runs `f` on a group's output gradient as one `[channels, images * pixels]` matrix: `dy`
/// itself for one image, else gathered into scratch.
fn with_output_matrix<R>(
    dy: &[f32],
    images: usize,
    [channels, pixels]: [usize; 2],
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    if images == 1 {
        return f(dy);
    }
    with_scratch(&GATHERED, dy.len(), |gathered| {
        gather(dy, gathered, channels, pixels);
        f(gathered)
    })
}

/// Runs `f` on a `[channels, images * pixels]` matrix that ends up in the NCHW group `y`:
/// `y` itself for one image, else scratch scattered into `y` afterwards.
fn with_output_buffer(
    y: &mut [f32],
    images: usize,
    [channels, pixels]: [usize; 2],
    f: impl FnOnce(&mut [f32]),
) {
    if images == 1 {
        return f(y);
    }
    with_scratch(&GATHERED, y.len(), |out| {
        f(out);
        scatter(out, y, channels, pixels);
    });
}

/// Forward convolution: `x` `[n, cin, h, w]`, `weight` `[cout, cin, kh, kw]`, optional
/// `bias` `[cout]`; returns `[n, cout, oh, ow]`.
pub fn forward(g: &ConvGeometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    check_lengths(g, x.len(), g.input_len(), "input");
    check_lengths(g, weight.len(), g.weight_len(), "weight");
    if let Some(bias) = bias {
        check_lengths(g, bias.len(), g.out_channels, "bias");
    }
    let plan = Plan::new(g);
    let (pixels, k, cout) = (g.out_pixels(), g.patch_len(), g.out_channels);
    let mut y = vec![0.0f32; g.output_len()];
    let work = |(x, y): (&[f32], &mut [f32])| {
        let images = x.len() / (g.in_channels * g.in_pixels());
        let width = images * pixels;
        with_scratch(&COLUMNS, k * width, |scratch| {
            let cols = columns(g, x, images, scratch);
            with_output_buffer(y, images, [cout, pixels], |out| {
                let (lhs, rhs) = ([k, 1], [width, 1]);
                let shape = [cout, width, k];
                matmul(shape, out, width, false, weight, lhs, cols, rhs, plan.gemm);
            });
        });
        if let Some(bias) = bias {
            for (plane, b) in y.chunks_exact_mut(pixels).zip(bias.iter().cycle()) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
    };
    for_each_group(&plan, (x, &mut y), group_lens(&plan, g), work);
    y
}

/// Gradient of the input: `weight` `[cout, cin, kh, kw]`, `dy` `[n, cout, oh, ow]`; returns
/// `[n, cin, h, w]`.
pub fn backward_data(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    check_lengths(g, weight.len(), g.weight_len(), "weight");
    check_lengths(g, dy.len(), g.output_len(), "output gradient");
    let plan = Plan::new(g);
    let (pixels, k, cout) = (g.out_pixels(), g.patch_len(), g.out_channels);
    let mut dx = vec![0.0f32; g.input_len()];
    let work = |(dy, dx): (&[f32], &mut [f32])| {
        let images = dy.len() / (cout * pixels);
        let width = images * pixels;
        // weight transposed: [k, cout]
        let (shape, lhs, rhs) = ([k, width, cout], [1, k], [width, 1]);
        if g.is_pointwise() && images == 1 {
            matmul(shape, dx, width, false, weight, lhs, dy, rhs, plan.gemm);
            return;
        }
        with_scratch(&COLUMNS, k * width, |cols| {
            with_output_matrix(dy, images, [cout, pixels], |dy| {
                matmul(shape, cols, width, false, weight, lhs, dy, rhs, plan.gemm);
            });
            col2im(g, cols, images, dx);
        });
    };
    let (x_group, y_group) = group_lens(&plan, g);
    for_each_group(&plan, (dy, &mut dx), (y_group, x_group), work);
    dx
}

/// Gradient of the weight: `x` `[n, cin, h, w]`, `dy` `[n, cout, oh, ow]`; returns
/// `[cout, cin, kh, kw]`.
pub fn backward_filter(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    check_lengths(g, x.len(), g.input_len(), "input");
    check_lengths(g, dy.len(), g.output_len(), "output gradient");
    let plan = Plan::new(g);
    let (pixels, k, cout) = (g.out_pixels(), g.patch_len(), g.out_channels);
    let accumulate = |mut dw: Vec<f32>, (x, dy): (&[f32], &[f32])| {
        let images = dy.len() / (cout * pixels);
        let width = images * pixels;
        with_scratch(&COLUMNS, k * width, |scratch| {
            let cols = columns(g, x, images, scratch);
            with_output_matrix(dy, images, [cout, pixels], |dy| {
                // columns transposed: [width, k]
                let (shape, lhs, rhs) = ([cout, k, width], [width, 1], [1, width]);
                matmul(shape, &mut dw, k, true, dy, lhs, cols, rhs, plan.gemm);
            });
        });
        dw
    };
    let (x_group, dy_group) = group_lens(&plan, g);
    let zeros = || vec![0.0f32; g.weight_len()];
    if plan.groups == 1 {
        return accumulate(zeros(), (x, dy));
    }
    // One partial sum per thread over a fixed run of groups, added in order: rayon's
    // fold/reduce would split by work stealing, and the rounding of the sum (hence a
    // seeded run's weights) would change from run to run.
    let parts = rayon::current_num_threads().clamp(1, plan.groups);
    let per_part = plan.groups.div_ceil(parts);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(x_group * per_part)
        .zip(dy.par_chunks(dy_group * per_part))
        .map(|(x, dy)| {
            x.chunks(x_group)
                .zip(dy.chunks(dy_group))
                .fold(zeros(), accumulate)
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut dw = partials.next().unwrap_or_else(zeros);
    for part in partials {
        dw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
    dw
}

/// Gradient of the bias: `dy` summed over images and pixels, per output channel.
pub fn backward_bias(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    check_lengths(g, dy.len(), g.output_len(), "output gradient");
    let mut db = vec![0.0f32; g.out_channels];
    for (i, plane) in dy.chunks_exact(g.out_pixels()).enumerate() {
        db[i % g.out_channels] += plane.iter().sum::<f32>();
    }
    db
}

fn check_lengths(g: &ConvGeometry, got: usize, expected: usize, what: &str) {
    assert_eq!(
        got, expected,
        "convolution {what} has {got} elements, expected {expected} for {g:?}"
    );
}
