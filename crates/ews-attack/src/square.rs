//! The Square attack (Andriushchenko et al., ECCV 2020) with the margin loss: random search
//! with square-shaped updates whose area follows the p schedule. L-inf: squares of +-2 eps
//! from vertical-stripe starts; L2: pairs of windows whose mass is moved with the reference's
//! centred "eta" profiles, from a grid-of-profiles start, always on the eps-sphere.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{AttackError, Classifier, Norm, agree, floats, predictions, scatter_rows, subset};
use crate::{attack_while_robust, random_sign};

/// Square attack settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Square {
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Queries per restart (AutoAttack: 5000).
    pub n_queries: usize,
    /// Initial fraction of pixels changed per square (0.8).
    pub p_init: f64,
    /// Restarts on the points still robust.
    pub restarts: usize,
    /// Seed.
    pub seed: u64,
}

impl Square {
    /// AutoAttack's settings: 5000 queries, p_init 0.8, one restart.
    pub fn autoattack(norm: Norm, eps: f64) -> Self {
        Self {
            norm,
            eps,
            n_queries: 5000,
            p_init: 0.8,
            restarts: 1,
            seed: 0,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), AttackError> {
        if !(self.eps > 0.0 && self.p_init > 0.0 && self.p_init <= 1.0) || self.restarts == 0 {
            return Err(AttackError::Config(format!(
                "square: invalid settings {self:?}"
            )));
        }
        Ok(())
    }

    /// The fraction of pixels per square at iteration `it` (the reference schedule for
    /// 10,000 iterations, not rescaled to `n_queries`, as AutoAttack runs it).
    pub fn p_at(&self, it: usize) -> f64 {
        let halvings = match it {
            0..=10 => 0,
            11..=50 => 1,
            51..=200 => 2,
            201..=500 => 3,
            501..=1000 => 4,
            1001..=2000 => 5,
            2001..=4000 => 6,
            4001..=6000 => 7,
            6001..=8000 => 8,
            _ => 9,
        };
        self.p_init / f64::from(1u32 << halvings)
    }

    /// Adversarial examples for the correctly classified points of `x`; the rest come back
    /// unchanged.
    pub fn run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
    ) -> Tensor<B::InnerBackend, 4> {
        let robust = agree(&predictions(model.logits(x.clone())), y);
        let mut rng = StdRng::seed_from_u64(self.seed);
        attack_while_robust(&x, robust, self.restarts, |_, idx, x_sub| {
            let y_sub: Vec<i64> = idx.iter().map(|&i| y[i]).collect();
            let found = match self.norm {
                Norm::Linf => self.single_run::<B, C>(model, x_sub, &y_sub, &mut rng),
                Norm::L2 => self.single_run_l2::<B, C>(model, x_sub, &y_sub, &mut rng),
            };
            let pred = predictions(model.logits(found.clone()));
            let fooled = pred.iter().zip(&y_sub).map(|(p, t)| p != t).collect();
            (found, fooled)
        })
    }

    fn margins<B: AutodiffBackend, C: Classifier<B>>(
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
    ) -> Vec<f32> {
        let logits = floats(model.logits(x));
        let classes = logits.len() / y.len().max(1);
        logits
            .chunks(classes)
            .zip(y)
            .map(|(row, &t)| {
                let other = row
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k as i64 != t)
                    .map(|(_, v)| *v)
                    .fold(f32::NEG_INFINITY, f32::max);
                row[t as usize] - other
            })
            .collect()
    }

    fn single_run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
        rng: &mut StdRng,
    ) -> Tensor<B::InnerBackend, 4> {
        let device = x.device();
        let [n, c, h, w] = x.dims();
        let eps = self.eps as f32;
        // Vertical stripes: one random sign per example, channel and column.
        let stripes: Vec<f32> = (0..n * c * w).map(|_| random_sign(rng) * eps).collect();
        let stripes = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(stripes, [n, c, 1, w]),
            &device,
        );
        let mut x_best = (x.clone() + stripes).clamp(0.0, 1.0);
        let mut margin_min = Self::margins::<B, C>(model, x_best.clone(), y);
        if margin_min.iter().all(|&m| m < 0.0) {
            return x_best;
        }
        let features = (c * h * w) as f64;
        for it in 0..self.n_queries {
            let active: Vec<usize> = (0..n).filter(|&i| margin_min[i] > 0.0).collect();
            if active.is_empty() {
                break;
            }
            let p = self.p_at(it);
            let s = ((p * features / c as f64).sqrt().round() as usize)
                .max(1)
                .min(h.min(w));
            let vh = (((h - s) as f32) * rng.random::<f32>()) as usize;
            let vw = (((w - s) as f32) * rng.random::<f32>()) as usize;
            let mut square = vec![0.0f32; c * h * w];
            for ch in 0..c {
                let value = 2.0 * eps * random_sign(rng);
                for row in vh..vh + s {
                    for col in vw..vw + s {
                        square[(ch * h + row) * w + col] = value;
                    }
                }
            }
            let square = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(square, [1, c, h, w]),
                &device,
            );
            let x_curr = subset(&x, &active);
            let best_curr = subset(&x_best, &active);
            let x_new = (best_curr + square)
                .max_pair(x_curr.clone() - self.eps)
                .min_pair(x_curr + self.eps)
                .clamp(0.0, 1.0);
            let y_curr: Vec<i64> = active.iter().map(|&i| y[i]).collect();
            let margin = Self::margins::<B, C>(model, x_new.clone(), &y_curr);
            // With the margin loss, "lower loss" and "misclassified" both mean a lower margin.
            let improved: Vec<usize> = (0..active.len())
                .filter(|&j| margin[j] < margin_min[active[j]] || margin[j] <= 0.0)
                .collect();
            if !improved.is_empty() {
                let targets: Vec<usize> = improved.iter().map(|&j| active[j]).collect();
                for (&j, &i) in improved.iter().zip(&targets) {
                    margin_min[i] = margin[j];
                }
                x_best = scatter_rows(x_best, &targets, subset(&x_new, &improved));
            }
        }
        x_best
    }

    /// The L2 version on host buffers (its window bookkeeping is per example and channel).
    fn single_run_l2<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
        rng: &mut StdRng,
    ) -> Tensor<B::InnerBackend, 4> {
        let device = x.device();
        let [n, c, h, w] = x.dims();
        let dim = c * h * w;
        let eps = self.eps as f32;
        let x_host = floats(x.clone());
        let upload = |v: &[f32], rows: usize| {
            Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(v.to_vec(), [rows, c, h, w]),
                &device,
            )
        };
        // x + eps * delta / ||delta||, clipped to [0, 1], for each row of `delta`.
        let on_sphere = |base: &[f32], delta: &[f32]| -> Vec<f32> {
            let mut out = vec![0.0f32; delta.len()];
            for ((o, d), b) in out
                .chunks_mut(dim)
                .zip(delta.chunks(dim))
                .zip(base.chunks(dim))
            {
                let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
                for ((o, d), b) in o.iter_mut().zip(d).zip(b) {
                    *o = (b + d / norm * eps).clamp(0.0, 1.0);
                }
            }
            out
        };
        // Start: a grid of s x s eta profiles (s = h / 5) with a random sign per example and
        // channel for each cell.
        let s = (h / 5).max(1);
        let offset = h.saturating_sub(5 * s) / 2;
        let mut delta = vec![0.0f32; n * dim];
        let mut vh = offset;
        for _ in 0..h / s {
            let mut vw = offset;
            for _ in 0..w / s {
                let profile = eta(s, rng);
                for e in 0..n {
                    for ch in 0..c {
                        let sg = random_sign(rng);
                        for (r, row) in profile.chunks(s).enumerate() {
                            for (q, v) in row.iter().enumerate() {
                                let (pr, pc) = (vh + r, vw + q);
                                if pr < h && pc < w {
                                    delta[e * dim + (ch * h + pr) * w + pc] += v * sg;
                                }
                            }
                        }
                    }
                }
                vw += s;
            }
            vh += s;
        }
        let mut best = on_sphere(&x_host, &delta);
        let mut margin_min = Self::margins::<B, C>(model, upload(&best, n), y);
        if margin_min.iter().all(|&m| m < 0.0) {
            return upload(&best, n);
        }
        let features = dim as f64;
        for it in 0..self.n_queries {
            let active: Vec<usize> = (0..n).filter(|&i| margin_min[i] > 0.0).collect();
            if active.is_empty() {
                break;
            }
            let p = self.p_at(it);
            let mut s = ((p * features / c as f64).sqrt().round() as usize).max(3);
            if s.is_multiple_of(2) {
                s += 1;
            }
            let s = s.min(h.min(w));
            let pick = |rng: &mut StdRng, limit: usize| {
                (((limit - s) as f32) * rng.random::<f32>()) as usize
            };
            let (vh, vw) = (pick(rng, h), pick(rng, w));
            let (vh2, vw2) = (pick(rng, h), pick(rng, w));
            let in_window = |r: usize, q: usize, top: usize, left: usize| {
                (top..top + s).contains(&r) && (left..left + s).contains(&q)
            };
            let profile = eta(s, rng);
            let mut candidates = Vec::with_capacity(active.len() * dim);
            for &e in &active {
                let base = &x_host[e * dim..(e + 1) * dim];
                let mut d: Vec<f32> = best[e * dim..(e + 1) * dim]
                    .iter()
                    .zip(base)
                    .map(|(b, x)| b - x)
                    .collect();
                let image_norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
                let room = (eps * eps - image_norm * image_norm).max(0.0) / c as f32;
                for ch in 0..c {
                    let plane = &mut d[ch * h * w..(ch + 1) * h * w];
                    let mut window_1 = 0.0f32;
                    let mut windows = 0.0f32;
                    for r in 0..h {
                        for q in 0..w {
                            let v = plane[r * w + q];
                            let first = in_window(r, q, vh, vw);
                            if first {
                                window_1 += v * v;
                            }
                            if first || in_window(r, q, vh2, vw2) {
                                windows += v * v;
                            }
                        }
                    }
                    let (window_1, windows) = (window_1.sqrt(), windows.sqrt());
                    let sg = random_sign(rng);
                    let mut fresh: Vec<f32> = (0..s * s)
                        .map(|k| {
                            profile[k] * sg
                                + plane[(vh + k / s) * w + vw + k % s] / (1e-12 + window_1)
                        })
                        .collect();
                    let fresh_norm = fresh.iter().map(|v| v * v).sum::<f32>().sqrt();
                    let scale = (room + windows * windows).sqrt() / (1e-12 + fresh_norm);
                    for v in &mut fresh {
                        *v *= scale;
                    }
                    for r in vh2..vh2 + s {
                        for q in vw2..vw2 + s {
                            plane[r * w + q] = 0.0;
                        }
                    }
                    for (k, v) in fresh.iter().enumerate() {
                        plane[(vh + k / s) * w + vw + k % s] = *v;
                    }
                }
                candidates.extend(on_sphere(base, &d));
            }
            let y_curr: Vec<i64> = active.iter().map(|&i| y[i]).collect();
            let margin = Self::margins::<B, C>(model, upload(&candidates, active.len()), &y_curr);
            for (j, &e) in active.iter().enumerate() {
                if margin[j] < margin_min[e] || margin[j] <= 0.0 {
                    margin_min[e] = margin[j];
                    best[e * dim..(e + 1) * dim]
                        .copy_from_slice(&candidates[j * dim..(j + 1) * dim]);
                }
            }
        }
        upload(&best, n)
    }
}

/// The reference's centred profile on a `rows x cols` rectangle: nested rectangles growing
/// from the centre, ring k weighted 1 / (k + 1)^2, scaled to unit L2 norm.
fn eta_rectangle(rows: usize, cols: usize) -> Vec<f32> {
    let mut delta = vec![0.0f32; rows * cols];
    let (centre_r, centre_c) = (rows / 2 + 1, cols / 2 + 1);
    let (mut top, mut left) = (centre_r as isize - 1, centre_c as isize - 1);
    for k in 0..centre_r.max(centre_c) {
        let size = 2 * k as isize + 1;
        let (r0, r1) = (
            top.max(0) as usize,
            ((top + size).min(rows as isize)).max(0) as usize,
        );
        let (c0, c1) = (
            left.max(0) as usize,
            ((left + size).min(cols as isize)).max(0) as usize,
        );
        for r in r0..r1 {
            for q in c0..c1 {
                delta[r * cols + q] += 1.0 / ((k + 1) * (k + 1)) as f32;
            }
        }
        top -= 1;
        left -= 1;
    }
    let norm = delta.iter().map(|v| v * v).sum::<f32>().sqrt();
    delta.iter().map(|v| v / norm).collect()
}

/// An s x s update profile: the upper half positive, the lower half negative (each an
/// [`eta_rectangle`]), unit L2 norm, transposed with probability 1/2.
fn eta(s: usize, rng: &mut StdRng) -> Vec<f32> {
    let upper = s / 2;
    let mut delta = Vec::with_capacity(s * s);
    if upper > 0 {
        delta.extend(eta_rectangle(upper, s));
    }
    delta.extend(eta_rectangle(s - upper, s).into_iter().map(|v| -v));
    let norm = delta.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut delta: Vec<f32> = delta.iter().map(|v| v / norm).collect();
    if rng.random::<f32>() > 0.5 {
        let mut t = vec![0.0f32; s * s];
        for r in 0..s {
            for q in 0..s {
                t[q * s + r] = delta[r * s + q];
            }
        }
        delta = t;
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_profiles_match_the_reference_shape() {
        // eta_rectangles(2, 5) of the reference (its output: 0.0695, 0.2260, 0.8517 ...): centre (x_c, y_c) = (2, 3), rings
        // of weight 1, 1/4, 1/9 grown from index (1, 2), clipped to the 2 x 5 rectangle.
        let w = [1.0 + 0.25 + 1.0 / 9.0, 0.25 + 1.0 / 9.0, 1.0 / 9.0];
        let raw = [
            w[2], w[1], w[1], w[1], w[2], //
            w[2], w[1], w[0], w[1], w[2],
        ];
        let norm = raw.iter().map(|v: &f32| v * v).sum::<f32>().sqrt();
        for (a, b) in eta_rectangle(2, 5).iter().zip(raw) {
            assert!((a - b / norm).abs() < 1e-6, "{a} vs {}", b / norm);
        }
        let mut rng = StdRng::seed_from_u64(1);
        for s in [3, 5, 7] {
            let p = eta(s, &mut rng);
            let total: f32 = p.iter().map(|v| v * v).sum();
            assert!((total - 1.0).abs() < 1e-5);
            let sum: f32 = p.iter().sum();
            // One half pushes up, the other down; for odd s the lower half is larger.
            assert!(sum < 0.0 && p.iter().any(|v| *v > 0.0));
        }
    }
}
