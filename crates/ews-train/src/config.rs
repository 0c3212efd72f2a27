//! The training configuration: one serde struct, read from TOML, every field also a flag.

use std::path::{Path, PathBuf};

use ews_augment::policy::{AugMixVariant, AutoAugmentPolicy};
use ews_models::{Architecture, BnMode, Normalization, Precision, SubnetExecution, WidthRounding};
use ews_search::{BaselineUpdate, LogProbKind};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::loss::KlReduction;
use crate::schedule::Schedule;

mod validate;

/// The training method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Plain training with cross-entropy.
    Vanilla,
    /// Plain training with dropout on the residual branches (`dropout` > 0).
    Dropout,
    /// EWS: CE + lambda * KL(full || subnet) with subnets from the searcher.
    Ews,
}

/// Where EWS subnets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearcherKind {
    /// The LSTM controller trained with REINFORCE (weak subnets).
    Controller,
    /// Uniformly random subnets.
    Random,
    /// Lowest-L1-norm paths and channels.
    L1Norm,
}

/// The training augmentation on top of pad/crop/flip (or RandomResizedCrop above 64 px).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AugmentKind {
    /// Crop and flip only.
    Standard,
    /// AutoAugment (`autoaugment_policy`).
    AutoAugment,
    /// RandAugment (`randaugment_ops`, `randaugment_magnitude`).
    RandAugment,
    /// TrivialAugmentWide.
    TrivialAugment,
    /// AugMix (`augmix_*`), with the Jensen-Shannon consistency loss when `jsd` is on.
    AugMix,
}

/// The adversarial training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adversarial {
    /// Clean training.
    None,
    /// PGD adversarial training (Madry et al., Rice et al.'s settings): CE on x'.
    Pgd,
    /// TRADES: CE(x) + trades_beta * KL(p(x) || p(x')).
    Trades,
}

/// What training does about a non-finite loss or gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    /// End the run with an error naming the epoch and steps; the last checkpoint stays.
    #[default]
    Stop,
    /// Skip the step's update (the weights and optimiser stay), count it in the epoch line.
    Skip,
}

impl std::str::FromStr for OnNonFinite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(Self::Stop),
            "skip" => Ok(Self::Skip),
            _ => Err(format!("on_nonfinite `{s}`: expected stop or skip")),
        }
    }
}

/// Batch-norm behaviour of the model while the training attack crafts x'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttackBn {
    /// Batch statistics, running statistics updated by every attack forward, as PyTorch's
    /// `model.train()` does (the release's and Rice et al.'s PGD-AT).
    Train,
    /// Running statistics, untouched (TRADES' reference).
    Eval,
}

impl AttackBn {
    /// The batch-norm mode of the attack's forward passes.
    pub fn mode(self) -> BnMode {
        match self {
            AttackBn::Train => BnMode::Train,
            AttackBn::Eval => BnMode::Eval,
        }
    }
}

impl std::str::FromStr for AttackBn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Self::Train),
            "eval" => Ok(Self::Eval),
            _ => Err(format!("attack batch norm `{s}`: expected train or eval")),
        }
    }
}

/// Everything a training run needs; saved as `config.toml` in the run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `cifar10`, `cifar100`, `folder:PATH` or `synthetic`.
    pub dataset: String,
    /// Folder of downloaded datasets.
    pub data_dir: PathBuf,
    /// More training images for a `folder:ROOT` dataset: folders of `<class>/<image>` with
    /// ROOT/train's class folders, trained on together with ROOT/train (DeepAugment's EDSR
    /// and CAE copies of ImageNet, as the release's `ConcatDataset`).
    pub extra_train_folders: Vec<PathBuf>,
    /// Side of the training images (default: 32, or 224 for image folders).
    pub image_size: Option<usize>,
    /// Images of the generated dataset (train, test).
    pub synthetic_size: (usize, usize),
    /// Use only a seeded random subset of N training images (quick runs).
    pub train_limit: Option<usize>,
    /// Use only a seeded random subset of N test images.
    pub test_limit: Option<usize>,
    /// Architecture name (see `ews models`).
    pub model: String,
    /// Residual-branch dropout (the Dropout method).
    pub dropout: f64,
    /// Input statistics: `cifar10`, `cifar100`, `imagenet`, `none`; default: the dataset's.
    pub normalization: Option<String>,
    /// Training method.
    pub method: Method,
    /// Subnet source for EWS.
    pub searcher: SearcherKind,
    /// Subnet width.
    pub rho: f64,
    /// How rho becomes kept counts: `release` (`ceil(n * (rho + 1e-6))`, the official code)
    /// or `exact` (`ceil(rho * n)`, the paper's text); they differ at exact multiples such as
    /// rho = 0.5 (2 of 2 paths and 33 of 64 channels against 1 and 32).
    pub subnet_rounding: WidthRounding,
    /// Weight of the KL enhancement term.
    pub lambda: f64,
    /// Controller update interval K (steps).
    pub interval_k: usize,
    /// Subnets per controller update (C).
    pub subnets_per_update: usize,
    /// KL reduction.
    pub kl_reduction: KlReduction,
    /// How subnet passes drop channels: `masked` (zeroed activations) or `sliced` (only the
    /// kept channels computed); both give the same logits and gradients.
    pub subnet_pass: SubnetExecution,
    /// Number format of the convolutions: `f32`, or `bf16` (mixed precision, parameters in
    /// f32).
    pub precision: Precision,
    /// Controller Adam learning rate.
    pub controller_lr: f64,
    /// Controller entropy bonus.
    pub controller_entropy: f64,
    /// Controller log-probability.
    pub controller_log_prob: LogProbKind,
    /// Controller baseline decay.
    pub baseline_decay: f64,
    /// Controller baseline update rule.
    pub baseline_update: BaselineUpdate,
    /// Training epochs.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip of the model (none: no clipping).
    pub grad_clip: Option<f64>,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Multistep milestones in (fractional) epochs (empty: the release's E // 3 and
    /// E // 3 * 2).
    pub milestones: Vec<f64>,
    /// Multistep factor.
    pub gamma: f64,
    /// Linear warm-up epochs.
    pub warmup_epochs: f64,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Training augmentation after crop/flip.
    pub aug: AugmentKind,
    /// AutoAugment table (default: cifar10 for small images, imagenet above 64 px).
    pub autoaugment_policy: Option<AutoAugmentPolicy>,
    /// RandAugment: ops per image.
    pub randaugment_ops: usize,
    /// RandAugment: magnitude bin (of 31).
    pub randaugment_magnitude: usize,
    /// AugMix: severity 1..=10.
    pub augmix_severity: u32,
    /// AugMix: number of chains.
    pub augmix_width: usize,
    /// AugMix: ops per chain (unset: 1..=3 at random).
    pub augmix_depth: Option<usize>,
    /// AugMix: Dirichlet / Beta concentration.
    pub augmix_alpha: f64,
    /// AugMix: also colour, contrast, brightness and sharpness.
    pub augmix_all_ops: bool,
    /// AugMix: the original release or torchvision's variant.
    pub augmix_variant: AugMixVariant,
    /// AugMix: train on [clean; aug1; aug2] with CE(clean) + jsd_weight * JSD.
    pub jsd: bool,
    /// Weight of the Jensen-Shannon consistency term.
    pub jsd_weight: f64,
    /// Adversarial training objective.
    pub adversarial: Adversarial,
    /// L-inf radius of the training attack.
    pub attack_eps: f64,
    /// Step size of the training attack.
    pub attack_step: f64,
    /// Steps of the training attack.
    pub attack_steps: usize,
    /// Batch norm while the training attack runs: `train` or `eval`; unset: each method's
    /// reference (`train` for PGD-AT as the release and Rice et al., `eval` for TRADES).
    pub attack_bn: Option<AttackBn>,
    /// What a step with a non-finite loss or gradient does: `stop` the run (naming the
    /// epoch and steps; the last checkpoint stays) or `skip` its update and count it.
    pub on_nonfinite: OnNonFinite,
    /// TRADES' robustness weight beta.
    pub trades_beta: f64,
    /// AWP: relative size gamma of the per-layer weight perturbation (0: off).
    pub awp_gamma: f64,
    /// AWP: the first epoch with weight perturbation, counted from 1 as the TRADES-AWP
    /// reference does (`epoch >= awp_warmup`): 10 turns AWP on in the 10th epoch; 0 or 1
    /// from the start.
    pub awp_warmup: usize,
    /// Pseudo-labelled extra data (the 500K TinyImages pickle of Carmon et al.).
    pub extra_data: Option<PathBuf>,
    /// Fraction of every training batch drawn from `extra_data`.
    pub extra_fraction: f64,
    /// Training images held out for early stopping (0: none; the best epoch is then chosen by
    /// test accuracy).
    pub holdout: usize,
    /// PGD steps of the robust accuracy on the held-out split (adversarial runs).
    pub holdout_pgd_steps: usize,
    /// Data-loader worker threads.
    pub workers: usize,
    /// Data-parallel peers per machine, one per device, each training on
    /// `batch_size / (devices * nodes)` images of
    /// every batch (batch norm per peer, as PyTorch's DataParallel/DDP).
    pub devices: usize,
    /// Machines of a data-parallel run, each with `devices` peers, joined by
    /// `ews coordinator` (batch norm per peer; node 0 evaluates and writes the run's files).
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Steps between metric lines.
    pub log_every: usize,
}

/// The defaults make the offline demo (`ews train` with no flags) learn in minutes on two
/// CPU cores: generated data, wrn-16-1, EWS, 4 epochs, batch 64, cosine schedule. The paper's
/// settings are [`TrainConfig::paper_cifar`], `cargo xtask train` and `experiments/`.
impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            dataset: "synthetic".into(),
            data_dir: PathBuf::from("datasets"),
            extra_train_folders: Vec::new(),
            image_size: None,
            synthetic_size: (2000, 500),
            train_limit: None,
            test_limit: None,
            model: "wrn-16-1".into(),
            dropout: 0.0,
            normalization: None,
            method: Method::Ews,
            searcher: SearcherKind::Controller,
            rho: 0.7,
            subnet_rounding: WidthRounding::Release,
            lambda: 1.0,
            interval_k: 10,
            subnets_per_update: 1,
            kl_reduction: KlReduction::BatchMean,
            subnet_pass: SubnetExecution::Sliced,
            precision: Precision::F32,
            controller_lr: 3e-4,
            controller_entropy: 0.005,
            controller_log_prob: LogProbKind::Exact,
            baseline_decay: 0.99,
            baseline_update: BaselineUpdate::Reward,
            epochs: 4,
            batch_size: 64,
            eval_batch_size: 256,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            grad_clip: None,
            schedule: Schedule::Cosine,
            milestones: Vec::new(),
            gamma: 0.1,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
            aug: AugmentKind::Standard,
            autoaugment_policy: None,
            randaugment_ops: 2,
            randaugment_magnitude: 9,
            augmix_severity: 3,
            augmix_width: 3,
            augmix_depth: None,
            augmix_alpha: 1.0,
            augmix_all_ops: false,
            augmix_variant: AugMixVariant::Original,
            jsd: true,
            jsd_weight: 12.0,
            adversarial: Adversarial::None,
            attack_eps: 8.0 / 255.0,
            attack_step: 2.0 / 255.0,
            attack_steps: 10,
            attack_bn: None,
            on_nonfinite: OnNonFinite::Stop,
            trades_beta: 6.0,
            awp_gamma: 0.0,
            awp_warmup: 0,
            extra_data: None,
            extra_fraction: 0.5,
            holdout: 0,
            holdout_pgd_steps: 10,
            workers: 2,
            devices: 1,
            nodes: 1,
            seed: 0,
            log_every: 10,
        }
    }
}

impl TrainConfig {
    /// The paper's CIFAR settings (§4.1) as the release's `train_cifar.py` runs them: CIFAR
    /// ResNet-50, EWS, K = 10, lambda = 1 with the release's KL scale, rho = 0.7, batch 128,
    /// SGD 0.1 nesterov, weight decay 1e-4, gradient clip 3, multistep at epochs 133 and 266
    /// of 400 (`experiments/table1-*-standard-ews.toml`).
    pub fn paper_cifar(dataset: &str) -> Self {
        Self {
            dataset: dataset.into(),
            model: "resnet50".into(),
            kl_reduction: KlReduction::Official,
            epochs: 400,
            batch_size: 128,
            weight_decay: 1e-4,
            schedule: Schedule::Multistep,
            milestones: vec![133.0, 266.0],
            grad_clip: Some(3.0),
            ..Self::default()
        }
    }

    /// The adversarial settings of the paper's Table 4 (the release's `train_adv_at.py`
    /// defaults for EWS + AT): PreAct ResNet-18, PGD-10 AT at 8/255 crafted with batch
    /// statistics on normalised inputs, lambda 0.1 (batch-mean KL), rho 0.9 (widths
    /// `ceil(rho * n)`, as that script rounds), label smoothing
    /// 0.1, SGD 0.1, weight decay 5e-4, milestones 100 and 150 of 200 epochs, early stopping
    /// on PGD-10 accuracy of 1,000 held-out training images
    /// (`experiments/table4-preact18-at-ews.toml`).
    pub fn paper_adversarial(dataset: &str) -> Self {
        Self {
            dataset: dataset.into(),
            model: "preact-resnet18".into(),
            normalization: Some(dataset.into()),
            adversarial: Adversarial::Pgd,
            attack_bn: Some(AttackBn::Train),
            lambda: 0.1,
            rho: 0.9,
            subnet_rounding: WidthRounding::Exact,
            label_smoothing: 0.1,
            controller_entropy: 0.01,
            epochs: 200,
            batch_size: 128,
            weight_decay: 5e-4,
            nesterov: false,
            schedule: Schedule::Multistep,
            milestones: vec![100.0, 150.0],
            holdout: 1000,
            ..Self::default()
        }
    }

    /// The batch-norm mode of the training attack (`attack_bn`, or the method's reference).
    pub fn resolved_attack_bn(&self) -> AttackBn {
        self.attack_bn.unwrap_or(match self.adversarial {
            Adversarial::Trades => AttackBn::Eval,
            _ => AttackBn::Train,
        })
    }

    /// Whether AWP perturbs the weights in `epoch` (counted from 0 here; `awp_warmup` counts
    /// from 1, as the TRADES-AWP reference).
    pub fn awp_active(&self, epoch: usize) -> bool {
        self.awp_gamma > 0.0 && epoch + 1 >= self.awp_warmup
    }

    /// The subnet width (rho and its rounding).
    pub fn subnet_width(&self) -> ews_models::SubnetWidth {
        ews_models::SubnetWidth::with_rounding(self.rho, self.subnet_rounding)
    }

    /// Images of every training batch drawn from `extra_data` (0 without it).
    pub fn extra_batch_size(&self) -> usize {
        match self.extra_data {
            Some(_) => (self.batch_size as f64 * self.extra_fraction).round() as usize,
            None => 0,
        }
    }

    /// The learning-rate schedule of the run.
    pub fn lr_schedule(&self) -> crate::schedule::LrSchedule {
        crate::schedule::LrSchedule {
            lr: self.lr,
            schedule: self.schedule,
            epochs: self.epochs as f64,
            milestones: self.resolved_milestones(),
            gamma: self.gamma,
            warmup_epochs: self.warmup_epochs,
        }
    }

    /// The training attack: PGD with CE (AT) or TRADES' KL from x + 0.001 N(0, 1).
    pub fn training_attack(&self) -> ews_attack::pgd::Pgd {
        use ews_attack::pgd::{Pgd, PgdLoss, Start};
        let (start, loss) = match self.adversarial {
            Adversarial::Trades => (Start::Gaussian(0.001), PgdLoss::KlToClean),
            _ => (Start::Uniform, PgdLoss::CrossEntropy),
        };
        Pgd {
            norm: ews_attack::Norm::Linf,
            eps: self.attack_eps,
            step_size: self.attack_step,
            steps: self.attack_steps,
            restarts: 1,
            start,
            loss,
            seed: self.seed,
        }
    }

    /// Reads a TOML file and checks every field's range; errors name the file and the field
    /// (unknown fields too).
    pub fn from_toml_file(path: &Path) -> Result<Self, TrainError> {
        let in_file =
            |e: &dyn std::fmt::Display| TrainError::Config(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| in_file(&e))?;
        let config: Self = toml::from_str(&text).map_err(|e| in_file(&e))?;
        config.validate().map_err(|e| match e {
            TrainError::Config(why) => in_file(&why),
            other => in_file(&other),
        })?;
        Ok(config)
    }

    /// The TOML form.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// The architecture.
    pub fn architecture(&self) -> Result<Architecture, TrainError> {
        self.model
            .parse()
            .map_err(|e: ews_models::ModelError| TrainError::Config(format!("model: {e}")))
    }

    /// Multistep milestones, defaulting to the release's `[E // 3, E // 3 * 2]` (epochs 133
    /// and 266 of 400).
    pub fn resolved_milestones(&self) -> Vec<f64> {
        if self.milestones.is_empty() {
            let third = (self.epochs / 3) as f64;
            vec![third, 2.0 * third]
        } else {
            self.milestones.clone()
        }
    }

    /// The explicit normalisation, if the config names one.
    pub fn explicit_normalization(&self) -> Result<Option<Normalization>, TrainError> {
        match &self.normalization {
            None => Ok(None),
            Some(name) => Normalization::for_dataset(name).map(Some).ok_or_else(|| {
                TrainError::Config(format!(
                    "normalization: unknown `{name}` (cifar10, cifar100, imagenet, none)"
                ))
            }),
        }
    }

    /// The AugMix settings.
    pub fn augmix(&self) -> ews_augment::policy::AugMix {
        ews_augment::policy::AugMix {
            variant: self.augmix_variant,
            severity: self.augmix_severity,
            width: self.augmix_width,
            depth: self.augmix_depth,
            alpha: self.augmix_alpha,
            all_ops: self.augmix_all_ops,
        }
    }

    /// Whether batches carry AugMix's three views and the loss its JSD term.
    pub fn uses_jsd(&self) -> bool {
        self.aug == AugmentKind::AugMix && self.jsd
    }

    /// Data-parallel peers in the run: `devices` on each of the `nodes`.
    pub fn peers(&self) -> usize {
        self.devices * self.nodes
    }

    /// Checks that every batch splits into one equal shard per peer, each with at least 2
    /// images of its own (batch norm needs batch statistics on every peer).
    fn validate_devices(&self) -> Result<(), TrainError> {
        let bad = |field: &str, why: String| Err(TrainError::Config(format!("{field}: {why}")));
        if self.devices == 0 {
            return bad("devices", "must be at least 1".into());
        }
        if self.nodes == 0 {
            return bad("nodes", "must be at least 1".into());
        }
        let (extra, peers) = (self.extra_batch_size(), self.peers());
        let own = self.batch_size - extra;
        let too_few = peers > 1 && own / peers < 2;
        if !own.is_multiple_of(peers) || too_few || !extra.is_multiple_of(peers) {
            let parts = match self.nodes {
                1 => format!("{peers}"),
                n => format!("{peers} ({} devices on each of {n} nodes)", self.devices),
            };
            return bad(
                "devices",
                format!(
                    "a batch of {own} images (+ {extra} extra) must split into {parts} equal parts of at least 2 images of its own (batch norm needs batch statistics on every peer)"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_field_errors() {
        let c = TrainConfig::paper_cifar("cifar100");
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        c.validate().unwrap();
        let err = toml::from_str::<TrainConfig>("lr = 0.1\nbogus = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        for (field, c) in [
            (
                "rho",
                TrainConfig {
                    rho: 1.5,
                    ..Default::default()
                },
            ),
            (
                "model",
                TrainConfig {
                    model: "wrn-1-1".into(),
                    ..Default::default()
                },
            ),
            (
                "batch_size",
                TrainConfig {
                    batch_size: 1,
                    ..Default::default()
                },
            ),
            (
                "dropout",
                TrainConfig {
                    method: Method::Dropout,
                    ..Default::default()
                },
            ),
            (
                "dataset",
                TrainConfig {
                    dataset: "mnist".into(),
                    ..Default::default()
                },
            ),
            (
                "nesterov",
                TrainConfig {
                    momentum: 0.0,
                    ..Default::default()
                },
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        assert_eq!(
            TrainConfig {
                epochs: 3,
                ..Default::default()
            }
            .resolved_milestones(),
            vec![1.0, 2.0]
        );
        // The release's MultiStepLR([epochs // 3, epochs // 3 * 2]).
        for (epochs, want) in [
            (400, [133.0, 266.0]),
            (10, [3.0, 6.0]),
            (200, [66.0, 132.0]),
        ] {
            let c = TrainConfig {
                epochs,
                ..Default::default()
            };
            assert_eq!(c.resolved_milestones(), want, "{epochs} epochs");
        }
    }
}
