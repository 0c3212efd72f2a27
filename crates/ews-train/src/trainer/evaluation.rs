//! Evaluation during training and the choice of the best epoch.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use ews_data::{BatchLoader, LoaderConfig, Split};
use ews_models::{BnMode, Classifier, Network};

use super::inputs::{TrainingData, to_tensors};
use crate::TrainError;
use crate::adversarial::robust_accuracy;
use crate::config::{Adversarial, TrainConfig};
use crate::loss::correct;

/// Top-1 accuracy (percent) of `model` in evaluation mode on `split`.
pub fn evaluate<B: Backend, M: Classifier<B>>(
    model: &M,
    split: &Split,
    loader: &LoaderConfig,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let mut right = 0usize;
    let mut total = 0usize;
    for batch in BatchLoader::new(split, loader, 0) {
        let batch = batch?;
        let (x, y) = to_tensors::<B>(&batch, device);
        right += correct(model.logits(x), y);
        total += batch.labels.len();
    }
    Ok(100.0 * right as f64 / total.max(1) as f64)
}

/// Top-1 accuracy (a fraction) of a subnet with batch statistics on `x`, scored on the
/// first `y.len()` rows: with AugMix's views `x` is [clean; aug1; aug2], the statistics come
/// from all of them and the clean part is scored, as the release's controller pass does.
pub fn subnet_accuracy<B: Backend>(
    model: &Network<B>,
    x: Tensor<B, 4>,
    y: &Tensor<B, 1, Int>,
    masks: &ews_models::SubnetMasks<B>,
) -> f64 {
    let n = y.dims()[0];
    let logits = model.forward_subnet(x, masks, BnMode::BatchStats);
    correct(logits.narrow(0, 0, n), y.clone()) as f64 / n as f64
}

/// The scores of an epoch's network.
pub(crate) struct EpochScores {
    /// Test accuracy (percent).
    pub test_acc: f64,
    /// Clean and (adversarial runs) PGD accuracy on the held-out training images.
    pub held_out: Option<(f64, Option<f64>)>,
}

impl EpochScores {
    /// The value that chooses the best epoch: held-out PGD accuracy for adversarial runs
    /// that hold out images, held-out accuracy for others that do, test accuracy otherwise
    /// (early stopping, Rice et al.).
    pub fn selection(&self) -> f64 {
        match self.held_out {
            Some((_, Some(robust))) => robust,
            Some((clean, None)) => clean,
            None => self.test_acc,
        }
    }
}

/// The name of the metric [`EpochScores::selection`] reads for `config`.
pub(crate) fn selected_by(config: &TrainConfig) -> &'static str {
    match (config.holdout > 0, config.adversarial != Adversarial::None) {
        (true, true) => "holdout_robust_acc",
        (true, false) => "holdout_acc",
        (false, _) => "test_acc",
    }
}

/// Scores `model` after an epoch: test accuracy, and the held-out split's accuracy
/// (PGD accuracy, with `holdout_pgd_steps` steps, for adversarial runs).
pub(crate) fn score_epoch<B: AutodiffBackend>(
    config: &TrainConfig,
    model: &Network<B>,
    data: &TrainingData,
    device: &B::Device,
) -> Result<EpochScores, TrainError> {
    let eval_loader = &data.eval_loader;
    let test_acc = evaluate(&model.valid(), &data.dataset.test, eval_loader, device)?;
    let held_out = match &data.holdout {
        Some(held) if config.adversarial != Adversarial::None => {
            let attack = ews_attack::pgd::Pgd {
                steps: config.holdout_pgd_steps,
                start: ews_attack::pgd::Start::Uniform,
                loss: ews_attack::pgd::PgdLoss::CrossEntropy,
                ..config.training_attack()
            };
            let (clean, robust) = robust_accuracy(model, held, eval_loader, &attack, device)?;
            Some((clean, Some(robust)))
        }
        Some(held) => Some((evaluate(&model.valid(), held, eval_loader, device)?, None)),
        None => None,
    };
    Ok(EpochScores { test_acc, held_out })
}
