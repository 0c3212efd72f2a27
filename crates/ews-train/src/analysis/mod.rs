//! The paper's analyses of trained networks: how accurate random subnets are on clean,
//! corrupted and adversarial inputs (Fig. 1, [`subnets`]) and how vulnerable each residual
//! block is when half of it is dropped (Fig. 7, [`blocks`]).
//!
//! Both evaluate subnets on fixed test batches prepared once per input ([`inputs`]); every
//! subnet sees the same images, so the spread across subnets is the subnets' own.

pub mod blocks;
pub mod inputs;
pub mod subnets;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use ews_models::{BnMode, Network, SubnetMasks};
use serde::{Deserialize, Serialize};

use crate::config::{Method, SearcherKind, TrainConfig};
use crate::loss::correct;

pub use blocks::{BlockReport, BlockVulnerability, block_subnet, block_vulnerability};
pub use inputs::{AnalysisInput, InputBatches, prepare_inputs};
pub use subnets::{SubnetDistribution, SubnetReport, subnet_distributions};

/// Which batch-norm statistics subnets are evaluated with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetBn {
    /// Statistics of each test batch, running statistics untouched: how the release's
    /// controller measures subnets during training (train mode with BN momentum 0).
    #[default]
    Batch,
    /// The full network's running statistics (evaluation mode).
    Running,
}

impl SubnetBn {
    /// The forward pass's batch-norm mode.
    pub fn mode(self) -> BnMode {
        match self {
            SubnetBn::Batch => BnMode::BatchStats,
            SubnetBn::Running => BnMode::Eval,
        }
    }
}

impl std::str::FromStr for SubnetBn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(Self::Batch),
            "running" => Ok(Self::Running),
            _ => Err(format!("bn `{s}`: expected batch or running")),
        }
    }
}

impl std::fmt::Display for SubnetBn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Batch => "batch statistics",
            Self::Running => "running statistics",
        })
    }
}

/// The training method of a run as tables name it: `vanilla`, `dropout`, `ews`, or the
/// Table 5 baselines `random subnets` and `l1-norm`.
pub fn method_label(config: &TrainConfig) -> String {
    match (config.method, config.searcher) {
        (Method::Vanilla, _) => "vanilla",
        (Method::Dropout, _) => "dropout",
        (Method::Ews, SearcherKind::Controller) => "ews",
        (Method::Ews, SearcherKind::Random) => "random subnets",
        (Method::Ews, SearcherKind::L1Norm) => "l1-norm",
    }
    .to_string()
}

/// Top-1 accuracy (percent) of the network, or of the subnet of `masks`, on `batches`.
pub fn accuracy_on<B: Backend>(
    model: &Network<B>,
    batches: &[(Tensor<B, 4>, Tensor<B, 1, Int>)],
    masks: Option<&SubnetMasks<B>>,
    bn: SubnetBn,
) -> f64 {
    let (mut right, mut total) = (0usize, 0usize);
    for (x, y) in batches {
        let logits = match masks {
            Some(m) => model.forward_subnet(x.clone(), m, bn.mode()),
            None => model.forward(x.clone(), bn.mode()),
        };
        right += correct(logits, y.clone());
        total += y.dims()[0];
    }
    100.0 * right as f64 / total.max(1) as f64
}

/// Summary statistics of a set of values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population, as numpy's default).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// 5th percentile (linear interpolation between order statistics, numpy's default).
    pub p5: f64,
    /// Largest value.
    pub max: f64,
}

impl Stats {
    /// The statistics of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self {
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                p5: 0.0,
                max: 0.0,
            };
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            mean,
            std: var.sqrt(),
            min: sorted[0],
            p5: percentile(&sorted, 5.0),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The `q`-th percentile of sorted values, interpolating linearly between the two nearest
/// order statistics (numpy's `percentile` default).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let at = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn stats_match_numpy() {
        // numpy: mean 5.5, std 2.8722813232690143, percentile(x, 5) = 1.45.
        let values: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let s = Stats::of(&values);
        assert_eq!((s.mean, s.min, s.max), (5.5, 1.0, 10.0));
        assert!((s.std - 2.872_281_323_269_014_3).abs() < 1e-12);
        assert!((s.p5 - 1.45).abs() < 1e-12);
        assert_eq!(Stats::of(&[3.0]).p5, 3.0);
    }
}
