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

/// KL(p || q) of the softmaxes of two logit tensors, summed over classes and averaged over
/// the batch, with gradients into both sides (TRADES' robustness term, as the reference's
/// `KLDivLoss(log_softmax(q), softmax(p))` with batch-mean reduction).
pub fn kl_divergence<B: Backend>(p_logits: Tensor<B, 2>, q_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let p = softmax(p_logits.clone(), 1);
    (p * (log_softmax(p_logits, 1) - log_softmax(q_logits, 1)))
        .sum_dim(1)
        .mean()
}

/// KL(p_teacher || p_student) with the teacher side detached (it gets no gradient).
pub fn kl_to_teacher<B: Backend>(
    teacher_logits: Tensor<B, 2>,
    student_logits: Tensor<B, 2>,
    reduction: KlReduction,
) -> Tensor<B, 1> {
    let [_, classes] = teacher_logits.dims();
    let kl = kl_divergence(teacher_logits.detach(), student_logits);
    match reduction {
        KlReduction::BatchMean => kl,
        KlReduction::Official => kl / classes as f64,
    }
}

/// AugMix's Jensen-Shannon consistency term over `views` equal parts of `logits`
/// (view-major): the mean over views of KL(p_i || M), M = clamp(mean_i p_i, 1e-7, 1), each
/// KL summed over classes and averaged over the batch. Gradients flow into every view.
pub fn jensen_shannon<B: Backend>(logits: Tensor<B, 2>, views: usize) -> Tensor<B, 1> {
    let [total, classes] = logits.dims();
    assert!(
        views > 0 && total.is_multiple_of(views),
        "{total} rows are not {views} views"
    );
    let n = total / views;
    let log_p = log_softmax(logits.reshape([views, n, classes]), 2);
    let p = log_p.clone().exp();
    let log_m = p
        .clone()
        .mean_dim(0)
        .clamp(1e-7, 1.0)
        .log()
        .repeat_dim(0, views);
    (p * (log_p - log_m)).sum() / (n * views) as f64
}

/// Number of correct top-1 predictions.
pub fn correct<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> usize {
    correct_on_device(logits, labels)
        .into_scalar()
        .elem::<i64>() as usize
}

/// [`correct`] as a one-element device tensor, for accumulating without a host read.
pub fn correct_on_device<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1, Int> {
    let n = labels.dims()[0];
    let pred = logits.argmax(1).reshape([n]);
    pred.equal(labels).int().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn logits(values: [[f32; 3]; 2]) -> Tensor<Flex, 2> {
        Tensor::from_data(
            TensorData::new(values.concat(), [2, 3]),
            &Default::default(),
        )
    }

    fn hand_log_softmax(row: [f32; 3]) -> [f64; 3] {
        let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        row.map(|v| v as f64 - lse)
    }

    #[test]
    fn losses_match_hand_computation() {
        let rows = [[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0]];
        let labels = Tensor::<Flex, 1, Int>::from_data(
            TensorData::new(vec![1i64, 0], [2]),
            &Default::default(),
        );
        let (a, b) = (hand_log_softmax(rows[0]), hand_log_softmax(rows[1]));
        let ce = -(a[1] + b[0]) / 2.0;
        let got = cross_entropy(logits(rows), labels.clone(), 0.0)
            .into_scalar()
            .elem::<f64>();
        assert!((got - ce).abs() < 1e-5);
        // Label smoothing 0.1: targets 0.9 * onehot + 0.1 / 3.
        let smooth = |lp: [f64; 3], y: usize| -> f64 {
            -(0..3)
                .map(|k| (if k == y { 0.9 } else { 0.0 } + 0.1 / 3.0) * lp[k])
                .sum::<f64>()
        };
        let want = (smooth(a, 1) + smooth(b, 0)) / 2.0;
        let got = cross_entropy(logits(rows), labels.clone(), 0.1)
            .into_scalar()
            .elem::<f64>();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");

        let student = [[0.0f32, 0.0, 0.0], [1.0, 1.0, -2.0]];
        let (s0, s1) = (hand_log_softmax(student[0]), hand_log_softmax(student[1]));
        let kl = |p: [f64; 3], q: [f64; 3]| (0..3).map(|k| p[k].exp() * (p[k] - q[k])).sum::<f64>();
        let want = (kl(a, s0) + kl(b, s1)) / 2.0;
        let got = kl_to_teacher(logits(rows), logits(student), KlReduction::BatchMean)
            .into_scalar()
            .elem::<f64>();
        assert!((got - want).abs() < 1e-5);
        let official = kl_to_teacher(logits(rows), logits(student), KlReduction::Official)
            .into_scalar()
            .elem::<f64>();
        assert!((official - want / 3.0).abs() < 1e-5);
        assert_eq!(correct(logits(rows), labels), 1);
    }

    #[test]
    fn jensen_shannon_matches_augmix_formula() {
        // Three views of two examples, view-major.
        let rows: [[f32; 3]; 6] = [
            [1.0, 2.0, 0.5],
            [0.0, -1.0, 3.0],
            [0.3, 2.2, 0.1],
            [1.0, -1.0, 2.0],
            [2.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
        ];
        let t = Tensor::<Flex, 2>::from_data(
            TensorData::new(rows.concat(), [6, 3]),
            &Default::default(),
        );
        let got = jensen_shannon(t, 3).into_scalar().elem::<f64>();
        // AugMix: M = clamp((p0 + p1 + p2) / 3, 1e-7, 1); mean over views of
        // F.kl_div(log M, p_i, reduction="batchmean").
        let mut want = 0.0;
        for ex in 0..2 {
            let lp: Vec<[f64; 3]> = (0..3).map(|v| hand_log_softmax(rows[v * 2 + ex])).collect();
            let m: Vec<f64> = (0..3)
                .map(|k| lp.iter().map(|l| l[k].exp()).sum::<f64>() / 3.0)
                .collect();
            for l in &lp {
                for k in 0..3 {
                    want += l[k].exp() * (l[k] - m[k].clamp(1e-7, 1.0).ln()) / 2.0 / 3.0;
                }
            }
        }
        assert!(want > 0.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Identical views agree perfectly.
        let same = Tensor::<Flex, 2>::from_data(
            TensorData::new([rows[0], rows[1]].repeat(3).concat(), [6, 3]),
            &Default::default(),
        );
        assert!(jensen_shannon(same, 3).into_scalar().elem::<f64>().abs() < 1e-6);
    }
}
