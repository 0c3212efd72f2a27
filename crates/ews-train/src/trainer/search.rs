//! The subnet search step of Algorithm 1: every K steps of an epoch the controller rates C
//! subnets on the batch and learns from their accuracy; every step it proposes the subnet
//! that the KL term trains.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use ews_models::{ModelError, Network, SubnetMasks, SubnetSpace};
use ews_search::{
    ControllerConfig, L1NormProposer, ProposalContext, RandomProposer, Rewarded, SearchStats,
    SubnetProposer, WeightNorms,
};
use rand::rngs::StdRng;

use super::evaluation::subnet_accuracy;
use super::step::StepContext;
use crate::TrainError;
use crate::config::{Method, SearcherKind, TrainConfig};

/// The subnet searcher of a run.
pub(crate) enum Searcher<B: AutodiffBackend> {
    /// No subnet term (vanilla, dropout).
    None,
    /// EWS's LSTM controller, trained with REINFORCE.
    Controller(Box<ews_search::Controller<B>>),
    /// A searcher that does not learn (random subnets, L1-norm selection).
    Fixed(Box<dyn SubnetProposer + Send>),
}

/// What a step's search left: the subnet to train, and whether the controller learned.
pub(crate) struct SearchOutcome<B: AutodiffBackend> {
    /// Masks of the proposed subnet; `None` without a subnet term.
    pub masks: Option<SubnetMasks<B>>,
    /// Whether the controller was updated in this step.
    pub updated: bool,
}

/// The searcher, the subnet space it draws from and its latest learning statistics.
pub(crate) struct SubnetSearch<B: AutodiffBackend> {
    /// The searcher.
    pub searcher: Searcher<B>,
    space: SubnetSpace,
    /// The statistics of the controller's latest update (zero before the first).
    pub last_stats: SearchStats,
}

impl<B: AutodiffBackend> SubnetSearch<B> {
    /// The searcher `config` asks for over `space`.
    pub fn new(
        config: &TrainConfig,
        space: SubnetSpace,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let searcher =
            match (config.method, config.searcher) {
                (Method::Ews, SearcherKind::Controller) => Searcher::Controller(Box::new(
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
                (Method::Ews, SearcherKind::Random) => Searcher::Fixed(Box::new(
                    RandomProposer::new(space.clone(), config.subnet_width()),
                )),
                (Method::Ews, SearcherKind::L1Norm) => Searcher::Fixed(Box::new(
                    L1NormProposer::new(space.clone(), config.subnet_width()),
                )),
                _ => Searcher::None,
            };
        Ok(Self {
            searcher,
            space,
            last_stats: SearchStats::default(),
        })
    }

    /// Whether the run trains a subnet term.
    pub fn has_subnets(&self) -> bool {
        !matches!(self.searcher, Searcher::None)
    }

    /// The controller, where the run has one.
    pub fn controller(&self) -> Option<&ews_search::Controller<B>> {
        match &self.searcher {
            Searcher::Controller(c) => Some(c),
            _ => None,
        }
    }

    /// The search of step `i` of an epoch: at every K-th step a learning searcher rates
    /// `subnets_per_update` subnets on `(x, y)` (reward = -subnet accuracy with batch
    /// statistics, averaged over data-parallel peers; the release counts steps within the
    /// epoch) and learns; then it proposes the subnet this step trains.
    pub fn step(
        &mut self,
        ctx: &StepContext<B>,
        model: &Network<B>,
        (x, y): (&Tensor<B, 4>, &Tensor<B, 1, Int>),
        i: usize,
        rng: &mut StdRng,
    ) -> Result<SearchOutcome<B>, TrainError> {
        let (config, device) = (ctx.config, ctx.device);
        let space = &self.space;
        let Some(proposer) = proposer(&mut self.searcher) else {
            return Ok(SearchOutcome {
                masks: None,
                updated: false,
            });
        };
        let norms = proposer
            .needs_weight_norms()
            .then(|| WeightNorms::of(model));
        let updated = proposer.learns() && i.is_multiple_of(config.interval_k);
        if updated {
            let inner = model.valid();
            let x_inner = x.clone().inner();
            let y_inner = y.clone().inner();
            let mut samples: Vec<Rewarded> = (0..config.subnets_per_update)
                .map(|_| {
                    let proposal = proposer.propose(&mut ProposalContext {
                        rng: &mut *rng,
                        norms: norms.as_ref(),
                    });
                    let masks = proposal
                        .subnet
                        .to_masks_as(space, device, config.subnet_pass)?;
                    let acc = subnet_accuracy(&inner, x_inner.clone(), &y_inner, &masks);
                    Ok(Rewarded {
                        proposal,
                        reward: -acc,
                    })
                })
                .collect::<Result<_, ModelError>>()?;
            if let Some(peer) = ctx.peer {
                // Every peer scored the same subnets on its shard: learning from the mean
                // keeps the controllers identical.
                let rewards: Vec<f64> = samples.iter().map(|s| s.reward).collect();
                let mean = peer.mean_values::<B::InnerBackend>(&rewards, device)?;
                samples.iter_mut().zip(mean).for_each(|(s, r)| s.reward = r);
            }
            if let Some(learned) = proposer.learn(&samples) {
                self.last_stats = learned;
            }
        }
        let proposal = proposer.propose(&mut ProposalContext {
            rng,
            norms: norms.as_ref(),
        });
        let masks = proposal
            .subnet
            .to_masks_as::<B>(space, device, config.subnet_pass)?;
        Ok(SearchOutcome {
            masks: Some(masks),
            updated,
        })
    }
}

fn proposer<B: AutodiffBackend>(searcher: &mut Searcher<B>) -> Option<&mut dyn SubnetProposer> {
    match searcher {
        Searcher::None => None,
        Searcher::Controller(c) => Some(c.as_mut()),
        Searcher::Fixed(p) => Some(p.as_mut()),
    }
}
