//! Log-likelihoods of drawing items without replacement from a softmax.

use burn::tensor::{Int, Tensor, TensorData, activation::softmax, backend::Backend};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which log-probability REINFORCE uses for a draw of k items without replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogProbKind {
    /// The exact Plackett-Luce likelihood of the ordered draw:
    /// `sum_t log p(i_t) - log(1 - sum_{s<t} p(i_s))`.
    Exact,
    /// The official release's approximation: `sum_t log(p(i_t) + 1e-6)`, as if every item
    /// were drawn from the full softmax.
    Approximate,
}

/// Added to probabilities by the official release before taking logs.
pub const PROB_EPS: f64 = 1e-6;

/// The log-probability of the ordered draw `chosen` (indices into `logits`, first drawn
/// first) under `kind`. `logits` has shape `[n]`; the result has shape `[1]`.
pub fn draw_log_prob<B: Backend>(
    logits: Tensor<B, 1>,
    chosen: &[usize],
    kind: LogProbKind,
) -> Tensor<B, 1> {
    let device = logits.device();
    let k = chosen.len();
    let index = Tensor::<B, 1, Int>::from_data(
        TensorData::new(chosen.iter().map(|&i| i as i64).collect::<Vec<_>>(), [k]),
        &device,
    );
    let probs = softmax(logits, 0);
    let picked = probs.select(0, index);
    match kind {
        LogProbKind::Approximate => (picked + PROB_EPS).log().sum(),
        LogProbKind::Exact => {
            // Mass already drawn before each pick: exclusive cumulative sum.
            let before = picked.clone().cumsum(0) - picked.clone();
            let remaining = (before.neg() + 1.0).clamp_min(1e-12);
            picked.clamp_min(1e-30).log().sum() - remaining.log().sum()
        }
    }
}

/// The entropy `-sum p log p` of the softmax of `logits` (shape `[n]` -> `[1]`).
pub fn entropy<B: Backend>(logits: Tensor<B, 1>) -> Tensor<B, 1> {
    let probs = softmax(logits, 0);
    (probs.clone() * probs.clamp_min(1e-30).log()).sum().neg()
}

/// Draws `k` distinct indices from the softmax of `logits` (host values), one after the
/// other, each from the remaining probabilities renormalised: a Plackett-Luce sample. The
/// result is in draw order.
pub fn sample_without_replacement<R: Rng + ?Sized>(
    logits: &[f32],
    k: usize,
    rng: &mut R,
) -> Vec<usize> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut weights: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let mut chosen = Vec::with_capacity(k);
    for _ in 0..k.min(logits.len()) {
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = None;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                pick = Some(i);
                if u < w {
                    break;
                }
                u -= w;
            }
        }
        let i = pick.expect("a remaining item");
        chosen.push(i);
        weights[i] = 0.0;
    }
    chosen
}
