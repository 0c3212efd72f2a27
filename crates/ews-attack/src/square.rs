//! The Square attack (Andriushchenko et al., ECCV 2020), L-inf, margin loss: random search
//! with square-shaped updates of size +-2 eps whose area follows the p schedule.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{AttackError, Classifier, Norm, agree, floats, predictions, scatter_rows, subset};

/// Square attack settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Square {
    /// Radius (L-inf).
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
    pub fn autoattack(eps: f64) -> Self {
        Self {
            eps,
            n_queries: 5000,
            p_init: 0.8,
            restarts: 1,
            seed: 0,
        }
    }

    /// Checks the settings (only the L-inf version is implemented).
    pub fn validate(&self, norm: Norm) -> Result<(), AttackError> {
        if norm != Norm::Linf {
            return Err(AttackError::Config(
                "the Square attack is implemented for L-inf only".into(),
            ));
        }
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
        let mut robust = agree(&predictions(model.logits(x.clone())), y);
        let mut adv = x.clone();
        let mut rng = StdRng::seed_from_u64(self.seed);
        for _ in 0..self.restarts {
            let idx: Vec<usize> = (0..y.len()).filter(|&i| robust[i]).collect();
            if idx.is_empty() {
                break;
            }
            let y_sub: Vec<i64> = idx.iter().map(|&i| y[i]).collect();
            let found = self.single_run::<B, C>(model, subset(&x, &idx), &y_sub, &mut rng);
            let pred = predictions(model.logits(found.clone()));
            let fooled: Vec<usize> = (0..idx.len()).filter(|&j| pred[j] != y_sub[j]).collect();
            if fooled.is_empty() {
                continue;
            }
            let targets: Vec<usize> = fooled.iter().map(|&j| idx[j]).collect();
            adv = scatter_rows(adv, &targets, subset(&found, &fooled));
            for i in targets {
                robust[i] = false;
            }
        }
        adv
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
        let sign = |rng: &mut StdRng| {
            if rng.random::<f32>() * 2.0 - 1.0 >= 0.0 {
                1.0f32
            } else {
                -1.0
            }
        };
        // Vertical stripes: one random sign per example, channel and column.
        let stripes: Vec<f32> = (0..n * c * w).map(|_| sign(rng) * eps).collect();
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
                let value = 2.0 * eps * sign(rng);
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
}
