//! Finding weak subnets (paper §3.2): one trait, [`SubnetProposer`], implemented by the LSTM
//! [`Controller`] trained with REINFORCE, by uniformly random subnets ([`RandomProposer`])
//! and by L1-norm selection ([`L1NormProposer`], paper Table 5).

pub mod clip;
pub mod controller;
pub mod likelihood;

pub use clip::{clip_grad_norm, clip_grad_norm_on_device};
pub use controller::{BaselineUpdate, Controller, ControllerConfig, ControllerNet};
pub use likelihood::{LogProbKind, draw_log_prob, entropy, sample_without_replacement};

use burn::tensor::backend::Backend;
use ews_models::{BlockChoice, Network, Subnet, SubnetSpace, SubnetWidth};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// A proposed subnet and, for the controller, the draws that produced it (in draw order,
/// one entry per decision), so a later update can score them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The subnet.
    pub subnet: Subnet,
    /// The controller's draws; empty for proposers that do not learn.
    pub draws: Vec<Vec<usize>>,
}

/// A proposal with its reward (paper Eq. 1: the negative subnet accuracy on the batch).
#[derive(Clone, Debug)]
pub struct Rewarded {
    /// The proposal.
    pub proposal: Proposal,
    /// Its reward.
    pub reward: f64,
}

/// Statistics of one controller update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchStats {
    /// Mean reward of the update's samples.
    pub reward: f64,
    /// Baseline before the update.
    pub baseline: f64,
    /// Mean advantage (reward - baseline).
    pub advantage: f64,
    /// The REINFORCE loss.
    pub loss: f64,
    /// Mean log-probability of the samples.
    pub log_prob: f64,
    /// Mean summed entropy of the samples.
    pub entropy: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
}

/// What a proposer may look at: the random source and, for L1-norm selection, the weights.
pub struct ProposalContext<'a> {
    /// Random source for sampling.
    pub rng: &'a mut dyn RngCore,
    /// Weight norms of the current network, when the proposer asked for them.
    pub norms: Option<&'a WeightNorms>,
}

/// Per block: mean absolute weight of each path and L1 norm of each maskable channel.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightNorms {
    /// `paths[block][path]`.
    pub paths: Vec<Vec<f32>>,
    /// `channels[block][path][layer][channel]`.
    pub channels: Vec<Vec<Vec<Vec<f32>>>>,
}

impl WeightNorms {
    /// The norms of a network's current weights (layout of [`Network::subnet_space`]).
    pub fn of<B: Backend>(model: &Network<B>) -> Self {
        let mut paths = Vec::new();
        let mut channels = Vec::new();
        for block in model.blocks() {
            paths.push(block.path_mean_abs_weight().to_vec());
            channels.push(vec![vec![block.channel_l1()], vec![]]);
        }
        Self { paths, channels }
    }
}

/// Anything that proposes subnets for the enhancement step.
pub trait SubnetProposer {
    /// One subnet to enhance.
    fn propose(&mut self, ctx: &mut ProposalContext<'_>) -> Proposal;

    /// Whether [`SubnetProposer::propose`] needs [`WeightNorms`] in its context.
    fn needs_weight_norms(&self) -> bool {
        false
    }

    /// Whether the proposer learns from rewards (the trainer then runs the search step).
    fn learns(&self) -> bool {
        false
    }

    /// Learns from rewarded proposals; proposers that do not learn return `None`.
    fn learn(&mut self, _samples: &[Rewarded]) -> Option<SearchStats> {
        None
    }
}

/// Uniformly random subnets at width rho (the "random subnets" baseline).
#[derive(Clone, Debug)]
pub struct RandomProposer {
    space: SubnetSpace,
    width: SubnetWidth,
}

impl RandomProposer {
    /// Random subnets of `space` at `width` (an `f64` rho takes the release's rounding).
    pub fn new(space: SubnetSpace, width: impl Into<SubnetWidth>) -> Self {
        Self {
            space,
            width: width.into(),
        }
    }
}

impl SubnetProposer for RandomProposer {
    fn propose(&mut self, ctx: &mut ProposalContext<'_>) -> Proposal {
        Proposal {
            subnet: self.space.random(self.width, ctx.rng),
            draws: Vec::new(),
        }
    }
}

/// L1-norm selection (paper Table 5): in every block keep the paths with the lowest mean
/// absolute weight and the channels whose producing filters have the lowest L1 norm.
#[derive(Clone, Debug)]
pub struct L1NormProposer {
    space: SubnetSpace,
    width: SubnetWidth,
}

impl L1NormProposer {
    /// Lowest-norm subnets of `space` at `width` (an `f64` rho takes the release's rounding).
    pub fn new(space: SubnetSpace, width: impl Into<SubnetWidth>) -> Self {
        Self {
            space,
            width: width.into(),
        }
    }
}

/// Indices of the `k` smallest values, ascending by index; ties go to the lower index.
fn lowest(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    let mut kept = order[..k.min(values.len())].to_vec();
    kept.sort_unstable();
    kept
}

impl SubnetProposer for L1NormProposer {
    fn propose(&mut self, ctx: &mut ProposalContext<'_>) -> Proposal {
        let norms = ctx.norms.expect("L1-norm selection needs the weight norms");
        let blocks = self
            .space
            .blocks
            .iter()
            .enumerate()
            .map(|(b, block)| BlockChoice {
                paths: lowest(&norms.paths[b], self.width.kept(block.paths.len())),
                channels: block
                    .paths
                    .iter()
                    .enumerate()
                    .map(|(p, path)| {
                        path.layers
                            .iter()
                            .enumerate()
                            .map(|(l, layer)| {
                                lowest(&norms.channels[b][p][l], self.width.kept(layer.width))
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        Proposal {
            subnet: Subnet { blocks },
            draws: Vec::new(),
        }
    }

    fn needs_weight_norms(&self) -> bool {
        true
    }
}
