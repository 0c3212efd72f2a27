//! Objectives: cross-entropy with label smoothing and the KL enhancement term.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor};
use serde::{Deserialize, Serialize};

/// How the KL term is reduced over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlReduction {
    /// Sum over classes, mean over the batch (the mathematical KL per example).
    BatchMean,
    /// The official release (`KLDivLoss()` mean): additionally divided by the number of
    /// classes, so its lambda acts as lambda / classes.
    Official,
}

/// Cross-entropy with PyTorch's label smoothing: targets `(1 - s) * onehot + s / classes`.
/// Mean over the batch; result shape `[1]`.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    smoothing: f64,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let nll = logp
        .clone()
        .gather(1, labels.reshape([n, 1]))
        .neg()
        .reshape([n]);
    if smoothing > 0.0 {
        let uniform = logp.mean_dim(1).neg().reshape([n]);
        (nll * (1.0 - smoothing) + uniform * smoothing).mean()
    } else {
        nll.mean()
    }
}

/// KL(p_teacher || p_student) with the teacher side detached (it gets no gradient).
pub fn kl_to_teacher<B: Backend>(
    teacher_logits: Tensor<B, 2>,
    student_logits: Tensor<B, 2>,
    reduction: KlReduction,
) -> Tensor<B, 1> {
    let [_, classes] = teacher_logits.dims();
    let teacher = teacher_logits.detach();
    let p = softmax(teacher.clone(), 1);
    let kl = (p * (log_softmax(teacher, 1) - log_softmax(student_logits, 1)))
        .sum_dim(1)
        .mean();
    match reduction {
        KlReduction::BatchMean => kl,
        KlReduction::Official => kl / classes as f64,
    }
}

/// Number of correct top-1 predictions.
pub fn correct<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> usize {
    let n = labels.dims()[0];
    let pred = logits.argmax(1).reshape([n]);
    pred.equal(labels).int().sum().into_scalar().elem::<i64>() as usize
}
