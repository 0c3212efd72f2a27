//! Shuffled batches prepared on worker threads while the device computes.

use ews_augment::corrupt::{PilFilter, resize_pil};
use ews_augment::policy::Policy;
use ews_augment::standard::{
    random_resized_crop, random_resized_crop_window, resize_center_crop, resized_crop_and_flip,
};
use ews_augment::{Image, StandardTransform};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::in_order::InOrder;
use crate::{DataError, Split};

/// What happens to each image before batching. Every variant ends at `size x size`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    /// Resize to the output size if needed (Pillow bilinear; evaluation of small images).
    None,
    /// Resize if needed (Pillow bilinear), then pad, random crop and flip (CIFAR training).
    Standard(StandardTransform),
    /// torchvision's `RandomResizedCrop` + flip (ImageNet training).
    RandomResizedCrop,
    /// Resize the shorter side to `size * 8 / 7`, centre crop (ImageNet evaluation: 256 -> 224).
    CenterCrop,
}

/// Batching settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Output image side.
    pub image_size: usize,
    /// Shuffle every epoch.
    pub shuffle: bool,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Batches each worker may prepare ahead.
    pub prefetch: usize,
    /// Seed of the shuffle and of the augmentation randomness.
    pub seed: u64,
    /// The per-image base transform (crop, flip, resize).
    pub augmentation: Augmentation,
    /// The automatic augmentation applied after the base transform.
    pub policy: Policy,
    /// `Views::CleanAndTwoAugmented` gives AugMix's JSD batches: every image three times.
    pub views: Views,
}

/// Which versions of every image a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Views {
    /// One view: the base transform followed by the policy.
    Single,
    /// Three views, view-major: the base-transformed image, then the policy applied twice
    /// independently (AugMix with the Jensen-Shannon consistency loss).
    CleanAndTwoAugmented,
}

impl Views {
    /// Number of views per image.
    pub fn count(self) -> usize {
        match self {
            Views::Single => 1,
            Views::CleanAndTwoAugmented => 3,
        }
    }
}

/// One batch on the host: NCHW floats in [0, 1] and labels. With several views the images
/// are view-major (`views * n` images: all first views, then all second views, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// `views * n * 3 * size * size` values.
    pub images: Vec<f32>,
    /// One label per image (shared by its views).
    pub labels: Vec<i64>,
    /// `[views * n, 3, size, size]`.
    pub shape: [usize; 4],
    /// Views per image.
    pub views: usize,
    /// Indices of the images in the split.
    pub indices: Vec<usize>,
}

impl HostBatch {
    /// Part `rank` of `count` equal parts: the same rows of every view, with their labels
    /// (data-parallel peers each train on one). The batch must split evenly.
    pub fn shard(&self, rank: usize, count: usize) -> HostBatch {
        let n = self.labels.len();
        assert!(
            count > 0 && rank < count && n.is_multiple_of(count),
            "a batch of {n} images cannot be split into {count} equal parts"
        );
        let per = n / count;
        let rows = rank * per..(rank + 1) * per;
        let image_len: usize = self.shape[1..].iter().product();
        let mut images = Vec::with_capacity(self.views * per * image_len);
        for view in 0..self.views {
            let first = (view * n + rows.start) * image_len;
            images.extend_from_slice(&self.images[first..first + per * image_len]);
        }
        HostBatch {
            images,
            labels: self.labels[rows.clone()].to_vec(),
            shape: [
                self.views * per,
                self.shape[1],
                self.shape[2],
                self.shape[3],
            ],
            views: self.views,
            indices: self.indices[rows].to_vec(),
        }
    }
}

/// Combines two seeds into one (SplitMix64 finaliser): decorrelates nearby seeds.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Applies `augmentation` to one image, ending at `size x size`.
pub fn transform<R: Rng + ?Sized>(
    image: &Image,
    augmentation: Augmentation,
    size: usize,
    rng: &mut R,
) -> Image {
    // torchvision's Resize((size, size)) on a PIL image: antialiased when shrinking.
    let fit = |img: &Image| match (img.height, img.width) == (size, size) {
        true => img.clone(),
        false => resize_pil(img, size, size, PilFilter::Bilinear),
    };
    match augmentation {
        Augmentation::None => fit(image),
        Augmentation::Standard(t) => t.apply(&fit(image), rng),
        Augmentation::RandomResizedCrop => random_resized_crop(image, size, rng),
        Augmentation::CenterCrop => resize_center_crop(image, size * 8 / 7, size),
    }
}

/// The order of a split's images in an epoch.
pub fn epoch_order(len: usize, config: &LoaderConfig, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if config.shuffle {
        order.shuffle(&mut StdRng::seed_from_u64(mix(config.seed, epoch)));
    }
    order
}

fn make_batch(
    split: &Split,
    indices: &[usize],
    config: &LoaderConfig,
    epoch: u64,
) -> Result<HostBatch, DataError> {
    let s = config.image_size;
    let plane = 3 * s * s;
    let n = indices.len();
    let views = config.views.count();
    let mut images = vec![0f32; views * n * plane];
    let mut labels = Vec::with_capacity(n);
    for (slot, &i) in indices.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(mix(mix(config.seed, epoch), i as u64 + 1));
        let img = match config.augmentation {
            // Only the window is decoded where the decoder can (JPEG with libjpeg-turbo).
            Augmentation::RandomResizedCrop => {
                let (image, window) =
                    split.image_window(i, |h, w| random_resized_crop_window(h, w, &mut rng))?;
                resized_crop_and_flip(&image, window, s, &mut rng)
            }
            other => transform(&split.image(i)?, other, s, &mut rng),
        };
        let at = |view: usize| (view * n + slot) * plane..(view * n + slot + 1) * plane;
        match config.views {
            Views::Single => config.policy.write_into(&img, &mut rng, &mut images[at(0)]),
            Views::CleanAndTwoAugmented => {
                img.write_chw_unit(&mut images[at(0)]);
                config.policy.write_into(&img, &mut rng, &mut images[at(1)]);
                config.policy.write_into(&img, &mut rng, &mut images[at(2)]);
            }
        }
        labels.push(split.labels[i] as i64);
    }
    Ok(HostBatch {
        images,
        labels,
        shape: [views * n, 3, s, s],
        views,
        indices: indices.to_vec(),
    })
}

/// An epoch's batches, in order, prepared by worker threads (batch `b` by worker
/// `b % workers`). Dropping the loader stops the workers.
pub struct BatchLoader {
    batches: InOrder<HostBatch>,
}

impl BatchLoader {
    /// Starts preparing the batches of `epoch` of `split`.
    pub fn new(split: &Split, config: &LoaderConfig, epoch: u64) -> Self {
        Self::shard(split, config, epoch, 0, 1)
    }

    /// Starts preparing part `rank` of `count` of every batch of `epoch` of `split`: a
    /// data-parallel peer builds only its own images, the same as [`HostBatch::shard`] of
    /// the whole batch (every image draws its augmentation from its own seed). Every batch
    /// must split evenly.
    pub fn shard(
        split: &Split,
        config: &LoaderConfig,
        epoch: u64,
        rank: usize,
        count: usize,
    ) -> Self {
        assert!(config.batch_size > 0, "batch size must be positive");
        let order = epoch_order(split.len(), config, epoch);
        let mut batches: Vec<Vec<usize>> = order
            .chunks(config.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if config.drop_last && batches.last().is_some_and(|b| b.len() < config.batch_size) {
            batches.pop();
        }
        for batch in &mut batches {
            let n = batch.len();
            assert!(
                count > 0 && rank < count && n.is_multiple_of(count),
                "a batch of {n} images cannot be split into {count} equal parts"
            );
            let per = n / count;
            *batch = batch[rank * per..(rank + 1) * per].to_vec();
        }
        let split = split.clone();
        let config = *config;
        let work = move |indices: Vec<usize>| make_batch(&split, &indices, &config, epoch);
        let batches = InOrder::new(batches, config.workers, config.prefetch, work);
        Self { batches }
    }

    /// Number of batches in the epoch.
    pub fn num_batches(&self) -> usize {
        self.batches.len()
    }
}

impl Iterator for BatchLoader {
    type Item = Result<HostBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.batches.next()
    }
}
