//! AutoPGD (Croce & Hein, ICML 2020): PGD with momentum 0.75 and a step size that starts at
//! 2 eps and halves at checkpoints where the loss stopped rising, restarting from the best
//! point. Checkpoints (100 iterations): 22, 41, 57, 70, 80, 87, 93, 99.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::attack_while_robust;
use crate::{
    AttackError, Classifier, Norm, agree, ascent_direction, choose_rows, cross_entropy_each,
    dlr_loss, dlr_targeted_loss, floats, gaussian, input_gradient, labels, normalize, predictions,
    project, row_values, subset, uniform_signed,
};

/// The loss APGD ascends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApgdLoss {
    /// Cross-entropy (APGD-CE).
    CrossEntropy,
    /// Difference of logits ratio (APGD-DLR).
    Dlr,
    /// Targeted DLR against the 2nd..(n_targets+1)-th most likely classes (APGD-T).
    DlrTargeted {
        /// Target classes tried per point (AutoAttack: 9).
        n_targets: usize,
    },
}

/// APGD settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Apgd {
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Iterations per run.
    pub n_iter: usize,
    /// Random restarts (per target class for APGD-T), each on the points still robust.
    pub restarts: usize,
    /// Loss.
    pub loss: ApgdLoss,
    /// Gradients averaged per iteration (expectation over transformation; 1 for
    /// deterministic models).
    pub eot_iter: usize,
    /// Threshold of the oscillation check (0.75).
    pub rho: f64,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Apgd {
    /// AutoAttack's APGD-CE: 100 iterations, one restart.
    pub fn ce(norm: Norm, eps: f64) -> Self {
        Self {
            norm,
            eps,
            n_iter: 100,
            restarts: 1,
            loss: ApgdLoss::CrossEntropy,
            eot_iter: 1,
            rho: 0.75,
            seed: 0,
        }
    }

    /// AutoAttack's APGD-T: targeted DLR, 9 target classes, 100 iterations, one restart.
    pub fn targeted(norm: Norm, eps: f64) -> Self {
        Self {
            loss: ApgdLoss::DlrTargeted { n_targets: 9 },
            ..Self::ce(norm, eps)
        }
    }

    /// Checks the settings against the number of classes.
    pub fn validate(&self, classes: usize) -> Result<(), AttackError> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(AttackError::Config(format!(
                "apgd eps must be > 0, got {}",
                self.eps
            )));
        }
        if self.n_iter == 0 || self.restarts == 0 || self.eot_iter == 0 {
            return Err(AttackError::Config(
                "apgd n_iter, restarts and eot_iter must be at least 1".into(),
            ));
        }
        let needed = match self.loss {
            ApgdLoss::CrossEntropy => 2,
            ApgdLoss::Dlr => 3,
            ApgdLoss::DlrTargeted { n_targets } => (n_targets + 1).max(4),
        };
        if classes < needed {
            return Err(AttackError::Config(format!(
                "apgd with {:?} needs at least {needed} classes, the model has {classes}",
                self.loss
            )));
        }
        Ok(())
    }

    /// The checkpoint iterations of the step-size schedule (0-based), e.g. 21, 40, 56, ...
    /// for 100 iterations (the paper's 22, 41, 57, ... counted from 1).
    pub fn checkpoints(&self) -> Vec<usize> {
        let (first, min, decrease) = self.schedule();
        let mut out = Vec::new();
        let mut k = first;
        let mut counter = 0;
        for i in 0..self.n_iter {
            counter += 1;
            if counter == k {
                out.push(i);
                k = k.saturating_sub(decrease).max(min);
                counter = 0;
            }
        }
        out
    }

    fn schedule(&self) -> (usize, usize, usize) {
        let n = self.n_iter as f64;
        (
            ((0.22 * n) as usize).max(1),
            ((0.06 * n) as usize).max(1),
            ((0.03 * n) as usize).max(1),
        )
    }

    /// Adversarial examples for the points of `x` that `model` classifies correctly; other
    /// points come back unchanged. Points fooled by an earlier restart or target keep their
    /// first adversarial example.
    pub fn run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
    ) -> Tensor<B::InnerBackend, 4> {
        let clean_logits = model.logits(x.clone());
        let robust = agree(&predictions(clean_logits.clone()), y);
        let mut rng = StdRng::seed_from_u64(self.seed);
        let targets: Vec<Option<usize>> = match self.loss {
            ApgdLoss::DlrTargeted { n_targets } => (2..n_targets + 2).map(Some).collect(),
            _ => vec![None],
        };
        let rounds = targets.len() * self.restarts;
        attack_while_robust(&x, robust, rounds, |r, idx, x_sub| {
            let y_sub: Vec<i64> = idx.iter().map(|&i| y[i]).collect();
            // The target: the rank-th most likely class at the clean point.
            let target = targets[r / self.restarts].map(|rank| {
                let classes = clean_logits.dims()[1];
                let (_, order) = subset(&clean_logits, idx).sort_with_indices(1);
                order.narrow(1, classes - rank, 1).reshape([idx.len()])
            });
            let (fooled, found) = self.single_run::<B, C>(model, x_sub, &y_sub, target, &mut rng);
            (found, fooled)
        })
    }

    /// One APGD run on `x` (all points attacked): which points were fooled at some
    /// iteration, and the first adversarial example found for each (the start point for the
    /// others).
    fn single_run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
        target: Option<Tensor<B::InnerBackend, 1, Int>>,
        rng: &mut StdRng,
    ) -> (Vec<bool>, Tensor<B::InnerBackend, 4>) {
        let device = x.device();
        let shape = x.dims();
        let n = shape[0];
        let y_dev = labels::<B::InnerBackend>(y, &device);
        let loss = |logits: Tensor<B, 2>| -> Tensor<B, 1> {
            let y = Tensor::<B, 1, Int>::from_inner(y_dev.clone());
            match (&self.loss, &target) {
                (ApgdLoss::CrossEntropy, _) => cross_entropy_each(logits, y),
                (ApgdLoss::Dlr, _) => dlr_loss(logits, y),
                (ApgdLoss::DlrTargeted { .. }, Some(t)) => {
                    dlr_targeted_loss(logits, y, Tensor::from_inner(t.clone()))
                }
                (ApgdLoss::DlrTargeted { .. }, None) => unreachable!("targets are set"),
            }
        };
        let gradient = |at: &Tensor<B::InnerBackend, 4>| {
            let mut total: Option<Tensor<B::InnerBackend, 4>> = None;
            let mut last = None;
            for _ in 0..self.eot_iter {
                let (g, each, logits) = input_gradient::<B, C>(model, at, loss);
                total = Some(match total {
                    None => g,
                    Some(t) => t + g,
                });
                last = Some((each, logits));
            }
            let (each, logits) = last.expect("eot_iter >= 1");
            let grad = total.expect("eot_iter >= 1") / self.eot_iter as f64;
            (grad, floats(each), predictions(logits))
        };

        let start = match self.norm {
            Norm::Linf => uniform_signed(shape, rng, &device),
            Norm::L2 => gaussian(shape, rng, &device),
        };
        let mut x_adv = (x.clone() + normalize(start, self.norm) * self.eps).clamp(0.0, 1.0);
        let mut x_best = x_adv.clone();
        let mut x_best_adv = x_adv.clone();
        let (mut grad, first_loss, first_pred) = gradient(&x_adv);
        let mut grad_best = grad.clone();
        let mut robust = agree(&first_pred, y);
        let mut loss_best = first_loss;
        // The reference keeps a zero-initialised [n_iter, n] history and, at the first
        // checkpoint, compares its first entry with row -1 (still zero): kept as is.
        let mut history = vec![vec![0.0f32; n]; self.n_iter];
        let mut step = vec![(2.0 * self.eps) as f32; n];
        let mut x_old = x_adv.clone();
        let (first, min_k, decrease) = self.schedule();
        let mut k = first;
        let mut counter = 0;
        let mut best_at_last_check = loss_best.clone();
        let mut reduced_at_last_check = vec![true; n];

        for i in 0..self.n_iter {
            let momentum_delta = x_adv.clone() - x_old;
            x_old = x_adv.clone();
            let a = if i > 0 { 0.75 } else { 1.0 };
            let step_t = row_values::<B::InnerBackend>(&step, &device);
            let z = project(
                x_adv.clone() + ascent_direction(grad, self.norm) * step_t,
                x.clone(),
                self.eps,
                self.norm,
            );
            x_adv = project(
                x_adv.clone() + (z - x_adv) * a + momentum_delta * (1.0 - a),
                x.clone(),
                self.eps,
                self.norm,
            );
            let (g, loss_now, pred) = gradient(&x_adv);
            grad = g;
            let fooled_now: Vec<bool> = pred.iter().zip(y).map(|(p, t)| p != t).collect();
            x_best_adv = choose_rows(x_best_adv, x_adv.clone(), &fooled_now);
            for (r, f) in robust.iter_mut().zip(&fooled_now) {
                *r &= !f;
            }
            history[i].clone_from(&loss_now);
            let improved: Vec<bool> = loss_now
                .iter()
                .zip(&loss_best)
                .map(|(a, b)| a > b)
                .collect();
            x_best = choose_rows(x_best, x_adv.clone(), &improved);
            grad_best = choose_rows(grad_best, grad.clone(), &improved);
            for ((best, now), up) in loss_best.iter_mut().zip(&loss_now).zip(&improved) {
                if *up {
                    *best = *now;
                }
            }

            counter += 1;
            if counter == k {
                let reduce: Vec<bool> = (0..n)
                    .map(|e| {
                        let row =
                            |j: isize| history[j.rem_euclid(self.n_iter as isize) as usize][e];
                        let increases = (0..k)
                            .filter(|&c| {
                                row(i as isize - c as isize) > row(i as isize - c as isize - 1)
                            })
                            .count();
                        let oscillating = increases as f64 <= k as f64 * self.rho;
                        let stalled =
                            !reduced_at_last_check[e] && best_at_last_check[e] >= loss_best[e];
                        oscillating || stalled
                    })
                    .collect();
                reduced_at_last_check.clone_from(&reduce);
                best_at_last_check.clone_from(&loss_best);
                if reduce.iter().any(|&r| r) {
                    for (s, r) in step.iter_mut().zip(&reduce) {
                        if *r {
                            *s /= 2.0;
                        }
                    }
                    x_adv = choose_rows(x_adv, x_best.clone(), &reduce);
                    grad = choose_rows(grad, grad_best.clone(), &reduce);
                }
                k = k.saturating_sub(decrease).max(min_k);
                counter = 0;
            }
        }
        (robust.iter().map(|r| !r).collect(), x_best_adv)
    }
}
