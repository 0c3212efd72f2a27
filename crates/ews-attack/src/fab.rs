//! FAB (Croce & Hein, ICML 2020): a minimum-norm attack that linearises the decision
//! boundary, projects onto it (inside the [0, 1] box) from the current point and from the
//! original point, mixes both steps, overshoots by eta and steps back by beta after each
//! success. FAB-T attacks the 2nd..(n_targets+1)-th most likely classes one by one.
//! A point counts as fooled only when its smallest found perturbation is within eps.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::attack_while_robust;
use crate::{AttackError, Classifier, Norm, agree, floats, input_gradient, labels, predictions};

/// FAB settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fab {
    /// Norm that is minimised.
    pub norm: Norm,
    /// Radius: success threshold and the scale of random starts.
    pub eps: f64,
    /// Iterations per run.
    pub n_iter: usize,
    /// Restarts (the first from the clean point, later ones from random points).
    pub restarts: usize,
    /// `Some(n)`: FAB-T against the n next most likely classes; `None`: untargeted.
    pub n_targets: Option<usize>,
    /// Largest weight of the step from the original point.
    pub alpha_max: f64,
    /// Overshoot.
    pub eta: f64,
    /// Backward step after a success.
    pub beta: f64,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Fab {
    /// AutoAttack's FAB-T: 9 targets, 100 iterations, one restart.
    pub fn targeted(norm: Norm, eps: f64) -> Self {
        Self {
            norm,
            eps,
            n_iter: 100,
            restarts: 1,
            n_targets: Some(9),
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
            seed: 0,
        }
    }

    /// AutoAttack 'plus' untargeted FAB: 5 restarts.
    pub fn untargeted(norm: Norm, eps: f64) -> Self {
        Self {
            restarts: 5,
            n_targets: None,
            ..Self::targeted(norm, eps)
        }
    }

    /// Checks the settings against the number of classes.
    pub fn validate(&self, classes: usize) -> Result<(), AttackError> {
        if self.eps.is_nan() || self.eps <= 0.0 || self.n_iter == 0 || self.restarts == 0 {
            return Err(AttackError::Config(format!(
                "fab: invalid settings {self:?}"
            )));
        }
        if let Some(n) = self.n_targets
            && n + 1 > classes
        {
            return Err(AttackError::Config(format!(
                "fab-t with {n} targets needs at least {} classes, the model has {classes}",
                n + 1
            )));
        }
        Ok(())
    }

    /// Adversarial examples within eps for the correctly classified points of `x`; the other
    /// points come back unchanged.
    pub fn run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
    ) -> Tensor<B::InnerBackend, 4> {
        let device = x.device();
        let robust = agree(&predictions(model.logits(x.clone())), y);
        let mut rng = StdRng::seed_from_u64(self.seed);
        let ranks: Vec<Option<usize>> = match self.n_targets {
            Some(n) => (2..n + 2).map(Some).collect(),
            None => vec![None],
        };
        let rounds = ranks.len() * self.restarts;
        attack_while_robust(&x, robust, rounds, |r, idx, x_sub| {
            let shape = x_sub.dims();
            let dim = shape[1] * shape[2] * shape[3];
            let points = floats(x_sub);
            let y_sub: Vec<i64> = idx.iter().map(|&i| y[i]).collect();
            let restart = r % self.restarts;
            let found = self.single_run::<B, C>(
                model,
                &points,
                shape,
                &y_sub,
                ranks[r / self.restarts],
                restart > 0,
                &mut rng,
                &device,
            );
            let found_t = Tensor::from_data(TensorData::new(found.clone(), shape), &device);
            let pred = predictions(model.logits(Tensor::clone(&found_t)));
            // Fooled only within eps: FAB minimises the norm and may end outside the ball.
            let fooled = (0..idx.len())
                .map(|j| {
                    let size = distance(
                        &found[j * dim..(j + 1) * dim],
                        &points[j * dim..(j + 1) * dim],
                        self.norm,
                    );
                    pred[j] != y_sub[j] && size <= self.eps as f32
                })
                .collect();
            (found_t, fooled)
        })
    }

    /// The boundary difference `f_other - f_y` and its input gradient for each point:
    /// the target class (FAB-T) or the closest class under the linearisation.
    fn linearisation<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x1: &Tensor<B::InnerBackend, 4>,
        y: &Tensor<B::InnerBackend, 1, Int>,
        target: Option<&Tensor<B::InnerBackend, 1, Int>>,
        classes: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let n = x1.dims()[0];
        let dim = x1.dims()[1] * x1.dims()[2] * x1.dims()[3];
        let difference = |k: Tensor<B::InnerBackend, 1, Int>| {
            let y = y.clone();
            move |logits: Tensor<B, 2>| {
                let [n, _] = logits.dims();
                let other = logits.clone().gather(
                    1,
                    Tensor::<B, 1, Int>::from_inner(k.clone()).reshape([n, 1]),
                );
                let own = logits.gather(
                    1,
                    Tensor::<B, 1, Int>::from_inner(y.clone()).reshape([n, 1]),
                );
                (other - own).reshape([n])
            }
        };
        if let Some(t) = target {
            let g = input_gradient::<B, C>(model, x1, difference(t.clone()));
            return (floats(g.loss), floats(g.grad));
        }
        // Untargeted: every class's difference, keep the one closest under the dual norm.
        let y_host = crate::ints(y.clone());
        let mut best_dist = vec![f32::INFINITY; n];
        let mut best_f = vec![0.0f32; n];
        let mut best_g = vec![0.0f32; n * dim];
        for k in 0..classes {
            let ks = labels::<B::InnerBackend>(&vec![k as i64; n], &x1.device());
            let g = input_gradient::<B, C>(model, x1, difference(ks));
            let (f, g) = (floats(g.loss), floats(g.grad));
            for e in 0..n {
                if y_host[e] == k as i64 {
                    continue;
                }
                let row = &g[e * dim..(e + 1) * dim];
                let dual = match self.norm {
                    Norm::Linf => row.iter().map(|v| v.abs()).sum::<f32>(),
                    Norm::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
                };
                let d = f[e].abs() / (dual + 1e-12);
                if d < best_dist[e] {
                    best_dist[e] = d;
                    best_f[e] = f[e];
                    best_g[e * dim..(e + 1) * dim].copy_from_slice(row);
                }
            }
        }
        (best_f, best_g)
    }

    #[allow(clippy::too_many_arguments)]
    fn single_run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        points: &[f32],
        shape: [usize; 4],
        y: &[i64],
        target_rank: Option<usize>,
        random_start: bool,
        rng: &mut StdRng,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Vec<f32> {
        let [n, ..] = shape;
        let dim = points.len() / n;
        let upload = |v: &[f32]| {
            Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(v.to_vec(), shape), device)
        };
        let logits = model.logits(upload(points));
        let classes = logits.dims()[1];
        let y_dev = labels::<B::InnerBackend>(y, device);
        let target = target_rank.map(|rank| {
            let (_, order) = logits.clone().sort_with_indices(1);
            order.narrow(1, classes - rank, 1).reshape([n])
        });
        let original = points.to_vec();
        let mut x1 = original.clone();
        if random_start {
            for e in 0..n {
                let t: Vec<f32> = match self.norm {
                    Norm::Linf => (0..dim).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect(),
                    Norm::L2 => (0..dim)
                        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
                        .collect(),
                };
                let scale = distance(&t, &vec![0.0; dim], self.norm);
                for (v, r) in x1[e * dim..(e + 1) * dim].iter_mut().zip(&t) {
                    *v = (*v + self.eps as f32 * r / scale * 0.5).clamp(0.0, 1.0);
                }
            }
        }
        let mut best = original.clone();
        let mut best_size = vec![f32::INFINITY; n];
        for _ in 0..self.n_iter {
            let (df, dg) =
                self.linearisation::<B, C>(model, &upload(&x1), &y_dev, target.as_ref(), classes);
            let mut next = vec![0.0f32; n * dim];
            for (e, &gap) in df.iter().enumerate() {
                let range = e * dim..(e + 1) * dim;
                let w = &dg[range.clone()];
                let current = &x1[range.clone()];
                let start = &original[range.clone()];
                let b = -gap + w.iter().zip(current).map(|(a, c)| a * c).sum::<f32>();
                let d1 = project_onto_hyperplane(current, w, b, self.norm);
                let d2 = project_onto_hyperplane(start, w, b, self.norm);
                let a1 = distance(&d1, &vec![0.0; dim], self.norm).max(1e-8);
                let a2 = distance(&d2, &vec![0.0; dim], self.norm).max(1e-8);
                let alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max as f32);
                let eta = self.eta as f32;
                for (i, out) in next[range].iter_mut().enumerate() {
                    *out = ((current[i] + eta * d1[i]) * (1.0 - alpha)
                        + (start[i] + eta * d2[i]) * alpha)
                        .clamp(0.0, 1.0);
                }
            }
            x1 = next;
            let pred = predictions(model.logits(upload(&x1)));
            for e in 0..n {
                if pred[e] == y[e] {
                    continue;
                }
                let range = e * dim..(e + 1) * dim;
                let size = distance(&x1[range.clone()], &original[range.clone()], self.norm);
                if size < best_size[e] {
                    best_size[e] = size;
                    best[range.clone()].copy_from_slice(&x1[range.clone()]);
                }
                let beta = self.beta as f32;
                for (v, o) in x1[range.clone()].iter_mut().zip(&original[range]) {
                    *v = o + (*v - o) * beta;
                }
            }
        }
        best
    }
}

/// `||a - b||` in the given norm.
fn distance(a: &[f32], b: &[f32], norm: Norm) -> f32 {
    let diffs = a.iter().zip(b).map(|(x, y)| x - y);
    match norm {
        Norm::Linf => diffs.fold(0.0, |m, d| m.max(d.abs())),
        Norm::L2 => diffs.map(|d| d * d).sum::<f32>().sqrt(),
    }
}

/// The smallest step `d` (in `norm`) with `w . (t + d) = b` and `t + d` in [0, 1]; where the
/// box makes the hyperplane unreachable, the step to the box corner that moves `w . t`
/// furthest towards `b`.
///
/// With `c = |w . t - b|` to be removed, coordinate i can contribute at most
/// `|w_i| p_i`, p_i its distance to the box edge in the useful direction. L-inf:
/// `d_i = -s_i min(lambda, p_i)`, L2: `d_i = -s_i min(lambda |w_i|, p_i)`, with the
/// smallest lambda that removes c (a piecewise-linear equation, solved over the sorted
/// breakpoints).
pub fn project_onto_hyperplane(t: &[f32], w: &[f32], b: f32, norm: Norm) -> Vec<f32> {
    let c = w.iter().zip(t).map(|(a, x)| a * x).sum::<f32>() - b;
    let flip = if c >= 0.0 { 1.0 } else { -1.0 };
    let need = c.abs();
    let zero = |wi: f32| match norm {
        Norm::Linf => wi == 0.0,
        Norm::L2 => wi.abs() < 1e-8,
    };
    // Per coordinate: direction, reach p_i, slope u_i (reduction per unit lambda), breakpoint.
    let mut items: Vec<(usize, f32, f32, f32)> = Vec::with_capacity(t.len());
    let mut total = 0.0f32;
    for (i, (&wi, &ti)) in w.iter().zip(t).enumerate() {
        let wi = wi * flip;
        if zero(wi) {
            continue;
        }
        let reach = if wi > 0.0 { ti } else { 1.0 - ti };
        let (slope, breakpoint) = match norm {
            Norm::Linf => (wi.abs(), reach),
            Norm::L2 => (wi * wi, reach / wi.abs()),
        };
        total += wi.abs() * reach;
        items.push((i, reach, slope, breakpoint));
    }
    let mut d = vec![0.0f32; t.len()];
    let direction = |i: usize| if w[i] * flip > 0.0 { -1.0f32 } else { 1.0 };
    if total < need {
        for &(i, reach, _, _) in &items {
            d[i] = direction(i) * reach;
        }
        return d;
    }
    items.sort_by(|a, b| a.3.total_cmp(&b.3));
    let mut slope_left: f32 = items.iter().map(|it| it.2).sum();
    let mut removed = 0.0f32;
    let mut lambda = 0.0f32;
    for &(i, reach, slope, breakpoint) in &items {
        lambda = (need - removed) / slope_left.max(f32::MIN_POSITIVE);
        if lambda <= breakpoint {
            break;
        }
        removed += w[i].abs() * reach;
        slope_left -= slope;
        lambda = breakpoint;
    }
    for &(i, reach, _, _) in &items {
        let amount = match norm {
            Norm::Linf => lambda.min(reach),
            Norm::L2 => (lambda * w[i].abs()).min(reach),
        };
        d[i] = direction(i) * amount;
    }
    d
}
