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
    AttackError, Classifier, GradientCheck, Norm, agree, ascent_direction, choose_rows,
    cross_entropy_each, dlr_loss, dlr_targeted_loss, floats, gaussian, gradient_check,
    input_gradient, labels, normalize, predictions, project, row_values, subset, uniform_signed,
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
        self.run_traced::<B, C>(model, x, y).0
    }

    /// [`Apgd::run`] with a record of each single run (step sizes, start gradient), for the
    /// zero-gradient check and tests. Recording costs one host vector per iteration.
    pub fn run_traced<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
    ) -> (Tensor<B::InnerBackend, 4>, Vec<ApgdRunTrace>) {
        let clean_logits = model.logits(x.clone());
        let robust = agree(&predictions(clean_logits.clone()), y);
        let mut rng = StdRng::seed_from_u64(self.seed);
        let targets: Vec<Option<usize>> = match self.loss {
            ApgdLoss::DlrTargeted { n_targets } => (2..n_targets + 2).map(Some).collect(),
            _ => vec![None],
        };
        let rounds = targets.len() * self.restarts;
        let mut traces = Vec::new();
        let adv = attack_while_robust(&x, robust, rounds, |r, idx, x_sub| {
            let y_sub: Vec<i64> = idx.iter().map(|&i| y[i]).collect();
            // The target: the rank-th most likely class at the clean point.
            let target = targets[r / self.restarts].map(|rank| {
                let classes = clean_logits.dims()[1];
                let (_, order) = subset(&clean_logits, idx).sort_with_indices(1);
                order.narrow(1, classes - rank, 1).reshape([idx.len()])
            });
            let (fooled, found, mut trace) =
                self.single_run::<B, C>(model, x_sub, &y_sub, target, &mut rng);
            trace.points = idx.to_vec();
            traces.push(trace);
            (found, fooled)
        });
        (adv, traces)
    }

    /// The per-example loss of this attack (`target` for the targeted DLR loss).
    fn loss_of<B: AutodiffBackend>(
        &self,
        logits: Tensor<B, 2>,
        y: &Tensor<B::InnerBackend, 1, Int>,
        target: Option<&Tensor<B::InnerBackend, 1, Int>>,
    ) -> Tensor<B, 1> {
        let y = Tensor::<B, 1, Int>::from_inner(y.clone());
        match (self.loss, target) {
            (ApgdLoss::CrossEntropy, _) => cross_entropy_each(logits, y),
            (ApgdLoss::Dlr, _) => dlr_loss(logits, y),
            (ApgdLoss::DlrTargeted { .. }, Some(t)) => {
                dlr_targeted_loss(logits, y, Tensor::from_inner(t.clone()))
            }
            (ApgdLoss::DlrTargeted { .. }, None) => unreachable!("targets are set"),
        }
    }

    /// The EOT-averaged input gradient at `at`, with the loss and predictions of the last
    /// sample and the zero-gradient check of the average.
    fn gradient<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        at: &Tensor<B::InnerBackend, 4>,
        loss: impl Fn(Tensor<B, 2>) -> Tensor<B, 1>,
    ) -> (Tensor<B::InnerBackend, 4>, Vec<f32>, Vec<i64>, bool) {
        let mut total: Option<Tensor<B::InnerBackend, 4>> = None;
        let mut last = None;
        let mut reaches_input = true;
        for _ in 0..self.eot_iter {
            let g = input_gradient::<B, C>(model, at, &loss);
            reaches_input &= g.reaches_input;
            total = Some(match total {
                None => g.grad,
                Some(t) => t + g.grad,
            });
            last = Some((g.loss, g.logits));
        }
        let (each, logits) = last.expect("eot_iter >= 1");
        let grad = total.expect("eot_iter >= 1") / self.eot_iter as f64;
        (grad, floats(each), predictions(logits), reaches_input)
    }

    /// One APGD run on `x` (all points attacked): which points were fooled at some
    /// iteration, the first adversarial example found for each (the start point for the
    /// others), and its trace.
    fn single_run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
        target: Option<Tensor<B::InnerBackend, 1, Int>>,
        rng: &mut StdRng,
    ) -> (Vec<bool>, Tensor<B::InnerBackend, 4>, ApgdRunTrace) {
        let device = x.device();
        let shape = x.dims();
        let y_dev = labels::<B::InnerBackend>(y, &device);
        let loss = |logits: Tensor<B, 2>| self.loss_of::<B>(logits, &y_dev, target.as_ref());
        let start = match self.norm {
            Norm::Linf => uniform_signed(shape, rng, &device),
            Norm::L2 => gaussian(shape, rng, &device),
        };
        let mut x_adv = (x.clone() + normalize(start, self.norm) * self.eps).clamp(0.0, 1.0);
        let mut x_best = x_adv.clone();
        let mut x_best_adv = x_adv.clone();
        let (mut grad, first_loss, first_pred, reaches_input) =
            self.gradient::<B, C>(model, &x_adv, loss);
        let mut trace = ApgdRunTrace {
            gradient: gradient_check(&grad, reaches_input),
            ..ApgdRunTrace::default()
        };
        let mut grad_best = grad.clone();
        let mut robust = agree(&first_pred, y);
        let mut schedule = StepSchedule::new(self, first_loss);
        let mut x_old = x_adv.clone();

        for i in 0..self.n_iter {
            trace.step_sizes.push(schedule.step.clone());
            let momentum_delta = x_adv.clone() - x_old;
            x_old = x_adv.clone();
            let a = if i > 0 { 0.75 } else { 1.0 };
            let step_t = row_values::<B::InnerBackend>(&schedule.step, &device);
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
            let (g, loss_now, pred, _) = self.gradient::<B, C>(model, &x_adv, loss);
            grad = g;
            let fooled_now: Vec<bool> = pred.iter().zip(y).map(|(p, t)| p != t).collect();
            x_best_adv = choose_rows(x_best_adv, x_adv.clone(), &fooled_now);
            for (r, f) in robust.iter_mut().zip(&fooled_now) {
                *r &= !f;
            }
            let improved = schedule.record(i, &loss_now);
            x_best = choose_rows(x_best, x_adv.clone(), &improved);
            grad_best = choose_rows(grad_best, grad.clone(), &improved);
            if let Some(reduce) = schedule.checkpoint(i) {
                x_adv = choose_rows(x_adv, x_best.clone(), &reduce);
                grad = choose_rows(grad, grad_best.clone(), &reduce);
            }
        }
        (robust.iter().map(|r| !r).collect(), x_best_adv, trace)
    }
}

/// What one single APGD run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApgdRunTrace {
    /// Indices (in the batch given to `run_traced`) of the points this run attacked.
    pub points: Vec<usize>,
    /// Per iteration, the step size each attacked point used (2 eps, halved at checkpoints).
    pub step_sizes: Vec<Vec<f32>>,
    /// The input gradient at the random start (AutoAttack's zero-gradient check).
    pub gradient: GradientCheck,
}

/// APGD's step-size bookkeeping: loss history, best loss and the checkpoint rule.
struct StepSchedule {
    /// Per point, the current step size.
    step: Vec<f32>,
    /// The reference keeps a zero-initialised [n_iter, n] history and, at the first
    /// checkpoint, compares its first entry with row -1 (still zero): kept as is.
    history: Vec<Vec<f32>>,
    loss_best: Vec<f32>,
    best_at_last_check: Vec<f32>,
    reduced_at_last_check: Vec<bool>,
    rho: f64,
    k: usize,
    min_k: usize,
    decrease: usize,
    counter: usize,
}

impl StepSchedule {
    fn new(apgd: &Apgd, first_loss: Vec<f32>) -> Self {
        let n = first_loss.len();
        let (first, min_k, decrease) = apgd.schedule();
        Self {
            step: vec![(2.0 * apgd.eps) as f32; n],
            history: vec![vec![0.0f32; n]; apgd.n_iter],
            best_at_last_check: first_loss.clone(),
            loss_best: first_loss,
            reduced_at_last_check: vec![true; n],
            rho: apgd.rho,
            k: first,
            min_k,
            decrease,
            counter: 0,
        }
    }

    /// Records iteration `i`'s loss; returns the points whose best loss it improved.
    fn record(&mut self, i: usize, loss_now: &[f32]) -> Vec<bool> {
        self.history[i].copy_from_slice(loss_now);
        let improved: Vec<bool> = loss_now
            .iter()
            .zip(&self.loss_best)
            .map(|(a, b)| a > b)
            .collect();
        for ((best, now), up) in self.loss_best.iter_mut().zip(loss_now).zip(&improved) {
            if *up {
                *best = *now;
            }
        }
        improved
    }

    /// At a checkpoint (after iteration `i`): halves the step of the points whose loss
    /// oscillated or stalled and returns them (they restart from their best point).
    fn checkpoint(&mut self, i: usize) -> Option<Vec<bool>> {
        self.counter += 1;
        if self.counter != self.k {
            return None;
        }
        let (k, len) = (self.k as isize, self.history.len() as isize);
        let reduce: Vec<bool> = (0..self.step.len())
            .map(|e| {
                let row = |j: isize| self.history[j.rem_euclid(len) as usize][e];
                let at = i as isize;
                let increases = (0..k).filter(|&c| row(at - c) > row(at - c - 1)).count();
                let oscillating = increases as f64 <= k as f64 * self.rho;
                let stalled = !self.reduced_at_last_check[e]
                    && self.best_at_last_check[e] >= self.loss_best[e];
                oscillating || stalled
            })
            .collect();
        self.reduced_at_last_check.clone_from(&reduce);
        self.best_at_last_check.clone_from(&self.loss_best);
        for (s, r) in self.step.iter_mut().zip(&reduce) {
            if *r {
                *s /= 2.0;
            }
        }
        self.k = self.k.saturating_sub(self.decrease).max(self.min_k);
        self.counter = 0;
        reduce.iter().any(|&r| r).then_some(reduce)
    }
}
