//! The training loop (paper Algorithm 1), evaluation, checkpoints and resume.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use ews_augment::StandardTransform;
use ews_augment::policy::{
    AutoAugment, AutoAugmentPolicy, Policy, RandAugment, TrivialAugmentWide,
};
use ews_data::cifar::{self, Cifar};
use ews_data::loader::mix;
use ews_data::synthetic::{self, SyntheticConfig};
use ews_data::{Augmentation, BatchLoader, Dataset, LoaderConfig, Split, Views, folder, pickle};
use ews_models::persist::{
    load_record_bytes, pack_sections, record_bytes, unpack_sections, write_atomically,
};
use ews_models::{BnMode, Network, NetworkConfig};
use ews_search::{
    ControllerConfig, L1NormProposer, ProposalContext, RandomProposer, Rewarded, SearchStats,
    SubnetProposer, WeightNorms, clip_grad_norm_on_device,
};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::TrainError;
use crate::adversarial::{AttackTarget, WeightPerturbation, robust_accuracy};
use crate::config::{Adversarial, AugmentKind, Method, SearcherKind, TrainConfig};
use crate::loss::{
    correct, correct_on_device, cross_entropy, jensen_shannon, kl_divergence, kl_to_teacher,
};
use crate::schedule::LrSchedule;

/// Files of a run folder.
pub struct RunFiles {
    /// The folder.
    pub dir: PathBuf,
}

impl RunFiles {
    /// The resolved configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// One JSON object per line: step and epoch metrics.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// The latest checkpoint (model, optimiser, controller, trainer state).
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.ews")
    }
    /// Weights of the epoch with the best test accuracy.
    pub fn best_model(&self) -> PathBuf {
        self.dir.join("best_model.mpk")
    }
    /// Final figures of the run.
    pub fn summary(&self) -> PathBuf {
        self.dir.join("summary.json")
    }
}

/// Final figures of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Epochs trained in total.
    pub epochs: usize,
    /// Test accuracy after the last epoch (percent).
    pub final_test_acc: f64,
    /// Best test accuracy (percent).
    pub best_test_acc: f64,
    /// Epoch of the best test accuracy.
    pub best_epoch: usize,
    /// Wall-clock seconds of training in this process.
    pub seconds: f64,
    /// Training images per second in this process.
    pub images_per_s: f64,
    /// What chose the best epoch: `test_acc`, `holdout_acc` or `holdout_robust_acc`
    /// (early stopping on held-out training images, Rice et al.).
    #[serde(default = "default_selection")]
    pub selected_by: String,
    /// The value of that metric at the best epoch (percent).
    #[serde(default)]
    pub best_selection_value: f64,
}

fn default_selection() -> String {
    "test_acc".into()
}

/// What a checkpoint remembers besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainerState {
    epochs_done: usize,
    global_step: usize,
    best_test_acc: f64,
    best_epoch: usize,
    last_test_acc: f64,
    metrics_len: u64,
    #[serde(default)]
    best_selection: Option<f64>,
}

/// Reads the dataset a config names (generated data needs no files).
pub fn load_dataset(config: &TrainConfig) -> Result<Dataset, TrainError> {
    let mut ds = match config.dataset.as_str() {
        "cifar10" => cifar::load(Cifar::Ten, &config.data_dir)?,
        "cifar100" => cifar::load(Cifar::Hundred, &config.data_dir)?,
        "synthetic" => synthetic::generate(SyntheticConfig {
            train: config.synthetic_size.0,
            test: config.synthetic_size.1,
            seed: config.seed,
        }),
        other => match other.strip_prefix("folder:") {
            Some(root) => folder::load(Path::new(root))?,
            None => return Err(TrainError::Config(format!("dataset: unknown `{other}`"))),
        },
    };
    if let Some(n) = config.train_limit {
        ds.train = ds.train.subset(n, config.seed);
    }
    if let Some(n) = config.test_limit {
        ds.test = ds.test.subset(n, config.seed.wrapping_add(1));
    }
    if ds.train.len() < 2 {
        return Err(TrainError::Config(
            "train_limit leaves fewer than 2 training images".into(),
        ));
    }
    Ok(ds)
}

fn image_size(config: &TrainConfig) -> usize {
    config
        .image_size
        .unwrap_or(if config.dataset.starts_with("folder:") {
            224
        } else {
            32
        })
}

/// The training policy of a run (`aug` and its settings).
pub fn training_policy(config: &TrainConfig) -> Policy {
    let large = image_size(config) > 64;
    match config.aug {
        AugmentKind::Standard => Policy::None,
        AugmentKind::AutoAugment => {
            let default = if large {
                AutoAugmentPolicy::Imagenet
            } else {
                AutoAugmentPolicy::Cifar10
            };
            Policy::AutoAugment(AutoAugment::new(
                config.autoaugment_policy.unwrap_or(default),
            ))
        }
        AugmentKind::RandAugment => Policy::RandAugment(RandAugment {
            num_ops: config.randaugment_ops,
            magnitude: config.randaugment_magnitude,
            ..RandAugment::default()
        }),
        AugmentKind::TrivialAugment => Policy::TrivialAugment(TrivialAugmentWide::default()),
        AugmentKind::AugMix => Policy::AugMix(config.augmix()),
    }
}

/// The training and evaluation loaders of a run: pad/crop/flip (or RandomResizedCrop above
/// 64 px) followed by the `aug` policy for training (AugMix + JSD: three views per image),
/// resize (or Resize + CenterCrop) for evaluation.
pub fn loader_configs(config: &TrainConfig) -> (LoaderConfig, LoaderConfig) {
    let size = image_size(config);
    let large = size > 64;
    let train = LoaderConfig {
        batch_size: config.batch_size,
        image_size: size,
        shuffle: true,
        drop_last: true,
        workers: config.workers,
        prefetch: 2,
        seed: config.seed,
        augmentation: if large {
            Augmentation::RandomResizedCrop
        } else {
            Augmentation::Standard(StandardTransform::default())
        },
        policy: training_policy(config),
        views: if config.uses_jsd() {
            Views::CleanAndTwoAugmented
        } else {
            Views::Single
        },
    };
    let eval = LoaderConfig {
        batch_size: config.eval_batch_size,
        shuffle: false,
        drop_last: false,
        augmentation: if large {
            Augmentation::CenterCrop
        } else {
            Augmentation::None
        },
        policy: Policy::None,
        views: Views::Single,
        ..train
    };
    (train, eval)
}

fn to_tensors<B: Backend>(
    batch: &ews_data::HostBatch,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let x = Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let y = Tensor::from_data(
        TensorData::new(batch.labels.clone(), [batch.labels.len()]),
        device,
    );
    (x, y)
}

/// Top-1 accuracy (percent) of `model` in evaluation mode on `split`.
pub fn evaluate<B: Backend>(
    model: &Network<B>,
    split: &Split,
    loader: &LoaderConfig,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let mut right = 0usize;
    let mut total = 0usize;
    for batch in BatchLoader::new(split, loader, 0) {
        let batch = batch?;
        let (x, y) = to_tensors::<B>(&batch, device);
        right += correct(model.forward(x, BnMode::Eval), y);
        total += batch.labels.len();
    }
    Ok(100.0 * right as f64 / total.max(1) as f64)
}

/// Which weights of a run folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunWeights {
    /// The best epoch (`best_model.mpk`; chosen by early stopping where the run held out data).
    Best,
    /// The latest checkpoint (`checkpoint.ews`).
    Last,
}

/// The config, dataset and chosen weights of a run folder, on any backend.
pub fn load_run<B: Backend>(
    dir: &Path,
    weights: RunWeights,
    device: &B::Device,
) -> Result<(TrainConfig, Dataset, Network<B>), TrainError> {
    let files = RunFiles {
        dir: dir.to_path_buf(),
    };
    if !files.config().is_file() {
        return Err(TrainError::Run(format!(
            "{} is not a run folder (no config.toml)",
            dir.display()
        )));
    }
    let config = TrainConfig::from_toml_file(&files.config())?;
    let dataset = load_dataset(&config)?;
    let model: Network<B> = NetworkConfig::new(config.architecture()?)
        .with_num_classes(dataset.num_classes())
        .with_normalization(
            config
                .explicit_normalization()?
                .unwrap_or(dataset.normalization),
        )
        .init(device)?;
    let (path, bytes) = match weights {
        RunWeights::Best => {
            let path = files.best_model();
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            (path, bytes)
        }
        RunWeights::Last => {
            let path = files.checkpoint();
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let model = unpack_sections(&bytes, &path)?
                .into_iter()
                .find(|(name, _)| name == "model")
                .map(|(_, data)| data)
                .ok_or_else(|| record_error(&path, "checkpoint", "no `model` section"))?;
            (path, model)
        }
    };
    let model = load_record_bytes(model, bytes, &path, device)?;
    Ok((config, dataset, model))
}

/// The subnet searcher of a run.
enum Search<B: AutodiffBackend> {
    None,
    Controller(Box<ews_search::Controller<B>>),
    Fixed(Box<dyn SubnetProposer>),
}

impl<B: AutodiffBackend> Search<B> {
    fn proposer(&mut self) -> Option<&mut dyn SubnetProposer> {
        match self {
            Search::None => None,
            Search::Controller(c) => Some(c.as_mut()),
            Search::Fixed(p) => Some(p.as_mut()),
        }
    }
}

type Sgd_<B> = OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, Network<B>, B>;

/// The run's SGD: momentum (dampening 0, nesterov as configured) and L2 weight decay.
pub(crate) fn sgd<B: AutodiffBackend>(config: &TrainConfig) -> Sgd_<B> {
    SgdConfig::new()
        .with_momentum((config.momentum > 0.0).then_some(MomentumConfig {
            momentum: config.momentum,
            dampening: 0.0,
            nesterov: config.nesterov,
        }))
        .with_weight_decay((config.weight_decay > 0.0).then_some(WeightDecayConfig {
            penalty: config.weight_decay as f32,
        }))
        .init()
}

fn record_error(path: &Path, what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Model(ews_models::ModelError::Weights {
        path: path.display().to_string(),
        message: format!("{what}: {e}"),
    })
}

/// The error of an I/O failure on `path`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Running sums of one epoch's step metrics.
#[derive(Default)]
struct Meter {
    steps: usize,
    images: usize,
    loss: f64,
    ce: f64,
    kl: f64,
    jsd: f64,
    right: usize,
    sub_right: usize,
    seconds: f64,
}

impl Meter {
    fn add(&mut self, other: &Meter) {
        self.steps += other.steps;
        self.images += other.images;
        self.loss += other.loss;
        self.ce += other.ce;
        self.kl += other.kl;
        self.jsd += other.jsd;
        self.right += other.right;
        self.sub_right += other.sub_right;
        self.seconds += other.seconds;
    }
}

/// Training metrics summed on the device and read back once per log interval, so a step
/// never waits for the device.
struct DeviceSums<B: Backend> {
    /// `[ce, kl, jsd, loss, right, sub_right]` summed since the last read.
    sums: Option<Tensor<B, 1>>,
    steps: usize,
    images: usize,
    first_step: usize,
    since: Instant,
}

impl<B: Backend> DeviceSums<B> {
    fn new(first_step: usize) -> Self {
        Self {
            sums: None,
            steps: 0,
            images: 0,
            first_step,
            since: Instant::now(),
        }
    }

    fn add(&mut self, values: Tensor<B, 1>, images: usize) {
        self.sums = Some(match self.sums.take() {
            Some(sums) => sums + values,
            None => values,
        });
        self.steps += 1;
        self.images += images;
    }

    /// Reads the sums (one device-to-host transfer) and starts a new interval at
    /// `next_step`; the seconds are the wall time of the interval, device work included.
    /// Returns the metrics and the summed loss.
    fn read(&mut self, next_step: usize) -> (Meter, f64, usize) {
        let values = match self.sums.take() {
            Some(sums) => sums
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .expect("f64 metric sums"),
            None => vec![0.0; 6],
        };
        let meter = Meter {
            steps: self.steps,
            images: self.images,
            loss: values[3],
            ce: values[0],
            kl: values[1],
            jsd: values[2],
            right: values[4].round() as usize,
            sub_right: values[5].round() as usize,
            seconds: self.since.elapsed().as_secs_f64(),
        };
        let first_step = self.first_step;
        *self = Self::new(next_step);
        (meter, values[3], first_step)
    }
}

/// How a call of [`train`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Continue the run in the folder from its checkpoint.
    pub resume: bool,
    /// Show a progress bar with ETA on standard error.
    pub progress: bool,
    /// Stop once this many epochs are done in total, leaving a resumable checkpoint
    /// (training in chunks, e.g. under a job time limit).
    pub stop_after: Option<usize>,
}

/// Trains as `config` says, writing into `run_dir`: `config.toml`, `metrics.jsonl`,
/// `checkpoint.ews` (every epoch, atomically), `best_model.mpk` and `summary.json`.
///
/// With `resume`, a run folder holding a checkpoint continues where it stopped (its saved
/// config must equal `config`) and ends as the uninterrupted run would have; without it, a
/// folder that already holds a checkpoint is refused so finished work is never overwritten.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    run_dir: &Path,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<Summary, TrainError> {
    let TrainOptions {
        resume,
        progress,
        stop_after,
    } = *options;
    config.validate()?;
    let files = RunFiles {
        dir: run_dir.to_path_buf(),
    };
    std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
    let has_checkpoint = files.checkpoint().is_file();
    if has_checkpoint && !resume {
        return Err(TrainError::Run(format!(
            "{} already holds a run (checkpoint.ews); pass --resume to continue it or choose another --out",
            run_dir.display()
        )));
    }
    if has_checkpoint {
        let saved = TrainConfig::from_toml_file(&files.config())?;
        if &saved != config {
            return Err(TrainError::Run(format!(
                "--resume: the config differs from the one saved in {}; resume without changing settings",
                files.config().display()
            )));
        }
    }

    let mut dataset = load_dataset(config)?;
    let holdout = if config.holdout > 0 {
        if config.holdout >= dataset.train.len() {
            return Err(TrainError::Config(format!(
                "holdout: {} of {} training images leaves nothing to train on",
                config.holdout,
                dataset.train.len()
            )));
        }
        let (rest, held) = dataset
            .train
            .hold_out(config.holdout, mix(config.seed, 0x401D));
        dataset.train = rest;
        Some(held)
    } else {
        None
    };
    let extra = match &config.extra_data {
        Some(path) => Some(pickle::load_pseudo_labeled(path, dataset.num_classes())?),
        None => None,
    };
    let arch = config.architecture()?;
    let normalization = config
        .explicit_normalization()?
        .unwrap_or(dataset.normalization);
    B::seed(device, config.seed);
    let mut model: Network<B> = NetworkConfig::new(arch)
        .with_num_classes(dataset.num_classes())
        .with_dropout(if config.method == Method::Dropout {
            config.dropout
        } else {
            0.0
        })
        .with_normalization(normalization)
        .init::<B>(device)?
        .with_precision(config.precision)?;
    let space = model.subnet_space();
    let mut optim: Sgd_<B> = sgd(config);
    let mut search: Search<B> = match (config.method, config.searcher) {
        (Method::Ews, SearcherKind::Controller) => Search::Controller(Box::new(
            ControllerConfig::new()
                .with_rho(config.rho)
                .with_rounding(config.subnet_rounding)
                .with_lr(config.controller_lr)
                .with_entropy_weight(config.controller_entropy)
                .with_log_prob(config.controller_log_prob)
                .with_baseline_decay(config.baseline_decay)
                .with_baseline_update(config.baseline_update)
                .init::<B>(&space, device)
                .map_err(TrainError::Config)?,
        )),
        (Method::Ews, SearcherKind::Random) => Search::Fixed(Box::new(RandomProposer::new(
            space.clone(),
            config.subnet_width(),
        ))),
        (Method::Ews, SearcherKind::L1Norm) => Search::Fixed(Box::new(L1NormProposer::new(
            space.clone(),
            config.subnet_width(),
        ))),
        _ => Search::None,
    };

    let mut state = TrainerState {
        epochs_done: 0,
        global_step: 0,
        best_test_acc: f64::NEG_INFINITY,
        best_epoch: 0,
        last_test_acc: 0.0,
        metrics_len: 0,
        best_selection: None,
    };
    if has_checkpoint {
        let path = files.checkpoint();
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let mut sections = std::collections::HashMap::new();
        for (name, data) in unpack_sections(&bytes, &path)? {
            sections.insert(name, data);
        }
        let mut take = |name: &str| {
            sections
                .remove(name)
                .ok_or_else(|| record_error(&path, "checkpoint", format!("no `{name}` section")))
        };
        state =
            serde_json::from_slice(&take("state")?).map_err(|e| record_error(&path, "state", e))?;
        model = load_record_bytes(model, take("model")?, &path, device)?;
        let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(take("optimizer")?, device)
            .map_err(|e| record_error(&path, "optimizer", e))?;
        optim = optim.load_record(record);
        if let Search::Controller(c) = search {
            search = Search::Controller(Box::new(c.load_state_bytes(&take("controller")?, &path)?));
        }
        // Drop metric lines written after the checkpoint by the interrupted run.
        let metrics = files.metrics();
        let file = OpenOptions::new()
            .write(true)
            .open(&metrics)
            .map_err(io_err(&metrics))?;
        file.set_len(state.metrics_len).map_err(io_err(&metrics))?;
    } else {
        write_atomically(&files.config(), config.to_toml().as_bytes())
            .map_err(io_err(&files.config()))?;
        std::fs::write(files.metrics(), b"").map_err(io_err(&files.metrics()))?;
    }
    let mut metrics_file = OpenOptions::new()
        .append(true)
        .open(files.metrics())
        .map_err(io_err(&files.metrics()))?;
    let mut log = |value: serde_json::Value| -> Result<(), TrainError> {
        writeln!(metrics_file, "{value}").map_err(io_err(&files.metrics()))?;
        metrics_file.flush().map_err(io_err(&files.metrics()))
    };

    let (mut train_loader, eval_loader) = loader_configs(config);
    let extra_loader = extra.as_ref().map(|_| {
        let extra_batch = (config.batch_size as f64 * config.extra_fraction).round() as usize;
        train_loader.batch_size = config.batch_size - extra_batch;
        LoaderConfig {
            batch_size: extra_batch,
            seed: mix(config.seed, 0xE97A),
            ..train_loader
        }
    });
    // The extra-data stream runs across epochs; its position follows from the global step,
    // so a resumed run continues it where it stopped.
    let mut extra_stream = match (&extra, &extra_loader) {
        (Some(split), Some(loader)) => Some(ExtraStream::at(split, loader, state.global_step)?),
        _ => None,
    };
    let adversarial = config.adversarial != Adversarial::None;
    let training_attack = config.training_attack();
    let attack_bn = config.resolved_attack_bn().mode();
    let schedule = LrSchedule {
        lr: config.lr,
        schedule: config.schedule,
        epochs: config.epochs as f64,
        milestones: config.resolved_milestones(),
        gamma: config.gamma,
        warmup_epochs: config.warmup_epochs,
    };
    let started = Instant::now();
    let mut images_seen = 0usize;
    let mut last_search = SearchStats::default();

    let last_epoch = stop_after.map_or(config.epochs, |n| n.min(config.epochs));
    for epoch in state.epochs_done..last_epoch {
        B::seed(device, mix(config.seed, epoch as u64 + 1));
        let loader = BatchLoader::new(&dataset.train, &train_loader, epoch as u64);
        let batches = steps_per_epoch(config, dataset.train.len(), loader.num_batches());
        let bar = if progress {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut meter = Meter::default();
        let mut sums = DeviceSums::<B::InnerBackend>::new(state.global_step);
        // Reads the device sums into the epoch meter; a non-finite loss ends the run before
        // anything of this epoch is saved.
        let read_sums = |sums: &mut DeviceSums<B::InnerBackend>,
                         meter: &mut Meter,
                         step: usize|
         -> Result<Meter, TrainError> {
            let (window, loss, first_step) = sums.read(step);
            if !loss.is_finite() {
                return Err(TrainError::NonFinite {
                    value: loss,
                    epoch: epoch + 1,
                    first_step: first_step + 1,
                    step,
                    last_good: state.epochs_done,
                });
            }
            meter.add(&window);
            Ok(window)
        };
        let mut controller_updates = 0usize;
        for (i, batch) in loader.take(batches).enumerate() {
            let batch = batch?;
            let step = state.global_step;
            let lr = schedule.at_step(epoch, i, batches);
            let (mut x, mut y) = to_tensors::<B>(&batch, device);
            if let (Some(stream), Some(split)) = (extra_stream.as_mut(), extra.as_ref()) {
                let more = stream.next(split)?;
                let (xe, ye) = to_tensors::<B>(&more, device);
                x = Tensor::cat(vec![x, xe], 0);
                y = Tensor::cat(vec![y, ye], 0);
            }
            let n = y.dims()[0];
            let views = batch.views;
            // With AugMix's JSD the batch is [clean; aug1; aug2]: the loss's CE and the
            // accuracies use the clean part (reference notes §1).
            let clean_rows = |t: Tensor<B, 2>| if views > 1 { t.narrow(0, 0, n) } else { t };
            let mut rng = StdRng::seed_from_u64(mix(config.seed ^ 0x5EA2_C400, step as u64));
            // x' from PGD against the full model (batch norm as `attack_bn` says, weights
            // untouched), recomputed every step.
            let x_adv = adversarial.then(|| {
                let target = AttackTarget::new(&model, attack_bn);
                Tensor::<B, 4>::from_inner(training_attack.run::<B, _>(
                    &target,
                    x.clone().inner(),
                    y.clone().inner(),
                    step as u64,
                ))
            });
            // Adversarial EWS searches subnets by their robust accuracy on x'; with AugMix
            // the subnet sees all views, as the release does.
            let x_search = x_adv.clone().unwrap_or_else(|| x.clone());

            let proposer = search.proposer();
            let masks = match proposer {
                None => None,
                Some(proposer) => {
                    let norms = proposer
                        .needs_weight_norms()
                        .then(|| WeightNorms::of(&model));
                    // Algorithm 1: every K steps of the epoch (the release counts steps
                    // within the epoch), rate C subnets on this batch and update the
                    // controller (reward = -subnet accuracy).
                    if proposer.learns() && i.is_multiple_of(config.interval_k) {
                        controller_updates += 1;
                        let inner = model.valid();
                        let x_inner = x_search.clone().inner();
                        let y_inner = y.clone().inner();
                        let samples: Vec<Rewarded> = (0..config.subnets_per_update)
                            .map(|_| {
                                let proposal = proposer.propose(&mut ProposalContext {
                                    rng: &mut rng,
                                    norms: norms.as_ref(),
                                });
                                let masks = proposal.subnet.to_masks_as(
                                    &space,
                                    device,
                                    config.subnet_pass,
                                )?;
                                let acc =
                                    subnet_accuracy(&inner, x_inner.clone(), &y_inner, &masks);
                                Ok(Rewarded {
                                    proposal,
                                    reward: -acc,
                                })
                            })
                            .collect::<Result<_, ews_models::ModelError>>()?;
                        if let Some(stats) = proposer.learn(&samples) {
                            last_search = stats;
                        }
                    }
                    let proposal = proposer.propose(&mut ProposalContext {
                        rng: &mut rng,
                        norms: norms.as_ref(),
                    });
                    Some(
                        proposal
                            .subnet
                            .to_masks_as::<B>(&space, device, config.subnet_pass)?,
                    )
                }
            };

            // AWP: perturb conv/linear weights along the proxy loss's ascent direction, take
            // the step there, remove the perturbation after the update.
            let awp = match &x_adv {
                Some(x_adv) if config.awp_active(epoch) => {
                    let proxy_loss = match config.adversarial {
                        Adversarial::Trades => {
                            let clean = model.forward(x.clone(), BnMode::BatchStats);
                            let adv = model.forward(x_adv.clone(), BnMode::BatchStats);
                            cross_entropy(clean.clone(), y.clone(), 0.0)
                                + kl_divergence(clean, adv) * config.trades_beta
                        }
                        _ => cross_entropy(
                            model.forward(x_adv.clone(), BnMode::BatchStats),
                            y.clone(),
                            0.0,
                        ),
                    };
                    let grads = GradientsParams::from_grads(proxy_loss.backward(), &model);
                    Some(WeightPerturbation::new(&model, &grads, config.awp_gamma))
                }
                _ => None,
            };
            if let Some(v) = &awp {
                model = v.apply(model, 1.0);
            }

            let mut kl_value = None;
            let mut sub_right = None;
            let mut jsd_value = None;
            let (ce, loss, logits) = match (&x_adv, config.adversarial) {
                (Some(x_adv), Adversarial::Trades) => {
                    // TRADES + EWS: [CE(f(x)) + lambda KL(f(x) || s(x))]
                    //   + beta [KL(f(x) || f(x')) + lambda KL(f(x') || s(x'))].
                    let clean = model.forward(x.clone(), BnMode::Train);
                    let adv = model.forward(x_adv.clone(), BnMode::Train);
                    let ce = cross_entropy(clean.clone(), y.clone(), config.label_smoothing);
                    let mut loss =
                        ce.clone() + kl_divergence(clean.clone(), adv.clone()) * config.trades_beta;
                    if let Some(masks) = &masks {
                        let sub_clean = model.forward_subnet(x.clone(), masks, BnMode::BatchStats);
                        let sub_adv =
                            model.forward_subnet(x_adv.clone(), masks, BnMode::BatchStats);
                        sub_right = Some(correct_on_device(sub_adv.clone().detach(), y.clone()));
                        let kl = kl_to_teacher(clean.clone(), sub_clean, config.kl_reduction)
                            + kl_to_teacher(adv, sub_adv, config.kl_reduction) * config.trades_beta;
                        kl_value = Some(kl.clone().detach());
                        loss = loss + kl * config.lambda;
                    }
                    (ce, loss, clean)
                }
                (Some(x_adv), _) => {
                    // PGD-AT + EWS: CE(f(x')) + lambda KL(f(x') || s(x')).
                    let adv = model.forward(x_adv.clone(), BnMode::Train);
                    let ce = cross_entropy(adv.clone(), y.clone(), config.label_smoothing);
                    let mut loss = ce.clone();
                    if let Some(masks) = &masks {
                        let sub_adv =
                            model.forward_subnet(x_adv.clone(), masks, BnMode::BatchStats);
                        sub_right = Some(correct_on_device(sub_adv.clone().detach(), y.clone()));
                        let kl = kl_to_teacher(adv.clone(), sub_adv, config.kl_reduction);
                        kl_value = Some(kl.clone().detach());
                        loss = loss + kl * config.lambda;
                    }
                    (ce, loss, adv)
                }
                (None, _) => {
                    let logits = model.forward(x.clone(), BnMode::Train);
                    let ce = cross_entropy(
                        clean_rows(logits.clone()),
                        y.clone(),
                        config.label_smoothing,
                    );
                    let mut loss = ce.clone();
                    if views > 1 {
                        let jsd = jensen_shannon(logits.clone(), views);
                        jsd_value = Some(jsd.clone().detach());
                        loss = loss + jsd * config.jsd_weight;
                    }
                    if let Some(masks) = &masks {
                        // The KL term over all views: its batch mean is the mean of the
                        // per-view KLs.
                        let sub_logits = model.forward_subnet(x, masks, BnMode::BatchStats);
                        sub_right = Some(correct_on_device(
                            clean_rows(sub_logits.clone().detach()),
                            y.clone(),
                        ));
                        let kl = kl_to_teacher(logits.clone(), sub_logits, config.kl_reduction);
                        kl_value = Some(kl.clone().detach());
                        loss = loss + kl * config.lambda;
                    }
                    (ce, loss, logits)
                }
            };
            let right = correct_on_device(clean_rows(logits.detach()), y);
            let zero = || Tensor::<B, 1>::zeros([1], device);
            let step_values = Tensor::cat(
                vec![
                    ce.detach(),
                    kl_value.unwrap_or_else(zero),
                    jsd_value.unwrap_or_else(zero),
                    loss.clone().detach(),
                    right.float(),
                    sub_right.map_or_else(zero, |r| r.float()),
                ],
                0,
            );
            sums.add(step_values.inner(), n);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let grads = match config.grad_clip {
                Some(max) => clip_grad_norm_on_device(&model, grads, max).0,
                None => grads,
            };
            model = optim.step(lr, model, grads);
            if let Some(v) = &awp {
                model = v.apply(model, -1.0);
            }
            state.global_step += 1;

            images_seen += n;
            bar.inc(1);
            if state.global_step.is_multiple_of(config.log_every) {
                let window = read_sums(&mut sums, &mut meter, state.global_step)?;
                bar.set_message(format!(
                    "ce {:.3} kl {:.3} {:.0} img/s",
                    meter.ce / meter.steps as f64,
                    meter.kl / meter.steps as f64,
                    meter.images as f64 / meter.seconds
                ));
                log(step_line(
                    epoch,
                    state.global_step,
                    lr,
                    &window,
                    &masks.is_some(),
                    &search,
                    &last_search,
                ))?;
            }
        }
        bar.finish_and_clear();
        read_sums(&mut sums, &mut meter, state.global_step)?;

        let test_acc = evaluate(&model.valid(), &dataset.test, &eval_loader, &device.clone())?;
        state.epochs_done = epoch + 1;
        state.last_test_acc = test_acc;
        // Early stopping (Rice et al.): choose the best epoch on held-out training images,
        // by PGD accuracy for adversarial runs.
        let held_out = match &holdout {
            Some(held) if adversarial => {
                let attack = ews_attack::pgd::Pgd {
                    steps: config.holdout_pgd_steps,
                    start: ews_attack::pgd::Start::Uniform,
                    loss: ews_attack::pgd::PgdLoss::CrossEntropy,
                    ..training_attack
                };
                let (clean, robust) = robust_accuracy(&model, held, &eval_loader, &attack, device)?;
                Some((clean, Some(robust)))
            }
            Some(held) => Some((evaluate(&model.valid(), held, &eval_loader, device)?, None)),
            None => None,
        };
        let selection = match held_out {
            Some((_, Some(robust))) => robust,
            Some((clean, None)) => clean,
            None => test_acc,
        };
        // The rate the next epoch's first step trains with (one warm-up formula for both).
        let lr = schedule.at_step(epoch + 1, 0, batches);
        let mut line = json!({
            "type": "epoch",
            "epoch": epoch + 1,
            "step": state.global_step,
            "lr": lr,
            "train_loss": meter.loss / meter.steps.max(1) as f64,
            "train_ce": meter.ce / meter.steps.max(1) as f64,
            "train_acc": 100.0 * meter.right as f64 / meter.images.max(1) as f64,
            "test_acc": test_acc,
            "images_per_s": meter.images as f64 / meter.seconds.max(1e-9),
            "seconds": meter.seconds,
        });
        if let Some((clean, robust)) = held_out {
            line["holdout_acc"] = json!(clean);
            if let Some(robust) = robust {
                line["holdout_robust_acc"] = json!(robust);
            }
        }
        if config.uses_jsd() {
            line["jsd"] = json!(meter.jsd / meter.steps.max(1) as f64);
        }
        if masks_enabled(&search) {
            line["kl"] = json!(meter.kl / meter.steps.max(1) as f64);
            line["subnet_acc"] = json!(100.0 * meter.sub_right as f64 / meter.images.max(1) as f64);
        }
        if let Search::Controller(c) = &search {
            line["controller_reward"] = json!(last_search.reward);
            line["baseline"] = json!(c.baseline);
            line["controller_updates"] = json!(controller_updates);
        }
        log(line)?;
        if progress {
            eprintln!(
                "epoch {}/{}: test accuracy {test_acc:.2}%",
                epoch + 1,
                config.epochs
            );
        }
        if state.best_selection.is_none_or(|best| selection > best) {
            state.best_selection = Some(selection);
            state.best_test_acc = test_acc;
            state.best_epoch = epoch + 1;
            write_atomically(&files.best_model(), &record_bytes(&model)?)
                .map_err(io_err(&files.best_model()))?;
        }
        state.metrics_len = std::fs::metadata(files.metrics())
            .map_err(io_err(&files.metrics()))?
            .len();
        save_checkpoint(&files, &state, &model, &optim, &search)?;
    }

    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        epochs: state.epochs_done,
        final_test_acc: state.last_test_acc,
        best_test_acc: state.best_test_acc,
        best_epoch: state.best_epoch,
        seconds,
        images_per_s: images_seen as f64 / seconds.max(1e-9),
        selected_by: match (&holdout, adversarial) {
            (Some(_), true) => "holdout_robust_acc",
            (Some(_), false) => "holdout_acc",
            (None, _) => "test_acc",
        }
        .into(),
        best_selection_value: state.best_selection.unwrap_or(state.best_test_acc),
    };
    let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomically(&files.summary(), text.as_bytes()).map_err(io_err(&files.summary()))?;
    Ok(summary)
}

/// Training steps per epoch. With pseudo-labelled extra data an epoch is
/// `ceil(train images / batch size)` steps of mixed batches, as Carmon et al.'s sampler
/// counts (391 on CIFAR-10 at batch 128), each from a fresh shuffle of the training images;
/// otherwise one pass over them.
pub fn steps_per_epoch(config: &TrainConfig, train_images: usize, batches: usize) -> usize {
    match config.extra_data {
        Some(_) => train_images.div_ceil(config.batch_size).min(batches),
        None => batches,
    }
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

/// The pseudo-labelled batches mixed into every training batch, cycling through the extra
/// split with a fresh shuffle per pass.
struct ExtraStream {
    loader: LoaderConfig,
    pass: u64,
    batches: BatchLoader,
}

impl ExtraStream {
    /// The stream positioned after `step` batches.
    fn at(split: &Split, loader: &LoaderConfig, step: usize) -> Result<Self, TrainError> {
        let per_pass = (split.len() / loader.batch_size).max(1);
        let pass = (step / per_pass) as u64;
        let mut batches = BatchLoader::new(split, loader, pass);
        for _ in 0..step % per_pass {
            batches.next().transpose()?;
        }
        Ok(Self {
            loader: *loader,
            pass,
            batches,
        })
    }

    fn next(&mut self, split: &Split) -> Result<ews_data::HostBatch, TrainError> {
        loop {
            match self.batches.next() {
                Some(batch) => return Ok(batch?),
                None => {
                    self.pass += 1;
                    self.batches = BatchLoader::new(split, &self.loader, self.pass);
                }
            }
        }
    }
}

fn masks_enabled<B: AutodiffBackend>(search: &Search<B>) -> bool {
    !matches!(search, Search::None)
}

fn step_line<B: AutodiffBackend>(
    epoch: usize,
    step: usize,
    lr: f64,
    m: &Meter,
    ews: &bool,
    search: &Search<B>,
    stats: &SearchStats,
) -> serde_json::Value {
    let steps = m.steps.max(1) as f64;
    let mut line = json!({
        "type": "step",
        "epoch": epoch + 1,
        "step": step,
        "lr": lr,
        "train_loss": m.loss / steps,
        "train_ce": m.ce / steps,
        "train_acc": 100.0 * m.right as f64 / m.images.max(1) as f64,
        "images_per_s": m.images as f64 / m.seconds.max(1e-9),
    });
    if m.jsd != 0.0 {
        line["jsd"] = json!(m.jsd / steps);
    }
    if *ews {
        line["kl"] = json!(m.kl / steps);
        line["subnet_acc"] = json!(100.0 * m.sub_right as f64 / m.images.max(1) as f64);
    }
    if let Search::Controller(c) = search {
        line["controller_reward"] = json!(stats.reward);
        line["baseline"] = json!(c.baseline);
        line["controller_entropy"] = json!(stats.entropy);
        line["controller_grad_norm"] = json!(stats.grad_norm);
    }
    line
}

fn save_checkpoint<B: AutodiffBackend>(
    files: &RunFiles,
    state: &TrainerState,
    model: &Network<B>,
    optim: &Sgd_<B>,
    search: &Search<B>,
) -> Result<(), TrainError> {
    let path = files.checkpoint();
    let state_bytes = serde_json::to_vec(state).expect("state serialises");
    let model_bytes = record_bytes(model)?;
    let optim_bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(optim.to_record(), ())
        .map_err(|e| record_error(&path, "optimizer", e))?;
    let mut sections: Vec<(&str, &[u8])> = vec![
        ("state", &state_bytes),
        ("model", &model_bytes),
        ("optimizer", &optim_bytes),
    ];
    let controller_bytes;
    if let Search::Controller(c) = search {
        controller_bytes = c.state_bytes()?;
        sections.push(("controller", &controller_bytes));
    }
    write_atomically(&path, &pack_sections(&sections)).map_err(io_err(&path))
}
