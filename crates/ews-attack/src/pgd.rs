//! Projected gradient descent (Madry et al.; Rice et al.'s settings).

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::{
    AttackError, Classifier, Norm, ascent_direction, cross_entropy_each, floats, gaussian,
    input_gradient, normalize, project, uniform_signed,
};

/// Where PGD starts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Start {
    /// At the clean input.
    Clean,
    /// Uniformly in the ball (L-inf: U(-eps, eps) per pixel; L2: a Gaussian direction with
    /// radius U(0, eps)), clipped to [0, 1] (Rice et al.).
    Uniform,
    /// `x + sigma * N(0, 1)` (TRADES uses sigma = 0.001).
    Gaussian(f64),
}

/// The objective PGD ascends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgdLoss {
    /// Cross-entropy with the true labels.
    CrossEntropy,
    /// TRADES' KL(p(x) || p(x')) to the clean prediction.
    KlToClean,
}

/// PGD settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pgd {
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Step size.
    pub step_size: f64,
    /// Gradient steps per restart.
    pub steps: usize,
    /// Restarts; per example the restart with the highest final loss is kept.
    pub restarts: usize,
    /// Starting point.
    pub start: Start,
    /// Objective.
    pub loss: PgdLoss,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Pgd {
    /// L-inf PGD with Rice et al.'s training settings: eps 8/255, step 2/255, 10 steps,
    /// uniform start.
    pub fn linf_training() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            step_size: 2.0 / 255.0,
            steps: 10,
            restarts: 1,
            start: Start::Uniform,
            loss: PgdLoss::CrossEntropy,
            seed: 0,
        }
    }

    /// PGD-`steps` evaluation at `eps` (L-inf: step eps/4; L2: step eps/4), uniform start.
    pub fn evaluation(norm: Norm, eps: f64, steps: usize) -> Self {
        Self {
            norm,
            eps,
            step_size: eps / 4.0,
            steps,
            restarts: 1,
            start: Start::Uniform,
            loss: PgdLoss::CrossEntropy,
            seed: 0,
        }
    }

    /// TRADES' inner maximisation: KL to the clean prediction from x + 0.001 N(0, 1),
    /// 10 steps of 0.007 at eps 0.031.
    pub fn trades() -> Self {
        Self {
            norm: Norm::Linf,
            eps: 0.031,
            step_size: 0.007,
            steps: 10,
            restarts: 1,
            start: Start::Gaussian(0.001),
            loss: PgdLoss::KlToClean,
            seed: 0,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), AttackError> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(AttackError::Config(format!(
                "pgd eps must be >= 0, got {}",
                self.eps
            )));
        }
        if !(self.step_size.is_finite() && self.step_size >= 0.0) {
            return Err(AttackError::Config(format!(
                "pgd step size must be >= 0, got {}",
                self.step_size
            )));
        }
        if self.restarts == 0 {
            return Err(AttackError::Config(
                "pgd restarts must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Adversarial examples for `x` (values in [0, 1]) with labels `y`, on the inner
    /// backend. `attempt` varies the random start between calls with the same seed.
    pub fn run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        attempt: u64,
    ) -> Tensor<B::InnerBackend, 4> {
        let device = x.device();
        let shape = x.dims();
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let clean_probs = match self.loss {
            PgdLoss::KlToClean => Some(softmax(model.logits(x.clone()), 1)),
            PgdLoss::CrossEntropy => None,
        };
        let y_outer = y.clone();
        let loss = move |logits: Tensor<B, 2>| match &clean_probs {
            None => cross_entropy_each(logits, Tensor::from_inner(y_outer.clone())),
            Some(p) => {
                let p = Tensor::<B, 2>::from_inner(p.clone());
                let log_p = p.clone().clamp_min(1e-12).log();
                (p * (log_p - log_softmax(logits, 1)))
                    .sum_dim(1)
                    .squeeze_dim(1)
            }
        };
        let mut best: Option<(Tensor<B::InnerBackend, 4>, Vec<f32>)> = None;
        for _ in 0..self.restarts {
            let mut x_adv = match self.start {
                Start::Clean => x.clone(),
                Start::Uniform => {
                    let delta = match self.norm {
                        Norm::Linf => uniform_signed(shape, &mut rng, &device) * self.eps,
                        Norm::L2 => {
                            let direction = normalize(gaussian(shape, &mut rng, &device), Norm::L2);
                            let radii: Vec<f32> = (0..shape[0])
                                .map(|_| rand::Rng::random::<f32>(&mut rng))
                                .collect();
                            direction * crate::row_values(&radii, &device) * self.eps
                        }
                    };
                    project(x.clone() + delta, x.clone(), self.eps, self.norm)
                }
                Start::Gaussian(sigma) => project(
                    x.clone() + gaussian(shape, &mut rng, &device) * sigma,
                    x.clone(),
                    self.eps,
                    self.norm,
                ),
            };
            for _ in 0..self.steps {
                let (grad, _, _) = input_gradient::<B, C>(model, &x_adv, &loss);
                x_adv = project(
                    x_adv + ascent_direction(grad, self.norm) * self.step_size,
                    x.clone(),
                    self.eps,
                    self.norm,
                );
            }
            if self.restarts == 1 {
                return x_adv;
            }
            let final_loss =
                floats(loss(model.logits_grad(Tensor::from_inner(x_adv.clone()))).inner());
            best = Some(match best {
                None => (x_adv, final_loss),
                Some((kept, kept_loss)) => {
                    let better: Vec<bool> = final_loss
                        .iter()
                        .zip(&kept_loss)
                        .map(|(a, b)| a >= b)
                        .collect();
                    let losses = final_loss
                        .iter()
                        .zip(&kept_loss)
                        .map(|(a, b)| a.max(*b))
                        .collect();
                    (crate::choose_rows(kept, x_adv, &better), losses)
                }
            });
        }
        best.map(|(x_adv, _)| x_adv).unwrap_or(x)
    }
}
