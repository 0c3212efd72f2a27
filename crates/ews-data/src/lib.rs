//! Datasets for training and evaluation.
//!
//! - [`cifar`]: CIFAR-10 and CIFAR-100 in the official binary format.
//! - [`folder`]: ImageNet-style image folders (`ROOT/train/<class>/<image>`).
//! - [`synthetic`]: a generated 10-class shape dataset built into the binary, for offline runs.
//! - [`download`]: official downloads with md5 verification, resume and progress.
//! - [`loader`]: shuffled batches prepared on worker threads.
//! - [`npy`]: NumPy `.npy` files (the CIFAR-C layout).

pub mod cifar;
pub mod cifar_c;
pub mod download;
pub mod folder;
pub mod imagenet_p;
pub mod in_order;
#[cfg(feature = "libjpeg-turbo")]
pub mod libjpeg;
pub mod loader;
pub mod npy;
pub mod pickle;
pub mod sequence_reader;
pub mod synthetic;
pub mod torch_pth;
pub mod unfinished;
pub mod video;

use std::path::PathBuf;
use std::sync::Arc;

use ews_augment::Image;
use ews_models::Normalization;
use rand::SeedableRng;
use rand::rngs::StdRng;

pub use ews_augment::policy::Policy;
pub use loader::{Augmentation, BatchLoader, HostBatch, LoaderConfig, Views};

/// Errors of reading, generating and downloading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file with the wrong size, labels or content.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A file or folder that should exist and does not.
    #[error("{path} not found: {hint}")]
    Missing {
        /// What was looked for.
        path: String,
        /// How to get it.
        hint: String,
    },
    /// An I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A failed download.
    #[error("download of {url} failed: {message}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A dataset name or option that makes no sense.
    #[error("{0}")]
    Invalid(String),
}

/// Wraps an I/O error with its path.
pub fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where the images of a split live.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// Decoded images of one size in memory, HWC, `n * height * width * 3` bytes.
    Memory {
        /// Pixels of all images.
        pixels: Arc<Vec<u8>>,
        /// Height of every image.
        height: usize,
        /// Width of every image.
        width: usize,
    },
    /// Image files decoded on demand (ImageNet-sized data).
    Files(Arc<Vec<PathBuf>>),
}

/// A set of labelled images.
#[derive(Clone, Debug)]
pub struct Split {
    /// The images.
    pub images: ImageSource,
    /// One label per image.
    pub labels: Arc<Vec<u32>>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`, decoded.
    pub fn image(&self, i: usize) -> Result<Image, DataError> {
        match &self.images {
            ImageSource::Memory {
                pixels,
                height,
                width,
            } => {
                let size = height * width * 3;
                Ok(Image::new(
                    *height,
                    *width,
                    pixels[i * size..(i + 1) * size].to_vec(),
                ))
            }
            ImageSource::Files(paths) => folder::decode(&paths[i]),
        }
    }

    /// The window that `pick` chooses from image `i`'s (height, width): an image holding it
    /// and the window's place in that image (see [`folder::decode_window`]).
    pub fn image_window(
        &self,
        i: usize,
        pick: impl FnOnce(usize, usize) -> folder::Window,
    ) -> Result<(Image, folder::Window), DataError> {
        match &self.images {
            ImageSource::Files(paths) => folder::decode_window(&paths[i], pick),
            ImageSource::Memory { .. } => {
                let image = self.image(i)?;
                let window = pick(image.height, image.width);
                Ok((image, window))
            }
        }
    }

    /// A seeded random subset of `n` images (all if fewer), in their original order.
    /// Image folders are sorted by class, so a plain prefix would hold only the first classes.
    pub fn subset(&self, n: usize, seed: u64) -> Split {
        if n >= self.len() {
            return self.clone();
        }
        let mut picked =
            rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), self.len(), n).into_vec();
        picked.sort_unstable();
        self.select(&picked)
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let images = match &self.images {
            ImageSource::Memory {
                pixels,
                height,
                width,
            } => {
                let size = height * width * 3;
                let mut out = Vec::with_capacity(indices.len() * size);
                for &i in indices {
                    out.extend_from_slice(&pixels[i * size..(i + 1) * size]);
                }
                ImageSource::Memory {
                    pixels: Arc::new(out),
                    height: *height,
                    width: *width,
                }
            }
            ImageSource::Files(paths) => ImageSource::Files(Arc::new(
                indices.iter().map(|&i| paths[i].clone()).collect(),
            )),
        };
        Split {
            images,
            labels: Arc::new(indices.iter().map(|&i| self.labels[i]).collect()),
        }
    }

    /// Splits off a seeded random `n` images: (the rest, the held-out ones), both in their
    /// original order (Rice et al.'s early-stopping split).
    pub fn hold_out(&self, n: usize, seed: u64) -> (Split, Split) {
        let n = n.min(self.len());
        let mut held =
            rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), self.len(), n).into_vec();
        held.sort_unstable();
        let mut keep = vec![true; self.len()];
        for &i in &held {
            keep[i] = false;
        }
        let rest: Vec<usize> = (0..self.len()).filter(|&i| keep[i]).collect();
        (self.select(&rest), self.select(&held))
    }
}

/// A dataset: training and test splits with their class names and input statistics.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// A short name (`cifar10`, `folder:PATH`, `synthetic`).
    pub name: String,
    /// Training split.
    pub train: Split,
    /// Test (or validation) split.
    pub test: Split,
    /// Class names, index = label.
    pub classes: Vec<String>,
    /// Input normalisation for models trained on it.
    pub normalization: Normalization,
}

impl Dataset {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}
