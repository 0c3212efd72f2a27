//! Masked networks for EWS ("Improving Robustness by Enhancing Weak Subnets", ECCV 2022).
//!
//! - [`Architecture`]: PreAct ResNet-18/34, ResNet-18..152 with CIFAR or ImageNet stem,
//!   WideResNet-D-K, found by name.
//! - [`Network`]: one generic model type for all of them, with input normalisation inside,
//!   optional residual dropout, explicit batch-norm modes ([`BnMode`]) and a masked forward
//!   for subnets ([`Network::forward_subnet`]).
//! - [`SubnetSpace`] / [`Subnet`] / [`SubnetMasks`]: the paths and channels a subnet keeps.
//! - [`AlexNet`]: torchvision's AlexNet with its pretrained weights, the normaliser of the
//!   ImageNet-C and ImageNet-P benchmarks; [`Classifier`]: what evaluations need of a model.
//! - [`persist`]: burn checkpoints and PyTorch-named safetensors.

pub mod alexnet;
pub mod arch;
pub mod batchnorm;
pub mod classifier;
pub mod conv;
mod dispatch;
#[cfg(feature = "flex")]
mod flex_io;
pub mod network;
pub mod norm;
pub mod persist;
pub mod pool;
pub mod subnet;

pub use alexnet::{AlexNet, AlexNetConfig};
pub use arch::{Architecture, BlockKind, Stem};
pub use batchnorm::{BatchNorm2d, BnMode};
pub use classifier::Classifier;
pub use network::{Block, Network, NetworkConfig, Pass, Precision};
pub use subnet::{
    BlockChoice, BlockMasks, BlockSpace, Subnet, SubnetExecution, SubnetMasks, SubnetSpace,
    SubnetWidth, WidthRounding,
};

use serde::{Deserialize, Serialize};

/// The lock on burn's random generator. burn's CPU backends draw from one process-wide
/// generator (parameters lazily, at their first use), so code that seeds it and needs the
/// same draws every time holds this lock until it has drawn: the tests of this workspace do,
/// each for its whole length.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors of model construction, subnets and persistence.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An architecture name that does not parse.
    #[error("unknown architecture `{name}`: {reason}")]
    UnknownArchitecture {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value out of range.
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    /// A subnet that does not fit the network's subnet space.
    #[error("invalid subnet: {0}")]
    InvalidSubnet(String),
    /// A weights file that cannot be read, written or applied.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Per-channel input normalisation `(x - mean) / std`, applied inside the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Channel means (RGB).
    pub mean: [f32; 3],
    /// Channel standard deviations (RGB).
    pub std: [f32; 3],
}

impl Normalization {
    /// No normalisation (mean 0, std 1).
    pub fn identity() -> Self {
        Self {
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// CIFAR-10 training-set statistics.
    pub fn cifar10() -> Self {
        Self {
            mean: [0.4914, 0.4822, 0.4465],
            std: [0.2471, 0.2435, 0.2616],
        }
    }

    /// CIFAR-100 training-set statistics.
    pub fn cifar100() -> Self {
        Self {
            mean: [0.5071, 0.4865, 0.4409],
            std: [0.2673, 0.2564, 0.2762],
        }
    }

    /// ImageNet statistics (torchvision).
    pub fn imagenet() -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// The statistics for a dataset name (`cifar10`, `cifar100`, `imagenet`, `none`).
    pub fn for_dataset(name: &str) -> Option<Self> {
        match name {
            "cifar10" => Some(Self::cifar10()),
            "cifar100" => Some(Self::cifar100()),
            "imagenet" => Some(Self::imagenet()),
            "none" | "identity" => Some(Self::identity()),
            _ => None,
        }
    }

    /// Checks that every standard deviation is positive and every value finite.
    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = self.mean.iter().all(|m| m.is_finite())
            && self.std.iter().all(|s| s.is_finite() && *s > 0.0);
        if ok {
            Ok(())
        } else {
            Err(ModelError::InvalidConfig(format!(
                "normalization needs finite means and positive std, got {self:?}"
            )))
        }
    }
}
