//! The training objectives: standard CE (AugMix + JSD where the batch holds three views),
//! PGD-AT and TRADES, each with EWS's subnet term lambda * KL(full || subnet), and AWP's
//! proxy loss.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use ews_models::{BnMode, Network, SubnetMasks};

use crate::config::{Adversarial, TrainConfig};
use crate::loss::{correct_on_device, cross_entropy, jensen_shannon, kl_divergence, kl_to_teacher};

/// The inputs of one training step.
pub(crate) struct StepBatch<B: AutodiffBackend> {
    /// Images: with AugMix + JSD the batch is `[clean; aug1; aug2]`.
    pub x: Tensor<B, 4>,
    /// Labels of the clean images.
    pub y: Tensor<B, 1, Int>,
    /// PGD examples against the full model, in adversarial training.
    pub x_adv: Option<Tensor<B, 4>>,
    /// Views per image (1, or 3 with AugMix's JSD).
    pub views: usize,
}

impl<B: AutodiffBackend> StepBatch<B> {
    /// The rows of the clean view: CE and the accuracies use them (reference notes §1).
    pub fn clean_rows(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.views > 1 {
            t.narrow(0, 0, self.y.dims()[0])
        } else {
            t
        }
    }
}

/// The loss of one step and what the metrics read from it.
pub(crate) struct StepLoss<B: AutodiffBackend> {
    /// Cross-entropy of the full network (on x' in PGD-AT, on x in TRADES).
    pub ce: Tensor<B, 1>,
    /// The optimised loss.
    pub loss: Tensor<B, 1>,
    /// The full network's logits whose accuracy is reported.
    pub logits: Tensor<B, 2>,
    /// The subnet term before lambda (detached), with a subnet.
    pub kl: Option<Tensor<B, 1>>,
    /// AugMix's Jensen-Shannon term (detached), with three views.
    pub jsd: Option<Tensor<B, 1>>,
    /// The subnet's correct predictions, with a subnet.
    pub subnet_right: Option<Tensor<B, 1, Int>>,
}

/// The objective `config` names on `batch`, with the subnet term where `masks` are given.
pub(crate) fn step_loss<B: AutodiffBackend>(
    config: &TrainConfig,
    model: &Network<B>,
    batch: &StepBatch<B>,
    masks: Option<&SubnetMasks<B>>,
) -> StepLoss<B> {
    match (&batch.x_adv, config.adversarial) {
        (Some(x_adv), Adversarial::Trades) => trades(config, model, batch, x_adv, masks),
        (Some(x_adv), _) => pgd_at(config, model, batch, x_adv, masks),
        (None, _) => standard(config, model, batch, masks),
    }
}

/// EWS's subnet term before lambda and the subnet's correct predictions.
struct SubnetTerm<B: AutodiffBackend> {
    kl: Tensor<B, 1>,
    right: Tensor<B, 1, Int>,
}

/// The step's loss: `base + lambda * kl` where a subnet is trained.
fn with_subnet_term<B: AutodiffBackend>(
    config: &TrainConfig,
    (ce, base, logits): (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 2>),
    jsd: Option<Tensor<B, 1>>,
    term: Option<SubnetTerm<B>>,
) -> StepLoss<B> {
    let (loss, kl, subnet_right) = match term {
        Some(SubnetTerm { kl, right }) => (
            base + kl.clone() * config.lambda,
            Some(kl.detach()),
            Some(right),
        ),
        None => (base, None, None),
    };
    StepLoss {
        ce,
        loss,
        logits,
        kl,
        jsd,
        subnet_right,
    }
}

/// TRADES + EWS: [CE(f(x)) + lambda KL(f(x) || s(x))]
///   + beta [KL(f(x) || f(x')) + lambda KL(f(x') || s(x'))].
fn trades<B: AutodiffBackend>(
    config: &TrainConfig,
    model: &Network<B>,
    batch: &StepBatch<B>,
    x_adv: &Tensor<B, 4>,
    masks: Option<&SubnetMasks<B>>,
) -> StepLoss<B> {
    let (x, y) = (&batch.x, &batch.y);
    let clean = model.forward(x.clone(), BnMode::Train);
    let adv = model.forward(x_adv.clone(), BnMode::Train);
    let ce = cross_entropy(clean.clone(), y.clone(), config.label_smoothing);
    let base = ce.clone() + kl_divergence(clean.clone(), adv.clone()) * config.trades_beta;
    let term = masks.map(|masks| {
        let sub_clean = model.forward_subnet(x.clone(), masks, BnMode::BatchStats);
        let sub_adv = model.forward_subnet(x_adv.clone(), masks, BnMode::BatchStats);
        SubnetTerm {
            right: correct_on_device(sub_adv.clone().detach(), y.clone()),
            kl: kl_to_teacher(clean.clone(), sub_clean, config.kl_reduction)
                + kl_to_teacher(adv, sub_adv, config.kl_reduction) * config.trades_beta,
        }
    });
    with_subnet_term(config, (ce, base, clean), None, term)
}

/// PGD-AT + EWS: CE(f(x')) + lambda KL(f(x') || s(x')).
fn pgd_at<B: AutodiffBackend>(
    config: &TrainConfig,
    model: &Network<B>,
    batch: &StepBatch<B>,
    x_adv: &Tensor<B, 4>,
    masks: Option<&SubnetMasks<B>>,
) -> StepLoss<B> {
    let y = &batch.y;
    let adv = model.forward(x_adv.clone(), BnMode::Train);
    let ce = cross_entropy(adv.clone(), y.clone(), config.label_smoothing);
    let term = masks.map(|masks| {
        let sub_adv = model.forward_subnet(x_adv.clone(), masks, BnMode::BatchStats);
        SubnetTerm {
            right: correct_on_device(sub_adv.clone().detach(), y.clone()),
            kl: kl_to_teacher(adv.clone(), sub_adv, config.kl_reduction),
        }
    });
    with_subnet_term(config, (ce.clone(), ce, adv), None, term)
}

/// CE on the clean view (+ AugMix's JSD over the three views) + lambda KL(f(x) || s(x)).
fn standard<B: AutodiffBackend>(
    config: &TrainConfig,
    model: &Network<B>,
    batch: &StepBatch<B>,
    masks: Option<&SubnetMasks<B>>,
) -> StepLoss<B> {
    let (x, y) = (&batch.x, &batch.y);
    let logits = model.forward(x.clone(), BnMode::Train);
    let ce = cross_entropy(
        batch.clean_rows(logits.clone()),
        y.clone(),
        config.label_smoothing,
    );
    let mut base = ce.clone();
    let jsd = (batch.views > 1).then(|| jensen_shannon(logits.clone(), batch.views));
    if let Some(jsd) = &jsd {
        base = base + jsd.clone() * config.jsd_weight;
    }
    // The KL term over all views: its batch mean is the mean of the per-view KLs.
    let term = masks.map(|masks| {
        let sub_logits = model.forward_subnet(x.clone(), masks, BnMode::BatchStats);
        SubnetTerm {
            right: correct_on_device(batch.clean_rows(sub_logits.clone().detach()), y.clone()),
            kl: kl_to_teacher(logits.clone(), sub_logits, config.kl_reduction),
        }
    });
    let jsd = jsd.map(|j| j.detach());
    with_subnet_term(config, (ce, base, logits), jsd, term)
}

/// AWP's proxy loss, whose ascent direction the weights are perturbed along: TRADES's
/// objective for TRADES, CE on x' otherwise; batch norm with batch statistics, running
/// statistics untouched.
pub(crate) fn awp_proxy_loss<B: AutodiffBackend>(
    config: &TrainConfig,
    model: &Network<B>,
    batch: &StepBatch<B>,
    x_adv: &Tensor<B, 4>,
) -> Tensor<B, 1> {
    match config.adversarial {
        Adversarial::Trades => {
            let clean = model.forward(batch.x.clone(), BnMode::BatchStats);
            let adv = model.forward(x_adv.clone(), BnMode::BatchStats);
            cross_entropy(clean.clone(), batch.y.clone(), 0.0)
                + kl_divergence(clean, adv) * config.trades_beta
        }
        _ => cross_entropy(
            model.forward(x_adv.clone(), BnMode::BatchStats),
            batch.y.clone(),
            0.0,
        ),
    }
}
