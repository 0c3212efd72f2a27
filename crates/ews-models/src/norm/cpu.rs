//! f32 batch-norm kernels for the CPU on contiguous NCHW slices: statistics, the normalise +
//! affine pass, and its backward, each one pass over the data (per-channel sums in f64).
//!
//! Channels run in parallel for the sums, planes (one image and channel) for the elementwise
//! passes.

use rayon::prelude::*;

/// The layout of one batch: images, channels, pixels per plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planes {
    /// Images.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Pixels per image and channel.
    pub pixels: usize,
}

impl Planes {
    /// Values per channel (images x pixels).
    pub fn per_channel(&self) -> usize {
        self.batch * self.pixels
    }

    fn len(&self) -> usize {
        self.batch * self.channels * self.pixels
    }

    /// The planes of channel `c`.
    fn channel<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        let plane = self.pixels;
        (0..self.batch).map(move |n| &data[(n * self.channels + c) * plane..][..plane])
    }
}

/// `sum(f(values))` over channel `c`'s planes, in f64.
fn channel_sum(p: &Planes, data: &[f32], c: usize, f: impl Fn(f32) -> f64) -> f64 {
    p.channel(data, c)
        .map(|plane| plane.iter().map(|v| f(*v)).sum::<f64>())
        .sum()
}

/// Per-channel mean and biased variance (two passes: mean, then squared deviations).
pub fn stats(p: &Planes, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        x.len(),
        p.len(),
        "batch-norm input has the wrong length for {p:?}"
    );
    let count = p.per_channel() as f64;
    (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let mean = channel_sum(p, x, c, |v| v as f64) / count;
            let var = channel_sum(p, x, c, |v| (v as f64 - mean).powi(2)) / count;
            (mean as f32, var as f32)
        })
        .unzip()
}

/// Per-channel `(scale, shift)` with `y = x * scale + shift`.
fn affine(mean: &[f32], var: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<(f32, f32)> {
    (0..mean.len())
        .map(|c| {
            let scale = gamma[c] as f64 / (var[c] as f64 + eps).sqrt();
            (
                scale as f32,
                (beta[c] as f64 - mean[c] as f64 * scale) as f32,
            )
        })
        .collect()
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta`, per channel.
pub fn forward(p: &Planes, x: &[f32], [mean, var, gamma, beta]: [&[f32]; 4], eps: f64) -> Vec<f32> {
    assert_eq!(
        x.len(),
        p.len(),
        "batch-norm input has the wrong length for {p:?}"
    );
    let coefficients = affine(mean, var, gamma, beta, eps);
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(p.pixels)
        .zip(x.par_chunks(p.pixels))
        .enumerate()
        .for_each(|(i, (y, x))| {
            let (scale, shift) = coefficients[i % p.channels];
            y.iter_mut()
                .zip(x)
                .for_each(|(y, x)| *y = x * scale + shift);
        });
    y
}

/// Gradients `(dx, dgamma, dbeta)` of [`forward`] for the output gradient `dy`.
///
/// With `batch_stats`, `mean` and `var` are the statistics of `x` itself and their gradients
/// flow into `dx` (training mode); otherwise they are constants (running statistics).
pub fn backward(
    p: &Planes,
    x: &[f32],
    dy: &[f32],
    [mean, var, gamma]: [&[f32]; 3],
    eps: f64,
    batch_stats: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(
        x.len(),
        p.len(),
        "batch-norm input has the wrong length for {p:?}"
    );
    assert_eq!(
        dy.len(),
        p.len(),
        "batch-norm gradient has the wrong length for {p:?}"
    );
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (*v as f64 + eps).sqrt()).collect();
    // Per channel: sum(dy) and sum(dy * (x - mean)).
    let sums: Vec<(f64, f64)> = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let m = mean[c] as f64;
            let pairs = p.channel(x, c).zip(p.channel(dy, c));
            pairs.fold((0.0, 0.0), |(s, sx), (x, dy)| {
                let (a, b) = x.iter().zip(dy).fold((0.0f64, 0.0f64), |(s, sx), (x, dy)| {
                    (s + *dy as f64, sx + *dy as f64 * (*x as f64 - m))
                });
                (s + a, sx + b)
            })
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|(s, _)| *s as f32).collect();
    let dgamma: Vec<f32> = (0..p.channels)
        .map(|c| (sums[c].1 * inv_std[c]) as f32)
        .collect();
    let count = p.per_channel() as f64;
    // dx = k * (dy - a - (x - mean) * b) per channel; a = b = 0 with constant statistics.
    let terms: Vec<(f32, f32, f32, f32)> = (0..p.channels)
        .map(|c| {
            let k = gamma[c] as f64 * inv_std[c];
            let (a, b) = if batch_stats {
                (
                    sums[c].0 / count,
                    sums[c].1 * inv_std[c] * inv_std[c] / count,
                )
            } else {
                (0.0, 0.0)
            };
            (k as f32, a as f32, b as f32, mean[c])
        })
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(p.pixels)
        .zip(x.par_chunks(p.pixels).zip(dy.par_chunks(p.pixels)))
        .enumerate()
        .for_each(|(i, (dx, (x, dy)))| {
            let (k, a, b, m) = terms[i % p.channels];
            for ((dx, x), dy) in dx.iter_mut().zip(x).zip(dy) {
                *dx = k * (dy - a - (x - m) * b);
            }
        });
    (dx, dgamma, dbeta)
}
