//! The LSTM controller that searches for weak subnets (paper §3.2), trained with REINFORCE.

use burn::config::Config;
use burn::module::{AutodiffModule, Initializer, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use std::path::Path;

use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use ews_models::ModelError;
use ews_models::persist::{
    decode_record, load_record_bytes, pack_sections, record_bytes, unpack_sections,
};
use ews_models::subnet::validate_rho;
use ews_models::{BlockChoice, Subnet, SubnetSpace, SubnetWidth, WidthRounding};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::clip::clip_grad_norm;
use crate::likelihood::{LogProbKind, draw_log_prob, entropy, sample_without_replacement};
use crate::{Proposal, ProposalContext, Rewarded, SearchStats, SubnetProposer};

/// How the moving-average baseline follows the rewards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineUpdate {
    /// `b <- decay * b + (1 - decay) * reward` (REINFORCE with a moving-average baseline).
    Reward,
    /// The official release's quirk: `b <- decay * b + (1 - decay) * advantage`, starting
    /// from `b = 0`.
    Advantage,
}

/// Settings of the controller and its REINFORCE update (defaults: the official release).
#[derive(Config, Debug)]
pub struct ControllerConfig {
    /// Subnet width rho: fraction of paths and channels kept.
    #[config(default = 0.7)]
    pub rho: f64,
    /// How rho becomes counts of kept paths and channels (default: the release's).
    #[config(default = "WidthRounding::Release")]
    pub rounding: WidthRounding,
    /// LSTM hidden size.
    #[config(default = 100)]
    pub hidden: usize,
    /// Entropy bonus weight (0.005 clean training, 0.01 adversarial).
    #[config(default = 0.005)]
    pub entropy_weight: f64,
    /// Adam learning rate.
    #[config(default = 3e-4)]
    pub lr: f64,
    /// Adam beta1.
    #[config(default = 0.5)]
    pub beta1: f32,
    /// Adam beta2.
    #[config(default = 0.999)]
    pub beta2: f32,
    /// Global gradient-norm clip.
    #[config(default = 3.0)]
    pub grad_clip: f64,
    /// Decay of the moving-average baseline.
    #[config(default = 0.99)]
    pub baseline_decay: f64,
    /// What the baseline averages.
    #[config(default = "BaselineUpdate::Reward")]
    pub baseline_update: BaselineUpdate,
    /// Exact Plackett-Luce likelihood or the release's approximation.
    #[config(default = "LogProbKind::Exact")]
    pub log_prob: LogProbKind,
}

/// A PyTorch-style LSTM cell: gates from one linear map of `[input, hidden]`.
#[derive(Module, Debug)]
pub struct LstmCell<B: Backend> {
    /// Maps `[input; hidden]` to the four gates (input, forget, cell, output).
    pub gates: Linear<B>,
}

impl<B: Backend> LstmCell<B> {
    fn new(size: usize, device: &B::Device) -> Self {
        let bound = 1.0 / (size as f64).sqrt();
        let gates = LinearConfig::new(2 * size, 4 * size)
            .with_initializer(Initializer::Uniform {
                min: -bound,
                max: bound,
            })
            .init(device);
        Self { gates }
    }

    /// One step: returns the new (hidden, cell), each `[1, size]`.
    fn step(
        &self,
        input: Tensor<B, 2>,
        hidden: Tensor<B, 2>,
        cell: Tensor<B, 2>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let size = hidden.dims()[1];
        let z = self.gates.forward(Tensor::cat(vec![input, hidden], 1));
        let gate = |k: usize| z.clone().slice([0..1, k * size..(k + 1) * size]);
        let (i, f, g, o) = (
            sigmoid(gate(0)),
            sigmoid(gate(1)),
            tanh(gate(2)),
            sigmoid(gate(3)),
        );
        let cell = f * cell + i * g;
        (o * tanh(cell.clone()), cell)
    }
}

/// The controller's parameters.
#[derive(Module, Debug)]
pub struct ControllerNet<B: Backend> {
    /// The recurrent cell, batch 1, state carried over all blocks in network order.
    pub cell: LstmCell<B>,
    /// Path logits (width = most paths of any block, truncated per block).
    pub path_head: Linear<B>,
    /// Channel logits (width = widest maskable layer, truncated per layer).
    pub channel_head: Linear<B>,
    /// Per-block path embeddings, `[blocks * max_paths, hidden]`.
    pub path_embedding: Param<Tensor<B, 2>>,
    /// Per-block channel embeddings, `[blocks * max_width, hidden]`.
    pub channel_embedding: Param<Tensor<B, 2>>,
}

/// What the controller decides, in order, for one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecisionKind {
    Paths {
        block: usize,
    },
    Channels {
        block: usize,
        path: usize,
        layer: usize,
    },
}

/// The controller: an LSTM policy over the subnet space, its optimiser and its baseline.
pub struct Controller<B: AutodiffBackend> {
    /// The policy network.
    pub net: ControllerNet<B>,
    optim: OptimizerAdaptor<Adam, ControllerNet<B>, B>,
    config: ControllerConfig,
    space: SubnetSpace,
    device: B::Device,
    /// Moving-average baseline of the rewards; `None` before the first update.
    pub baseline: Option<f64>,
}

impl ControllerConfig {
    /// The subnet width the controller draws.
    pub fn width(&self) -> SubnetWidth {
        SubnetWidth::with_rounding(self.rho, self.rounding)
    }

    /// Builds a controller for `space` on `device`.
    pub fn init<B: AutodiffBackend>(
        &self,
        space: &SubnetSpace,
        device: &B::Device,
    ) -> Result<Controller<B>, String> {
        validate_rho(self.rho).map_err(|e| e.to_string())?;
        if self.hidden == 0 || space.num_blocks() == 0 {
            return Err("the controller needs a hidden size and at least one block".into());
        }
        let (h, blocks) = (self.hidden, space.num_blocks());
        let (max_paths, max_width) = (space.max_paths().max(1), space.max_width().max(1));
        let bound = 1.0 / (h as f64).sqrt();
        let uniform = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        let net = ControllerNet {
            cell: LstmCell::new(h, device),
            path_head: LinearConfig::new(h, max_paths)
                .with_initializer(uniform.clone())
                .init(device),
            channel_head: LinearConfig::new(h, max_width)
                .with_initializer(uniform.clone())
                .init(device),
            path_embedding: uniform.init([blocks * max_paths, h], device),
            channel_embedding: uniform.init([blocks * max_width, h], device),
        };
        let optim = AdamConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(1e-8)
            .init();
        Ok(Controller {
            net,
            optim,
            config: self.clone(),
            space: space.clone(),
            device: device.clone(),
            baseline: None,
        })
    }
}

impl<B: Backend> ControllerNet<B> {
    /// Runs the policy along the sequence of decisions, drawing or replaying each one.
    /// Returns the draws (one per decision, in draw order) and, with `with_terms`, the
    /// log-probability and entropy summed over the decisions that had a choice.
    fn unroll(
        &self,
        space: &SubnetSpace,
        width: SubnetWidth,
        kind: LogProbKind,
        mut source: DrawSource<'_>,
        with_terms: bool,
    ) -> (Vec<Vec<usize>>, Option<PolicyTerms<B>>) {
        let device = self.path_head.weight.device();
        let h = self.cell.gates.weight.dims()[1] / 4;
        let max_paths = self.path_head.weight.dims()[1];
        let max_width = self.channel_head.weight.dims()[1];
        let mut input = Tensor::<B, 2>::zeros([1, h], &device);
        let mut hidden = Tensor::<B, 2>::zeros([1, h], &device);
        let mut cell = Tensor::<B, 2>::zeros([1, h], &device);
        let mut draws = Vec::new();
        let mut log_prob = Tensor::<B, 1>::zeros([1], &device);
        let mut total_entropy = Tensor::<B, 1>::zeros([1], &device);
        let mut decision = 0;
        for (b, block) in space.blocks.iter().enumerate() {
            let path_kept = width.kept(block.paths.len());
            let mut kinds = vec![(
                DecisionKind::Paths { block: b },
                block.paths.len(),
                path_kept,
            )];
            // Channel decisions follow for each kept path; which paths are kept is known
            // only after the path decision, so they are pushed below.
            let mut k = 0;
            while k < kinds.len() {
                let (what, n, keep) = kinds[k];
                k += 1;
                let (next_hidden, next_cell) = self.cell.step(input.clone(), hidden, cell);
                hidden = next_hidden;
                cell = next_cell;
                let (head, table, offset) = match what {
                    DecisionKind::Paths { block } => {
                        (&self.path_head, &self.path_embedding, block * max_paths)
                    }
                    DecisionKind::Channels { block, .. } => (
                        &self.channel_head,
                        &self.channel_embedding,
                        block * max_width,
                    ),
                };
                let logits = head.forward(hidden.clone()).reshape([-1]).narrow(0, 0, n);
                let chosen: Vec<usize> = if keep == n {
                    (0..n).collect()
                } else {
                    let chosen = match &mut source {
                        DrawSource::Replay(draws) => draws[decision].clone(),
                        DrawSource::Sample(rng) => {
                            let host: Vec<f32> = logits
                                .clone()
                                .into_data()
                                .convert::<f32>()
                                .to_vec()
                                .expect("f32 logits");
                            sample_without_replacement(&host, keep, *rng)
                        }
                    };
                    if with_terms {
                        log_prob = log_prob + draw_log_prob(logits.clone(), &chosen, kind);
                        total_entropy = total_entropy + entropy(logits);
                    }
                    chosen
                };
                decision += 1;
                let rows = Tensor::<B, 1, Int>::from_data(
                    TensorData::new(
                        chosen
                            .iter()
                            .map(|&i| (offset + i) as i64)
                            .collect::<Vec<_>>(),
                        [chosen.len()],
                    ),
                    &device,
                );
                input = table.val().select(0, rows).mean_dim(0);
                if let DecisionKind::Paths { block } = what {
                    let mut kept_paths = chosen.clone();
                    kept_paths.sort_unstable();
                    for p in kept_paths {
                        for (l, layer) in space.blocks[block].paths[p].layers.iter().enumerate() {
                            let keep = width.kept(layer.width);
                            kinds.push((
                                DecisionKind::Channels {
                                    block,
                                    path: p,
                                    layer: l,
                                },
                                layer.width,
                                keep,
                            ));
                        }
                    }
                }
                draws.push(chosen);
            }
        }
        let terms = with_terms.then_some((log_prob, total_entropy));
        (draws, terms)
    }
}

/// Log-probability and entropy of a subnet's decisions, each of shape `[1]`.
type PolicyTerms<B> = (Tensor<B, 1>, Tensor<B, 1>);

/// Where the decisions of an unroll come from.
enum DrawSource<'a> {
    /// Sample each decision from the policy.
    Sample(&'a mut dyn RngCore),
    /// Replay recorded draws (to score them under the current policy).
    Replay(&'a [Vec<usize>]),
}

/// Builds the subnet described by a sequence of draws (see [`ControllerNet::unroll`]).
fn subnet_from_draws(space: &SubnetSpace, draws: &[Vec<usize>]) -> Subnet {
    let mut next = draws.iter();
    let blocks = space
        .blocks
        .iter()
        .map(|block| {
            let mut paths = next.next().expect("path draw").clone();
            paths.sort_unstable();
            let mut channels: Vec<Vec<Vec<usize>>> = block
                .paths
                .iter()
                .map(|p| vec![Vec::new(); p.layers.len()])
                .collect();
            for &p in &paths {
                for slot in channels[p].iter_mut() {
                    let mut kept = next.next().expect("channel draw").clone();
                    kept.sort_unstable();
                    *slot = kept;
                }
            }
            BlockChoice { paths, channels }
        })
        .collect();
    Subnet { blocks }
}

impl<B: AutodiffBackend> Controller<B> {
    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The subnet space searched.
    pub fn space(&self) -> &SubnetSpace {
        &self.space
    }

    /// Samples one subnet (no gradient), returning it with its draws.
    pub fn sample(&self, rng: &mut dyn RngCore) -> Proposal {
        let net = self.net.valid();
        let (draws, _) = net.unroll(
            &self.space,
            self.config.width(),
            self.config.log_prob,
            DrawSource::Sample(rng),
            false,
        );
        Proposal {
            subnet: subnet_from_draws(&self.space, &draws),
            draws,
        }
    }

    /// Log-probability and entropy of a proposal's draws under the current policy.
    pub fn log_prob_and_entropy(&self, proposal: &Proposal) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let source = DrawSource::Replay(&proposal.draws);
        let (_, terms) = self.net.unroll(
            &self.space,
            self.config.width(),
            self.config.log_prob,
            source,
            true,
        );
        terms.expect("terms requested")
    }

    /// One REINFORCE update from subnets and their rewards (C = `samples.len()`): the policy
    /// gradient `-(log pi * (r - b)) - beta * entropy` averaged over the samples, clipped to the
    /// configured global norm, one Adam step; then the baseline moves.
    pub fn reinforce(&mut self, samples: &[Rewarded]) -> SearchStats {
        assert!(!samples.is_empty(), "REINFORCE needs at least one sample");
        let mean_reward = samples.iter().map(|s| s.reward).sum::<f64>() / samples.len() as f64;
        // Before the first update the baseline is the first reward (ENAS), so that update's
        // advantage is zero; the release's quirk starts from 0, so its first advantage is the
        // reward itself.
        let baseline = self.baseline.unwrap_or(match self.config.baseline_update {
            BaselineUpdate::Reward => mean_reward,
            BaselineUpdate::Advantage => 0.0,
        });
        let mut loss = Tensor::<B, 1>::zeros([1], &self.device);
        let mut entropy_sum = 0.0;
        let mut log_prob_sum = 0.0;
        for sample in samples {
            let advantage = sample.reward - baseline;
            let (log_prob, entropy) = self.log_prob_and_entropy(&sample.proposal);
            log_prob_sum += log_prob.clone().into_scalar().elem::<f64>();
            entropy_sum += entropy.clone().into_scalar().elem::<f64>();
            loss = loss - log_prob * advantage - entropy * self.config.entropy_weight;
        }
        let loss = loss / samples.len() as f64;
        let loss_value = loss.clone().into_scalar().elem::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.net);
        let (grads, grad_norm) = clip_grad_norm(&self.net, grads, self.config.grad_clip);
        let net = self.net.clone();
        self.net = self.optim.step(self.config.lr, net, grads);
        let decay = self.config.baseline_decay;
        let target = match self.config.baseline_update {
            BaselineUpdate::Reward => mean_reward,
            BaselineUpdate::Advantage => mean_reward - baseline,
        };
        self.baseline = Some(decay * baseline + (1.0 - decay) * target);
        SearchStats {
            reward: mean_reward,
            baseline,
            advantage: mean_reward - baseline,
            loss: loss_value,
            log_prob: log_prob_sum / samples.len() as f64,
            entropy: entropy_sum / samples.len() as f64,
            grad_norm,
        }
    }
}

impl<B: AutodiffBackend> Controller<B> {
    /// The controller's state (policy weights, Adam moments, baseline) as bytes.
    pub fn state_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let net = record_bytes(&self.net)?;
        let optim = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .record(self.optim.to_record(), ())
            .map_err(|e| ModelError::Weights {
                path: "<controller>".into(),
                message: e.to_string(),
            })?;
        let baseline = self
            .baseline
            .map(f64::to_le_bytes)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Ok(pack_sections(&[
            ("net", &net),
            ("optimizer", &optim),
            ("baseline", &baseline),
        ]))
    }

    /// Restores a state saved by [`Controller::state_bytes`]; `source` names it in errors.
    pub fn load_state_bytes(mut self, bytes: &[u8], source: &Path) -> Result<Self, ModelError> {
        let mut sections = unpack_sections(bytes, source)?.into_iter();
        let mut next = |want: &str| -> Result<Vec<u8>, ModelError> {
            match sections.next() {
                Some((name, data)) if name == want => Ok(data),
                _ => Err(ModelError::Weights {
                    path: source.display().to_string(),
                    message: format!("controller state lacks its `{want}` section"),
                }),
            }
        };
        let (net, optim, baseline) = (next("net")?, next("optimizer")?, next("baseline")?);
        self.net = load_record_bytes(self.net, net, source, &self.device)?;
        let record = decode_record(optim, source, "controller optimizer", &self.device)?;
        self.optim = self.optim.load_record(record);
        self.baseline = baseline.try_into().ok().map(f64::from_le_bytes);
        Ok(self)
    }
}

impl<B: AutodiffBackend> SubnetProposer for Controller<B> {
    fn propose(&mut self, ctx: &mut ProposalContext<'_>) -> Proposal {
        self.sample(ctx.rng)
    }

    fn learns(&self) -> bool {
        true
    }

    fn learn(&mut self, samples: &[Rewarded]) -> Option<SearchStats> {
        Some(self.reinforce(samples))
    }
}
