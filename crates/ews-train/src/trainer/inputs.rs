//! What a run trains and evaluates on: the dataset, the held-out split, the pseudo-labelled
//! extra data and the loaders with their augmentations.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ews_augment::StandardTransform;
use ews_augment::policy::{
    AutoAugment, AutoAugmentPolicy, Policy, RandAugment, TrivialAugmentWide,
};
use ews_data::cifar::{self, Cifar};
use ews_data::loader::mix;
use ews_data::synthetic::{self, SyntheticConfig};
use ews_data::{
    Augmentation, BatchLoader, Dataset, HostBatch, LoaderConfig, Split, Views, folder, pickle,
};

use crate::TrainError;
use crate::config::{AugmentKind, TrainConfig};

/// The data of a training run.
pub(crate) struct TrainingData {
    /// The dataset, its training split without the held-out images.
    pub dataset: Dataset,
    /// Training images held out for early stopping (Rice et al.).
    pub holdout: Option<Split>,
    /// Pseudo-labelled images mixed into every training batch.
    pub extra: Option<Split>,
    /// The training loader (its batch size less the extra images).
    pub train_loader: LoaderConfig,
    /// The evaluation loader.
    pub eval_loader: LoaderConfig,
    extra_loader: Option<LoaderConfig>,
}

impl TrainingData {
    /// Loads what `config` names and splits off the held-out images.
    pub fn prepare(config: &TrainConfig) -> Result<Self, TrainError> {
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
        let (mut train_loader, eval_loader) = loader_configs(config);
        let extra_loader = extra.as_ref().map(|_| {
            let extra_batch = config.extra_batch_size();
            train_loader.batch_size = config.batch_size - extra_batch;
            LoaderConfig {
                batch_size: extra_batch,
                seed: mix(config.seed, 0xE97A),
                ..train_loader
            }
        });
        Ok(Self {
            dataset,
            holdout,
            extra,
            train_loader,
            eval_loader,
            extra_loader,
        })
    }

    /// The extra-data stream after `step` training steps. It runs across epochs, so its
    /// position follows from the global step and a resumed run continues it where it stopped.
    pub fn extra_stream(&self, step: usize) -> Result<Option<ExtraStream<'_>>, TrainError> {
        match (&self.extra, &self.extra_loader) {
            (Some(split), Some(loader)) => Ok(Some(ExtraStream::at(split, loader, step)?)),
            _ => Ok(None),
        }
    }
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
            Some(root) => {
                let mut ds = folder::load(Path::new(root))?;
                folder::add_train_folders(&mut ds, &config.extra_train_folders)?;
                ds
            }
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

/// The dataset a run is evaluated on: [`load_dataset`] without the extra training folders,
/// which evaluation never reads (listing DeepAugment's 2.5 million files takes a while).
pub fn load_eval_dataset(config: &TrainConfig) -> Result<Dataset, TrainError> {
    load_dataset(&TrainConfig {
        extra_train_folders: Vec::new(),
        ..config.clone()
    })
}

/// How many training images of a folder dataset are looked at to choose its image size.
const SIZE_SAMPLE: usize = 256;

/// The config to train into `run_dir` with. A folder dataset without `image_size` trains at
/// its images' own size when the sampled training images all share one square size, else
/// at 224 px (ImageNet's); the note says which size and normalisation were chosen, with a
/// warning where 224 px upscales the images. Other configs come back unchanged, without a
/// note, and so does a run saved without `image_size` (before sizes were resolved: it
/// resumes at 224 px as it started).
pub fn resolve_image_size(
    config: &TrainConfig,
    run_dir: &Path,
) -> Result<(TrainConfig, Option<String>), TrainError> {
    let unchanged = Ok((config.clone(), None));
    let root = match config.dataset.strip_prefix("folder:") {
        Some(root) if config.image_size.is_none() => root,
        _ => return unchanged,
    };
    let saved = super::run::RunFiles {
        dir: run_dir.to_path_buf(),
    }
    .config();
    if saved.is_file() && TrainConfig::from_toml_file(&saved)?.image_size.is_none() {
        return unchanged;
    }
    let dataset = folder::load(Path::new(root))?;
    let sizes = folder::sample_sizes(&dataset.train, SIZE_SAMPLE)?;
    let first = sizes[0];
    let shared = first.0 == first.1 && sizes.iter().all(|&s| s == first);
    let size = if shared { first.0 } else { 224 };
    let n = config
        .explicit_normalization()?
        .unwrap_or(dataset.normalization);
    let seen = match (shared, sizes.iter().all(|&s| s == first)) {
        (true, _) => format!(
            "the {} sampled training images are all {size}x{size}",
            sizes.len()
        ),
        (false, true) => format!(
            "the {} sampled training images are all {}x{} (not square)",
            sizes.len(),
            first.0,
            first.1
        ),
        (false, false) => format!("the {} sampled training images differ in size", sizes.len()),
    };
    let mut note = format!(
        "{}: {seen}: training at {size} px (--image-size to change), normalisation mean {:?} std {:?} (--normalization to change)",
        config.dataset, n.mean, n.std
    );
    let longest = sizes.iter().map(|&(h, w)| h.max(w)).max().unwrap_or(size);
    if longest < size {
        note.push_str(&format!(
            "\nwarning: no sampled image is larger than {longest} px: training at {size} px upscales every image (pass --image-size {longest}?)"
        ));
    }
    let resolved = TrainConfig {
        image_size: Some(size),
        ..config.clone()
    };
    Ok((resolved, Some(note)))
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

/// A host batch as device tensors: images and labels.
pub fn to_tensors<B: Backend>(
    batch: &HostBatch,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let x = Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let y = Tensor::from_data(
        TensorData::new(batch.labels.clone(), [batch.labels.len()]),
        device,
    );
    (x, y)
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

/// The pseudo-labelled batches mixed into every training batch, cycling through the extra
/// split with a fresh shuffle per pass.
pub(crate) struct ExtraStream<'a> {
    split: &'a Split,
    loader: LoaderConfig,
    pass: u64,
    batches: BatchLoader,
}

impl<'a> ExtraStream<'a> {
    /// The stream positioned after `step` batches.
    fn at(split: &'a Split, loader: &LoaderConfig, step: usize) -> Result<Self, TrainError> {
        let per_pass = (split.len() / loader.batch_size).max(1);
        let pass = (step / per_pass) as u64;
        let mut batches = BatchLoader::new(split, loader, pass);
        for _ in 0..step % per_pass {
            batches.next().transpose()?;
        }
        Ok(Self {
            split,
            loader: *loader,
            pass,
            batches,
        })
    }

    /// The next extra batch, starting a fresh shuffle after each pass.
    pub fn next_batch(&mut self) -> Result<HostBatch, TrainError> {
        loop {
            match self.batches.next() {
                Some(batch) => return Ok(batch?),
                None => {
                    self.pass += 1;
                    self.batches = BatchLoader::new(self.split, &self.loader, self.pass);
                }
            }
        }
    }
}
