//! Adversarial attacks on image classifiers with inputs in [0, 1].
//!
//! - [`pgd`]: projected gradient descent (L-inf and L2, random start, restarts, CE or
//!   TRADES' KL objective), as Madry et al. and Rice et al.
//! - [`apgd`]: AutoPGD with the CE, DLR and targeted-DLR losses (Croce & Hein 2020), with
//!   the original step-size schedule, momentum and checkpoints.
//! - [`fab`]: FAB and FAB-T (minimum-norm boundary attack), L-inf and L2.
//! - [`square`]: the Square attack (score-based, L-inf and L2).
//! - [`autoattack`]: the 'standard', 'plus' and 'rand' AutoAttack versions, each attack run
//!   only on the points still robust, with the sanity checks of [`checks`].
//!
//! Every attack sees the model through [`Classifier`]; [`EvalNetwork`] wraps a [`Network`]
//! with batch norm in evaluation mode and weights excluded from the autodiff graph, so
//! attacks never move running statistics or weights.

pub mod apgd;
pub mod autoattack;
pub mod checks;
pub mod fab;
pub mod pgd;
pub mod square;

use std::fmt;
use std::str::FromStr;

use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use ews_models::{BnMode, ModelError, Network, Subnet, SubnetMasks};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Errors of attack settings.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// A setting out of range; the message names it.
    #[error("attack setting: {0}")]
    Config(String),
}

/// The threat model's norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Norm {
    /// ||delta||_inf <= eps.
    #[serde(rename = "Linf")]
    Linf,
    /// ||delta||_2 <= eps.
    #[serde(rename = "L2")]
    L2,
}

impl fmt::Display for Norm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Norm::Linf => "Linf",
            Norm::L2 => "L2",
        })
    }
}

impl FromStr for Norm {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linf" | "l-inf" | "inf" => Ok(Norm::Linf),
            "l2" => Ok(Norm::L2),
            _ => Err(AttackError::Config(format!(
                "norm `{s}`: expected linf or l2"
            ))),
        }
    }
}

/// Parses a radius such as `8/255`, `0.5` or `128/255`.
pub fn parse_eps(text: &str) -> Result<f64, AttackError> {
    let bad = || {
        AttackError::Config(format!(
            "eps `{text}`: expected a number or a fraction like 8/255"
        ))
    };
    let value = match text.split_once('/') {
        Some((num, den)) => {
            let num: f64 = num.trim().parse().map_err(|_| bad())?;
            let den: f64 = den.trim().parse().map_err(|_| bad())?;
            num / den
        }
        None => text.trim().parse().map_err(|_| bad())?,
    };
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(AttackError::Config(format!(
            "eps `{text}` must be positive"
        )))
    }
}

/// A model under attack: logits with an input-gradient path, and plain logits.
pub trait Classifier<B: AutodiffBackend> {
    /// Logits `[batch, classes]` whose graph reaches the input (weights are not tracked).
    fn logits_grad(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
    /// Logits without any graph.
    fn logits(&self, x: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 2>;
}

/// A [`Network`] (or one of its subnets) in evaluation mode: batch norm uses the running
/// statistics and never updates them, weights get no gradients.
pub struct EvalNetwork<B: AutodiffBackend> {
    tracked: Network<B>,
    plain: Network<B::InnerBackend>,
    masks: Option<(SubnetMasks<B>, SubnetMasks<B::InnerBackend>)>,
}

impl<B: AutodiffBackend> EvalNetwork<B> {
    /// The full network.
    pub fn new(model: &Network<B>) -> Self {
        Self {
            tracked: model.clone().no_grad(),
            plain: model.valid(),
            masks: None,
        }
    }

    /// A subnet of the network (its masks are built on `device` for both passes).
    pub fn subnet(
        model: &Network<B>,
        subnet: &Subnet,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let space = model.subnet_space();
        let masks = (
            subnet.to_masks::<B>(&space, device)?,
            subnet.to_masks::<B::InnerBackend>(&space, device)?,
        );
        Ok(Self {
            masks: Some(masks),
            ..Self::new(model)
        })
    }
}

impl<B: AutodiffBackend> Classifier<B> for EvalNetwork<B> {
    fn logits_grad(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match &self.masks {
            Some((masks, _)) => self.tracked.forward_subnet(x, masks, BnMode::Eval),
            None => self.tracked.forward(x, BnMode::Eval),
        }
    }
    fn logits(&self, x: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 2> {
        match &self.masks {
            Some((_, masks)) => self.plain.forward_subnet(x, masks, BnMode::Eval),
            None => self.plain.forward(x, BnMode::Eval),
        }
    }
}

/// Per-example cross-entropy `[batch]`.
pub fn cross_entropy_each<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    log_softmax(logits, 1)
        .gather(1, y.reshape([n, 1]))
        .neg()
        .reshape([n])
}

/// The logit of class `y` per row `[batch]`.
fn pick<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    logits.gather(1, y.reshape([n, 1])).reshape([n])
}

/// Column `k` of the ascending sort, counted from the end (`from_end` = 1 is the largest).
fn sorted_col<B: Backend>(sorted: &Tensor<B, 2>, from_end: usize) -> Tensor<B, 1> {
    let [n, classes] = sorted.dims();
    sorted.clone().narrow(1, classes - from_end, 1).reshape([n])
}

/// The DLR loss (Croce & Hein 2020) per example:
/// `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`, z sorted descending as pi.
/// Needs at least three classes.
pub fn dlr_loss<B: Backend>(logits: Tensor<B, 2>, y: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let [n, classes] = logits.dims();
    assert!(classes >= 3, "the DLR loss needs at least 3 classes");
    let (sorted, order) = logits.clone().sort_with_indices(1);
    let top_is_y = order
        .narrow(1, classes - 1, 1)
        .reshape([n])
        .equal(y.clone())
        .float();
    let z_y = pick(logits, y);
    let first = sorted_col(&sorted, 1);
    let second = sorted_col(&sorted, 2);
    let third = sorted_col(&sorted, 3);
    let other = second * top_is_y.clone() + first.clone() * (top_is_y.neg() + 1.0);
    ((z_y - other) / (first - third + 1e-12)).neg()
}

/// The targeted DLR loss per example:
/// `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`. Needs at least four classes.
pub fn dlr_targeted_loss<B: Backend>(
    logits: Tensor<B, 2>,
    y: Tensor<B, 1, Int>,
    target: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [_, classes] = logits.dims();
    assert!(
        classes >= 4,
        "the targeted DLR loss needs at least 4 classes"
    );
    let sorted = logits.clone().sort(1);
    let z_y = pick(logits.clone(), y);
    let z_t = pick(logits, target);
    let scale = sorted_col(&sorted, 1) - (sorted_col(&sorted, 3) + sorted_col(&sorted, 4)) * 0.5;
    ((z_y - z_t) / (scale + 1e-12)).neg()
}

/// Predicted classes, on the host.
pub fn predictions<B: Backend>(logits: Tensor<B, 2>) -> Vec<i64> {
    let [n, _] = logits.dims();
    ints(logits.argmax(1).reshape([n]))
}

/// An integer tensor's values on the host.
pub(crate) fn ints<B: Backend>(t: Tensor<B, 1, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

/// A float tensor's values on the host.
pub(crate) fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Labels as a device tensor.
pub(crate) fn labels<B: Backend>(y: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(y.to_vec(), [y.len()]), device)
}

/// Rows of `other` where `flags` is true, rows of `base` elsewhere.
pub(crate) fn choose_rows<B: Backend, const D: usize>(
    base: Tensor<B, D>,
    other: Tensor<B, D>,
    flags: &[bool],
) -> Tensor<B, D> {
    if !flags.iter().any(|&f| f) {
        return base;
    }
    let dims = base.dims();
    let mut mask_shape = [1usize; D];
    mask_shape[0] = flags.len();
    let mask = Tensor::<B, 1, Bool>::from_data(
        TensorData::new(flags.to_vec(), [flags.len()]),
        &base.device(),
    )
    .reshape(mask_shape)
    .expand(dims);
    base.mask_where(mask, other)
}

/// A per-example value as a `[n, 1, 1, 1]` tensor.
pub(crate) fn row_values<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len(), 1, 1, 1]),
        device,
    )
}

/// The per-example norm `[n, 1, 1, 1]` of a perturbation.
pub fn norm_of<B: Backend>(delta: Tensor<B, 4>, norm: Norm) -> Tensor<B, 4> {
    let [n, ..] = delta.dims();
    let flat = delta.reshape([n as i32, -1]);
    let value = match norm {
        Norm::Linf => flat.abs().max_dim(1),
        Norm::L2 => flat.square().sum_dim(1).sqrt(),
    };
    value.reshape([n, 1, 1, 1])
}

/// `t / (||t|| + 1e-12)` per example.
pub fn normalize<B: Backend>(t: Tensor<B, 4>, norm: Norm) -> Tensor<B, 4> {
    let scale = norm_of(t.clone(), norm) + 1e-12;
    t / scale
}

/// Projects `x_adv` onto the `eps`-ball around `x` and then onto [0, 1]. (Clipping to the
/// box moves coordinates towards `x`, so the result stays in the ball.)
pub fn project<B: Backend>(
    x_adv: Tensor<B, 4>,
    x: Tensor<B, 4>,
    eps: f64,
    norm: Norm,
) -> Tensor<B, 4> {
    let delta = x_adv - x.clone();
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps),
        Norm::L2 => {
            let length = norm_of(delta.clone(), norm);
            let factor = (length.clone() + 1e-12)
                .recip()
                .mul_scalar(eps)
                .clamp_max(1.0);
            delta * factor
        }
    };
    (x + delta).clamp(0.0, 1.0)
}

/// A tensor of `shape` filled from a host sampler (reproducible on every backend).
fn host_random<B: Backend>(
    shape: [usize; 4],
    device: &B::Device,
    sample: impl FnMut() -> f32,
) -> Tensor<B, 4> {
    let values: Vec<f32> = std::iter::repeat_with(sample)
        .take(shape.iter().product())
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Uniform values in [-1, 1) from a host generator.
pub(crate) fn uniform_signed<B: Backend, R: Rng>(
    shape: [usize; 4],
    rng: &mut R,
    device: &B::Device,
) -> Tensor<B, 4> {
    host_random(shape, device, || rng.random::<f32>() * 2.0 - 1.0)
}

/// Standard normal values from a host generator.
pub(crate) fn gaussian<B: Backend, R: Rng>(
    shape: [usize; 4],
    rng: &mut R,
    device: &B::Device,
) -> Tensor<B, 4> {
    host_random(shape, device, || {
        rng.sample::<f32, _>(rand_distr::StandardNormal)
    })
}

/// The steepest-ascent direction of a gradient under `norm`: its sign (L-inf) or the
/// gradient scaled to unit length (L2).
pub(crate) fn ascent_direction<B: Backend>(grad: Tensor<B, 4>, norm: Norm) -> Tensor<B, 4> {
    match norm {
        Norm::Linf => grad.sign(),
        Norm::L2 => normalize(grad, Norm::L2),
    }
}

/// The restart loop the attacks share: `rounds` rounds, each on the points of `x` still
/// `robust`. A round gets its number, the indices of its points and their images, and returns
/// candidates for them with the points they fooled; a fooled point keeps its first
/// adversarial example and leaves later rounds.
pub(crate) fn attack_while_robust<B: Backend>(
    x: &Tensor<B, 4>,
    mut robust: Vec<bool>,
    rounds: usize,
    mut round: impl FnMut(usize, &[usize], Tensor<B, 4>) -> (Tensor<B, 4>, Vec<bool>),
) -> Tensor<B, 4> {
    let mut adv = x.clone();
    for r in 0..rounds {
        let idx: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
        if idx.is_empty() {
            break;
        }
        let (found, fooled) = round(r, &idx, subset(x, &idx));
        let rows: Vec<usize> = (0..idx.len()).filter(|&j| fooled[j]).collect();
        if rows.is_empty() {
            continue;
        }
        let targets: Vec<usize> = rows.iter().map(|&j| idx[j]).collect();
        adv = scatter_rows(adv, &targets, subset(&found, &rows));
        for i in targets {
            robust[i] = false;
        }
    }
    adv
}

/// `+1` or `-1` with equal probability (the reference's sign of U(-1, 1)).
pub(crate) fn random_sign<R: Rng>(rng: &mut R) -> f32 {
    if rng.random::<f32>() * 2.0 - 1.0 >= 0.0 {
        1.0
    } else {
        -1.0
    }
}

/// Per point, whether the prediction equals the label.
pub(crate) fn agree(pred: &[i64], y: &[i64]) -> Vec<bool> {
    pred.iter().zip(y).map(|(p, t)| p == t).collect()
}

/// An input gradient with the per-example loss and the logits it came with.
pub(crate) struct InputGradient<B: AutodiffBackend> {
    /// `d sum(loss) / d x`; zeros where the graph does not reach the input.
    pub grad: Tensor<B::InnerBackend, 4>,
    /// The per-example loss at `x`.
    pub loss: Tensor<B::InnerBackend, 1>,
    /// The logits at `x`.
    pub logits: Tensor<B::InnerBackend, 2>,
    /// Whether the model's graph reached the input (false: `grad` is a stand-in of zeros).
    pub reaches_input: bool,
}

impl<B: AutodiffBackend> InputGradient<B> {
    /// AutoAttack's zero-gradient check on this gradient.
    pub fn check(&self) -> GradientCheck {
        gradient_check(&self.grad, self.reaches_input)
    }
}

/// The zero-gradient check of a gradient: points whose gradient is exactly zero (all of them
/// when the graph did not reach the input).
pub(crate) fn gradient_check<B: Backend>(
    grad: &Tensor<B, 4>,
    reaches_input: bool,
) -> GradientCheck {
    let [n, ..] = grad.dims();
    let zero = if reaches_input {
        let sums = floats(grad.clone().abs().reshape([n as i32, -1]).sum_dim(1));
        sums.iter().filter(|&&s| s == 0.0).count()
    } else {
        n
    };
    GradientCheck {
        points: n,
        zero,
        reaches_input,
    }
}

/// The input gradient of `loss(logits(x))` summed over the batch, and the per-example loss
/// and logits at `x`. A model whose graph does not reach the input gets zeros, marked as such.
pub(crate) fn input_gradient<B: AutodiffBackend, C: Classifier<B>>(
    model: &C,
    x: &Tensor<B::InnerBackend, 4>,
    loss: impl Fn(Tensor<B, 2>) -> Tensor<B, 1>,
) -> InputGradient<B> {
    let x = Tensor::<B, 4>::from_inner(x.clone()).require_grad();
    let logits = model.logits_grad(x.clone());
    let each = loss(logits.clone());
    let grads = each.clone().sum().backward();
    let (grad, reaches_input) = match x.grad(&grads) {
        Some(g) => (g, true),
        None => (x.inner().zeros_like(), false),
    };
    InputGradient {
        grad,
        loss: each.inner(),
        logits: logits.inner(),
        reaches_input,
    }
}

/// What the input gradient looked like where an attack started (AutoAttack's
/// `check_zero_gradients`): a zero gradient stops gradient attacks and hints at gradient
/// masking (input quantisation, detached inputs, saturated losses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradientCheck {
    /// Points checked.
    pub points: usize,
    /// Points whose input gradient is exactly zero.
    pub zero: usize,
    /// False when the model's graph does not reach the input at all (every gradient zero).
    pub reaches_input: bool,
}

impl GradientCheck {
    /// Both checks together (counts add up; the input is reached only if it was in both).
    pub fn merge(self, other: GradientCheck) -> GradientCheck {
        if self.points == 0 {
            return other;
        }
        if other.points == 0 {
            return self;
        }
        GradientCheck {
            points: self.points + other.points,
            zero: self.zero + other.zero,
            reaches_input: self.reaches_input && other.reaches_input,
        }
    }
}

/// Accuracy bookkeeping helper: how many of `pred` equal `y`.
pub fn count_correct(pred: &[i64], y: &[i64]) -> usize {
    pred.iter().zip(y).filter(|(p, t)| p == t).count()
}

/// Rows `idx` of `t`.
pub(crate) fn subset<B: Backend, const D: usize>(t: &Tensor<B, D>, idx: &[usize]) -> Tensor<B, D> {
    let index: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    t.clone().select(0, labels::<B>(&index, &t.device()))
}

/// `base` with rows `idx` replaced by the rows of `rows` (in order).
pub(crate) fn scatter_rows<B: Backend, const D: usize>(
    base: Tensor<B, D>,
    idx: &[usize],
    rows: Tensor<B, D>,
) -> Tensor<B, D> {
    let n = base.dims()[0];
    let mut map: Vec<i64> = (0..n as i64).collect();
    for (j, &i) in idx.iter().enumerate() {
        map[i] = (n + j) as i64;
    }
    let device = base.device();
    Tensor::cat(vec![base, rows], 0).select(0, labels::<B>(&map, &device))
}
