//! Projected gradient descent (Madry et al.; Rice et al.'s settings).

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::{
    AttackError, Classifier, GradientCheck, Norm, agree, ascent_direction, choose_rows,
    cross_entropy_each, floats, gaussian, input_gradient, normalize, predictions, project,
    uniform_signed,
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

    /// Training-time PGD: adversarial examples for `x` (values in [0, 1]) with labels `y`,
    /// on the inner backend. Each restart returns its last iterate; with several restarts the
    /// one with the highest final loss is kept per example (Rice et al.'s `attack_pgd`
    /// without `early_stop`, as adversarial training crafts x'). For robust accuracy use
    /// [`Pgd::evaluate`]. `attempt` varies the random start between calls with the same seed.
    pub fn run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        attempt: u64,
    ) -> Tensor<B::InnerBackend, 4> {
        let mut rng = self.rng(attempt);
        let objective = Objective::new(model, &x, y, self.loss);
        let mut best = None;
        for _ in 0..self.restarts {
            let mut x_adv = self.start_point(&x, &mut rng);
            for _ in 0..self.steps {
                let g = input_gradient::<B, C>(model, &x_adv, |l| objective.on_graph::<B>(l));
                x_adv = self.step(x_adv, g.grad, &x);
            }
            if self.restarts == 1 {
                return x_adv;
            }
            let final_loss = floats(objective.plain(model.logits(x_adv.clone())));
            best = Some(keep_higher_loss(best, x_adv, final_loss));
        }
        best.map(|(x_adv, _)| x_adv).unwrap_or(x)
    }

    /// Evaluation PGD (Rice et al.'s `attack_pgd` with `early_stop`): a point counts as
    /// broken if it is misclassified clean or at ANY iterate of any restart (the random start
    /// included), and keeps that first misclassifying image; robust points get the last
    /// iterate of their highest-loss restart (what [`Pgd::run`] returns). The robust share
    /// therefore never exceeds the clean accuracy.
    pub fn evaluate<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: Tensor<B::InnerBackend, 1, Int>,
        attempt: u64,
    ) -> PgdOutcome<B::InnerBackend> {
        let y_host = crate::ints(y.clone());
        let mut state = Tally {
            robust: agree(&predictions(model.logits(x.clone())), &y_host),
            broken_at: x.clone(),
            best: None,
            gradient: GradientCheck::default(),
        };
        let mut rng = self.rng(attempt);
        let objective = Objective::new(model, &x, y, self.loss);
        for restart in 0..self.restarts {
            if !state.robust.iter().any(|&r| r) {
                break;
            }
            let start = self.start_point(&x, &mut rng);
            self.evaluation_restart::<B, C>(
                model, &x, start, &y_host, &objective, restart, &mut state,
            );
        }
        let adversarial = match state.best {
            Some((kept, _)) => choose_rows(state.broken_at, kept, &state.robust),
            None => state.broken_at,
        };
        PgdOutcome {
            adversarial,
            robust: state.robust,
            gradient: state.gradient,
        }
    }

    /// One restart of [`Pgd::evaluate`] from `x_adv`: checks the prediction at every
    /// iterate (the start and the last one included) and records the points it breaks.
    #[allow(clippy::too_many_arguments)]
    fn evaluation_restart<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: &Tensor<B::InnerBackend, 4>,
        mut x_adv: Tensor<B::InnerBackend, 4>,
        y: &[i64],
        objective: &Objective<B::InnerBackend>,
        restart: usize,
        state: &mut Tally<B::InnerBackend>,
    ) {
        for t in 0..=self.steps {
            let (logits, grad) = if t < self.steps {
                let g = input_gradient::<B, C>(model, &x_adv, |l| objective.on_graph::<B>(l));
                if restart == 0 && t == 0 {
                    state.gradient = g.check();
                }
                (g.logits, Some(g.grad))
            } else {
                (model.logits(x_adv.clone()), None)
            };
            let pred = predictions(logits.clone());
            let newly: Vec<bool> = (0..pred.len())
                .map(|i| state.robust[i] && pred[i] != y[i])
                .collect();
            state.broken_at = choose_rows(state.broken_at.clone(), x_adv.clone(), &newly);
            for (r, b) in state.robust.iter_mut().zip(&newly) {
                *r &= !b;
            }
            match grad {
                Some(_) if !state.robust.iter().any(|&r| r) => return,
                Some(grad) => x_adv = self.step(x_adv, grad, x),
                None => {
                    let final_loss = floats(objective.plain(logits));
                    state.best = Some(keep_higher_loss(
                        state.best.take(),
                        x_adv.clone(),
                        final_loss,
                    ));
                }
            }
        }
    }

    fn rng(&self, attempt: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The starting point of one restart.
    fn start_point<IB: Backend>(&self, x: &Tensor<IB, 4>, rng: &mut StdRng) -> Tensor<IB, 4> {
        let device = x.device();
        let shape = x.dims();
        let delta = match (self.start, self.norm) {
            (Start::Clean, _) => return x.clone(),
            (Start::Uniform, Norm::Linf) => uniform_signed(shape, rng, &device) * self.eps,
            (Start::Uniform, Norm::L2) => {
                let direction = normalize(gaussian(shape, rng, &device), Norm::L2);
                let radii: Vec<f32> = (0..shape[0])
                    .map(|_| rand::Rng::random::<f32>(rng))
                    .collect();
                direction * crate::row_values(&radii, &device) * self.eps
            }
            (Start::Gaussian(sigma), _) => gaussian(shape, rng, &device) * sigma,
        };
        project(x.clone() + delta, x.clone(), self.eps, self.norm)
    }

    /// One ascent step from `x_adv` along `grad`, projected back into the ball around `x`.
    fn step<IB: Backend>(
        &self,
        x_adv: Tensor<IB, 4>,
        grad: Tensor<IB, 4>,
        x: &Tensor<IB, 4>,
    ) -> Tensor<IB, 4> {
        project(
            x_adv + ascent_direction(grad, self.norm) * self.step_size,
            x.clone(),
            self.eps,
            self.norm,
        )
    }
}

/// The result of [`Pgd::evaluate`].
#[derive(Clone, Debug)]
pub struct PgdOutcome<B: Backend> {
    /// Per point: the first misclassifying image (the clean one if it is misclassified), or,
    /// for robust points, the last iterate of the restart with the highest loss.
    pub adversarial: Tensor<B, 4>,
    /// Per point: true when neither the clean image nor any iterate was misclassified.
    pub robust: Vec<bool>,
    /// The input gradient at the first restart's starting point (zero-gradient check).
    pub gradient: GradientCheck,
}

impl<B: Backend> PgdOutcome<B> {
    /// How many points stayed robust.
    pub fn robust_count(&self) -> usize {
        self.robust.iter().filter(|&&r| r).count()
    }
}

/// What [`Pgd::evaluate`] has found so far.
struct Tally<IB: Backend> {
    /// Per point: no iterate misclassified yet.
    robust: Vec<bool>,
    /// The first misclassifying image of each broken point.
    broken_at: Tensor<IB, 4>,
    /// The highest-loss last iterate over the restarts, with its losses.
    best: Option<(Tensor<IB, 4>, Vec<f32>)>,
    /// The gradient at the first start point.
    gradient: GradientCheck,
}

/// Per example, the candidate with the higher loss (ties go to the newer one).
fn keep_higher_loss<IB: Backend>(
    best: Option<(Tensor<IB, 4>, Vec<f32>)>,
    x_adv: Tensor<IB, 4>,
    loss: Vec<f32>,
) -> (Tensor<IB, 4>, Vec<f32>) {
    match best {
        None => (x_adv, loss),
        Some((kept, kept_loss)) => {
            let better: Vec<bool> = loss.iter().zip(&kept_loss).map(|(a, b)| a >= b).collect();
            let losses = loss
                .iter()
                .zip(&kept_loss)
                .map(|(a, b)| a.max(*b))
                .collect();
            (choose_rows(kept, x_adv, &better), losses)
        }
    }
}

/// PGD's objective with what it needs: labels and, for TRADES' KL, the clean prediction.
struct Objective<IB: Backend> {
    loss: PgdLoss,
    y: Tensor<IB, 1, Int>,
    clean_probs: Option<Tensor<IB, 2>>,
}

impl<IB: Backend> Objective<IB> {
    fn new<B, C>(model: &C, x: &Tensor<IB, 4>, y: Tensor<IB, 1, Int>, loss: PgdLoss) -> Self
    where
        B: AutodiffBackend<InnerBackend = IB>,
        C: Classifier<B>,
    {
        let clean_probs = match loss {
            PgdLoss::KlToClean => Some(softmax(model.logits(x.clone()), 1)),
            PgdLoss::CrossEntropy => None,
        };
        Self {
            loss,
            y,
            clean_probs,
        }
    }

    /// The per-example objective on logits with a graph.
    fn on_graph<B: AutodiffBackend<InnerBackend = IB>>(
        &self,
        logits: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let probs = self.clean_probs.clone().map(Tensor::from_inner);
        objective(self.loss, logits, Tensor::from_inner(self.y.clone()), probs)
    }

    /// The per-example objective on plain logits.
    fn plain(&self, logits: Tensor<IB, 2>) -> Tensor<IB, 1> {
        objective(self.loss, logits, self.y.clone(), self.clean_probs.clone())
    }
}

/// Cross-entropy, or TRADES' KL(p || softmax(logits)) with `probs` = p.
fn objective<Bk: Backend>(
    loss: PgdLoss,
    logits: Tensor<Bk, 2>,
    y: Tensor<Bk, 1, Int>,
    probs: Option<Tensor<Bk, 2>>,
) -> Tensor<Bk, 1> {
    match (loss, probs) {
        (PgdLoss::KlToClean, Some(p)) => {
            let log_p = p.clone().clamp_min(1e-12).log();
            (p * (log_p - log_softmax(logits, 1)))
                .sum_dim(1)
                .squeeze_dim(1)
        }
        _ => cross_entropy_each(logits, y),
    }
}
