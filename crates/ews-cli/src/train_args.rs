//! `ews train` flags: one per [`TrainConfig`] field, each overriding the config file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ews_augment::policy::{AugMixVariant, AutoAugmentPolicy};
use ews_search::{BaselineUpdate, LogProbKind};
use ews_train::NodeLink;
use ews_train::config::{Adversarial, AugmentKind, Method, SearcherKind, TrainConfig};
use ews_train::loss::KlReduction;
use ews_train::schedule::Schedule;

/// Training method.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    /// Cross-entropy only.
    Vanilla,
    /// Cross-entropy with residual dropout (--dropout).
    Dropout,
    /// EWS: CE + lambda * KL(full || subnet).
    Ews,
}

/// Adversarial training objective.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AdversarialArg {
    /// Clean training.
    None,
    /// PGD adversarial training.
    Pgd,
    /// TRADES.
    Trades,
}

/// Subnet searcher.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SearcherArg {
    /// LSTM controller with REINFORCE.
    Controller,
    /// Uniformly random subnets.
    Random,
    /// Lowest L1-norm paths and channels.
    L1Norm,
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScheduleArg {
    /// Constant.
    Constant,
    /// x gamma at each milestone.
    Multistep,
    /// Cosine annealing.
    Cosine,
    /// Rice et al.'s piecewise-linear cycle.
    Piecewise,
}

/// KL reduction.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KlArg {
    /// Sum over classes, mean over the batch.
    BatchMean,
    /// The release's KLDivLoss mean (also divided by the classes).
    Official,
}

/// Training augmentation after crop/flip.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AugArg {
    /// Crop and flip only.
    Standard,
    /// AutoAugment (--autoaugment-policy).
    Autoaugment,
    /// RandAugment (--randaugment-ops, --randaugment-magnitude).
    Randaugment,
    /// TrivialAugmentWide.
    Trivialaugment,
    /// AugMix (--augmix-*), with the JSD loss unless --jsd false.
    Augmix,
}

/// AutoAugment policy table.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AutoAugmentArg {
    /// torchvision's CIFAR-10 policy.
    Cifar10,
    /// torchvision's ImageNet policy.
    Imagenet,
    /// torchvision's SVHN policy.
    Svhn,
    /// The original TensorFlow CIFAR policy (95 sub-policies, then Cutout 16).
    TfCifar,
}

/// AugMix implementation.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AugMixArg {
    /// The original release.
    Original,
    /// torchvision.transforms.AugMix.
    Torchvision,
}

/// The training flags; unset flags keep the config file's (or the default) value.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// TOML config file (fields as in the run folder's config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder: config.toml, metrics.jsonl, checkpoint.ews, best_model.mpk, summary.json.
    #[arg(long = "out", value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint (its saved config is used).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in total, leaving a resumable checkpoint.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Gradient checkpointing (the release's --use_checkpoint): recompute memory-bound
    /// operations in the backward pass instead of keeping their outputs; less memory, same
    /// results, somewhat slower. Not saved with the run: give it again on --resume.
    #[arg(long)]
    pub checkpointing: bool,
    /// cifar10, cifar100, folder:PATH or synthetic.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder of downloaded datasets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training image side (default 32; 224 for image folders).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Generated dataset size as TRAIN,TEST.
    #[arg(long, value_parser = parse_pair)]
    pub synthetic_size: Option<(usize, usize)>,
    /// Use only a seeded random subset of N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only a seeded random subset of N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Architecture (see `ews models`).
    #[arg(long)]
    pub model: Option<String>,
    /// Residual dropout probability (dropout method).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Input statistics: cifar10, cifar100, imagenet or none (default: the dataset's).
    #[arg(long)]
    pub normalization: Option<String>,
    /// Training method.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// EWS subnet searcher.
    #[arg(long, value_enum)]
    pub searcher: Option<SearcherArg>,
    /// Subnet width rho.
    #[arg(long)]
    pub rho: Option<f64>,
    /// How rho becomes kept counts: `release` (ceil(n * (rho + 1e-6)), the official code) or
    /// `exact` (ceil(rho * n), the paper's text).
    #[arg(long)]
    pub subnet_rounding: Option<ews_models::WidthRounding>,
    /// KL weight lambda.
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Controller update interval K.
    #[arg(long)]
    pub interval_k: Option<usize>,
    /// Subnets per controller update C.
    #[arg(long)]
    pub subnets_per_update: Option<usize>,
    /// KL reduction.
    #[arg(long, value_enum)]
    pub kl_reduction: Option<KlArg>,
    /// How subnet passes drop channels: `sliced` computes only the kept channels, `masked`
    /// zeroes activations at full width (same results).
    #[arg(long)]
    pub subnet_pass: Option<ews_models::SubnetExecution>,
    /// Convolution number format: f32, or bf16 (mixed precision, parameters in f32).
    #[arg(long)]
    pub precision: Option<ews_models::Precision>,
    /// Controller Adam learning rate.
    #[arg(long)]
    pub controller_lr: Option<f64>,
    /// Controller entropy bonus.
    #[arg(long)]
    pub controller_entropy: Option<f64>,
    /// Use the release's approximate log-probability instead of the exact one.
    #[arg(long)]
    pub approximate_log_prob: bool,
    /// Controller baseline decay.
    #[arg(long)]
    pub baseline_decay: Option<f64>,
    /// Update the baseline with the advantage, as the release does.
    #[arg(long)]
    pub baseline_from_advantage: bool,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Evaluation batch size.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum (true/false).
    #[arg(long)]
    pub nesterov: Option<bool>,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip.
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Multistep milestones in epochs, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<f64>>,
    /// Multistep factor.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Linear warm-up epochs.
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Label smoothing.
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Training augmentation after crop/flip.
    #[arg(long, value_enum)]
    pub aug: Option<AugArg>,
    /// AutoAugment table (default: cifar10 below 64 px, imagenet above).
    #[arg(long, value_enum)]
    pub autoaugment_policy: Option<AutoAugmentArg>,
    /// RandAugment ops per image.
    #[arg(long)]
    pub randaugment_ops: Option<usize>,
    /// RandAugment magnitude bin (0..=30).
    #[arg(long)]
    pub randaugment_magnitude: Option<usize>,
    /// AugMix severity (1..=10).
    #[arg(long)]
    pub augmix_severity: Option<u32>,
    /// AugMix chains.
    #[arg(long)]
    pub augmix_width: Option<usize>,
    /// AugMix ops per chain (default: 1..=3 at random).
    #[arg(long)]
    pub augmix_depth: Option<usize>,
    /// AugMix Dirichlet/Beta concentration.
    #[arg(long)]
    pub augmix_alpha: Option<f64>,
    /// AugMix with colour/contrast/brightness/sharpness too (true/false).
    #[arg(long)]
    pub augmix_all_ops: Option<bool>,
    /// AugMix implementation.
    #[arg(long, value_enum)]
    pub augmix_variant: Option<AugMixArg>,
    /// AugMix's Jensen-Shannon consistency loss on [clean; aug1; aug2] (true/false).
    #[arg(long)]
    pub jsd: Option<bool>,
    /// Weight of the JSD term.
    #[arg(long)]
    pub jsd_weight: Option<f64>,
    /// Adversarial training: none, pgd (PGD-AT) or trades.
    #[arg(long, value_enum)]
    pub adversarial: Option<AdversarialArg>,
    /// L-inf radius of the training attack, e.g. 8/255.
    #[arg(long, value_parser = parse_fraction)]
    pub attack_eps: Option<f64>,
    /// Step size of the training attack, e.g. 2/255.
    #[arg(long, value_parser = parse_fraction)]
    pub attack_step: Option<f64>,
    /// Steps of the training attack.
    #[arg(long)]
    pub attack_steps: Option<usize>,
    /// Batch norm while the training attack crafts x': `train` (batch statistics, PGD-AT's
    /// reference) or `eval` (running statistics, TRADES' reference); default: the method's.
    #[arg(long)]
    pub attack_bn: Option<ews_train::config::AttackBn>,
    /// A step with a non-finite loss or gradient: `stop` the run (default; the last
    /// checkpoint stays) or `skip` its update and count it (`skipped_steps` per epoch).
    #[arg(long, value_name = "stop|skip")]
    pub on_nonfinite: Option<ews_train::config::OnNonFinite>,
    /// TRADES' beta.
    #[arg(long)]
    pub trades_beta: Option<f64>,
    /// AWP weight-perturbation size gamma (0.01 for AT, 0.005 for TRADES; 0: off).
    #[arg(long)]
    pub awp_gamma: Option<f64>,
    /// First epoch with AWP, counted from 1 (TRADES-AWP's 10: on from the 10th epoch).
    #[arg(long)]
    pub awp_warmup: Option<usize>,
    /// More training images for --dataset folder:ROOT: a folder of <class>/<image> with
    /// ROOT/train's classes (DeepAugment's EDSR and CAE copies); repeat for several.
    #[arg(long = "extra-train-folder", value_name = "DIR")]
    pub extra_train_folders: Vec<PathBuf>,
    /// Pseudo-labelled extra data (Carmon et al.'s ti_500K_pseudo_labeled.pickle).
    #[arg(long)]
    pub extra_data: Option<PathBuf>,
    /// Fraction of every batch from --extra-data.
    #[arg(long)]
    pub extra_fraction: Option<f64>,
    /// Hold out N training images for early stopping (best epoch by their PGD accuracy).
    #[arg(long)]
    pub holdout: Option<usize>,
    /// PGD steps of the held-out robust accuracy.
    #[arg(long)]
    pub holdout_pgd_steps: Option<usize>,
    /// Data-loader threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Data-parallel peers, one per device (GPU i, i+1, ...; on the CPU all share it): each
    /// trains on batch-size / N images of every batch, gradients averaged before each update.
    #[arg(long)]
    pub devices: Option<usize>,
    /// Machines in a data-parallel run, each with --devices peers: start `ews coordinator`
    /// on one of them, then `ews train` with the same settings on every machine, each with
    /// its own --node-rank and --node-address and the --coordinator's address.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// This machine's index among the --nodes, from 0 (node 0 evaluates and writes the run's
    /// files; the others keep a checkpoint of their own to resume from).
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// The address of `ews coordinator`, host:port.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// This machine's address as the other nodes reach it, host:port (a free port: it
    /// serves this node's tensors to the others).
    #[arg(long, value_name = "HOST:PORT")]
    pub node_address: Option<String>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Steps between metric lines.
    #[arg(long)]
    pub log_every: Option<usize>,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    ews_attack::parse_eps(s).map_err(|e| e.to_string())
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or("expected TRAIN,TEST")?;
    Ok((
        a.trim().parse().map_err(|_| "TRAIN is not a number")?,
        b.trim().parse().map_err(|_| "TEST is not a number")?,
    ))
}

macro_rules! set {
    ($config:ident, $args:ident, $($field:ident),*) => {
        $(if let Some(v) = $args.$field.clone() { $config.$field = v; })*
    };
}

impl TrainArgs {
    /// This machine's link to the other nodes: all of --node-rank, --coordinator and
    /// --node-address, or none.
    pub fn node_link(&self) -> anyhow::Result<Option<NodeLink>> {
        match (&self.node_rank, &self.coordinator, &self.node_address) {
            (None, None, None) => Ok(None),
            (Some(rank), Some(coordinator), Some(address)) => Ok(Some(NodeLink {
                rank: *rank,
                coordinator: coordinator.clone(),
                address: address.clone(),
            })),
            (rank, coordinator, address) => {
                let missing: Vec<&str> = [
                    (rank.is_none(), "--node-rank"),
                    (coordinator.is_none(), "--coordinator"),
                    (address.is_none(), "--node-address"),
                ]
                .into_iter()
                .filter_map(|(absent, flag)| absent.then_some(flag))
                .collect();
                anyhow::bail!(
                    "a run over several machines needs --node-rank, --coordinator and --node-address together: add {}",
                    missing.join(" and ")
                )
            }
        }
    }

    /// Applies the flags that were given on top of `config`.
    pub fn apply(&self, mut config: TrainConfig) -> TrainConfig {
        set!(
            config,
            self,
            dataset,
            data_dir,
            synthetic_size,
            model,
            dropout,
            rho,
            subnet_rounding,
            lambda,
            interval_k,
            subnets_per_update
        );
        set!(
            config,
            self,
            controller_lr,
            controller_entropy,
            baseline_decay,
            epochs,
            batch_size,
            eval_batch_size,
            lr
        );
        set!(
            config,
            self,
            momentum,
            nesterov,
            weight_decay,
            milestones,
            gamma,
            warmup_epochs,
            label_smoothing,
            workers,
            devices,
            nodes,
            seed,
            log_every
        );
        set!(
            config,
            self,
            randaugment_ops,
            randaugment_magnitude,
            augmix_severity,
            augmix_width,
            augmix_alpha,
            augmix_all_ops,
            jsd,
            jsd_weight
        );
        set!(
            config,
            self,
            attack_eps,
            attack_step,
            attack_steps,
            trades_beta,
            awp_gamma,
            awp_warmup,
            extra_fraction,
            holdout,
            holdout_pgd_steps
        );
        if self.extra_data.is_some() {
            config.extra_data = self.extra_data.clone();
        }
        if !self.extra_train_folders.is_empty() {
            config.extra_train_folders = self.extra_train_folders.clone();
        }
        if self.attack_bn.is_some() {
            config.attack_bn = self.attack_bn;
        }
        if let Some(on) = self.on_nonfinite {
            config.on_nonfinite = on;
        }
        if let Some(a) = self.adversarial {
            config.adversarial = match a {
                AdversarialArg::None => Adversarial::None,
                AdversarialArg::Pgd => Adversarial::Pgd,
                AdversarialArg::Trades => Adversarial::Trades,
            };
        }
        if self.augmix_depth.is_some() {
            config.augmix_depth = self.augmix_depth;
        }
        if let Some(a) = self.aug {
            config.aug = match a {
                AugArg::Standard => AugmentKind::Standard,
                AugArg::Autoaugment => AugmentKind::AutoAugment,
                AugArg::Randaugment => AugmentKind::RandAugment,
                AugArg::Trivialaugment => AugmentKind::TrivialAugment,
                AugArg::Augmix => AugmentKind::AugMix,
            };
        }
        if let Some(p) = self.autoaugment_policy {
            config.autoaugment_policy = Some(match p {
                AutoAugmentArg::Cifar10 => AutoAugmentPolicy::Cifar10,
                AutoAugmentArg::Imagenet => AutoAugmentPolicy::Imagenet,
                AutoAugmentArg::Svhn => AutoAugmentPolicy::Svhn,
                AutoAugmentArg::TfCifar => AutoAugmentPolicy::TfCifar,
            });
        }
        if let Some(v) = self.augmix_variant {
            config.augmix_variant = match v {
                AugMixArg::Original => AugMixVariant::Original,
                AugMixArg::Torchvision => AugMixVariant::Torchvision,
            };
        }
        if self.image_size.is_some() {
            config.image_size = self.image_size;
        }
        if self.train_limit.is_some() {
            config.train_limit = self.train_limit;
        }
        if self.test_limit.is_some() {
            config.test_limit = self.test_limit;
        }
        if self.normalization.is_some() {
            config.normalization = self.normalization.clone();
        }
        if self.grad_clip.is_some() {
            config.grad_clip = self.grad_clip;
        }
        if let Some(m) = self.method {
            config.method = match m {
                MethodArg::Vanilla => Method::Vanilla,
                MethodArg::Dropout => Method::Dropout,
                MethodArg::Ews => Method::Ews,
            };
        }
        if let Some(s) = self.searcher {
            config.searcher = match s {
                SearcherArg::Controller => SearcherKind::Controller,
                SearcherArg::Random => SearcherKind::Random,
                SearcherArg::L1Norm => SearcherKind::L1Norm,
            };
        }
        if let Some(s) = self.schedule {
            config.schedule = match s {
                ScheduleArg::Constant => Schedule::Constant,
                ScheduleArg::Multistep => Schedule::Multistep,
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::Piecewise => Schedule::Piecewise,
            };
        }
        if let Some(k) = self.kl_reduction {
            config.kl_reduction = match k {
                KlArg::BatchMean => KlReduction::BatchMean,
                KlArg::Official => KlReduction::Official,
            };
        }
        if let Some(pass) = self.subnet_pass {
            config.subnet_pass = pass;
        }
        if let Some(precision) = self.precision {
            config.precision = precision;
        }
        if self.approximate_log_prob {
            config.controller_log_prob = LogProbKind::Approximate;
        }
        if self.baseline_from_advantage {
            config.baseline_update = BaselineUpdate::Advantage;
        }
        config
    }
}
