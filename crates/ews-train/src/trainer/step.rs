//! One training step: what training changes ([`Learner`]) and how one batch changes it
//! (attack, subnet search, AWP, objective, optimiser).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, ElementConversion, Int, Tensor};
use ews_data::Dataset;
use ews_data::loader::mix;
use ews_models::{Network, NetworkConfig};
use ews_search::clip_grad_norm_on_device;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::objective::{StepBatch, awp_proxy_loss, step_loss};
use super::peers::Peer;
use super::search::SubnetSearch;
use crate::TrainError;
use crate::adversarial::{AttackTarget, WeightPerturbation};
use crate::config::{Adversarial, Method, OnNonFinite, TrainConfig};
use crate::loss::correct_on_device;

/// The optimiser of a run's network.
pub(crate) type Sgd_<B> =
    OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, Network<B>, B>;

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

/// What training changes and a checkpoint saves: the network, its optimiser and the
/// subnet searcher.
pub(crate) struct Learner<B: AutodiffBackend> {
    /// The network.
    pub model: Network<B>,
    /// Its optimiser.
    pub optim: Sgd_<B>,
    /// The subnet searcher (none without a subnet term).
    pub search: SubnetSearch<B>,
}

/// What one step leaves for the metrics.
pub(crate) struct StepReport<B: AutodiffBackend> {
    /// `[ce, kl, jsd, loss, right, subnet_right]` of the step, on the device.
    pub values: Tensor<B::InnerBackend, 1>,
    /// Labelled images of the step.
    pub images: usize,
    /// Whether the step trained a subnet.
    pub masked: bool,
    /// Whether the controller learned in this step.
    pub controller_updated: bool,
    /// Whether the update was skipped for a non-finite gradient (`on_nonfinite = skip`).
    pub skipped: bool,
}

/// What every step of a run reads: the config, the device and, in data-parallel runs, the
/// peer that exchanges with the others.
pub(crate) struct StepContext<'a, B: AutodiffBackend> {
    pub config: &'a TrainConfig,
    pub device: &'a B::Device,
    pub peer: Option<&'a Peer>,
}

impl<B: AutodiffBackend> StepContext<'_, B> {
    /// The gradients of `loss`, averaged over the peers in data-parallel runs.
    fn gradients(
        &self,
        loss: Tensor<B, 1>,
        model: &Network<B>,
    ) -> Result<GradientsParams, TrainError> {
        let grads = GradientsParams::from_grads(loss.backward(), model);
        match self.peer {
            Some(peer) => peer.mean_gradients::<B, _>(model, grads),
            None => Ok(grads),
        }
    }
}

/// Where a step is: epoch, step within it, global step, learning rate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepPosition {
    pub epoch: usize,
    pub index: usize,
    pub global: usize,
    pub lr: f64,
}

impl<B: AutodiffBackend> Learner<B> {
    /// The network, optimiser and searcher of `config` for `dataset`, initialised from the
    /// run's seed (burn's backend generator is seeded here).
    pub fn new(
        config: &TrainConfig,
        dataset: &Dataset,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let normalization = config
            .explicit_normalization()?
            .unwrap_or(dataset.normalization);
        B::seed(device, config.seed);
        let model: Network<B> = NetworkConfig::new(config.architecture()?)
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
        let optim = sgd(config);
        let search = SubnetSearch::new(config, space, device)?;
        Ok(Self {
            model,
            optim,
            search,
        })
    }

    /// Draws every lazily initialised parameter now, in place (burn initialises a parameter
    /// at its first use, from the process-wide generator at that moment, and a clone
    /// initialises on its own): data-parallel peers do it under one lock right after
    /// seeding, so that all hold the same weights.
    pub fn materialize(&self) {
        self.model.visit(&mut Materialize);
        if let Some(controller) = self.search.controller() {
            controller.net.visit(&mut Materialize);
        }
    }

    /// One step of Algorithm 1 on `batch` (whose `x_adv` is filled here in adversarial
    /// training): PGD against the full model, the subnet search, AWP's perturbation, the
    /// objective, and the optimiser's update.
    pub fn step(
        mut self,
        ctx: &StepContext<B>,
        mut batch: StepBatch<B>,
        at: StepPosition,
    ) -> Result<(Self, StepReport<B>), TrainError> {
        let (config, device) = (ctx.config, ctx.device);
        let n = batch.y.dims()[0];
        let mut rng = StdRng::seed_from_u64(mix(config.seed ^ 0x5EA2_C400, at.global as u64));
        batch.x_adv = (config.adversarial != Adversarial::None).then(|| {
            // x' against the full model (batch norm as `attack_bn` says, weights untouched),
            // recomputed every step.
            let target = AttackTarget::new(&self.model, config.resolved_attack_bn().mode());
            Tensor::<B, 4>::from_inner(config.training_attack().run::<B, _>(
                &target,
                batch.x.clone().inner(),
                batch.y.clone().inner(),
                at.global as u64,
            ))
        });
        // Adversarial EWS searches subnets by their robust accuracy on x'; with AugMix the
        // subnet sees all views, as the release does.
        let x_search = batch.x_adv.as_ref().unwrap_or(&batch.x);
        let search =
            self.search
                .step(ctx, &self.model, (x_search, &batch.y), at.index, &mut rng)?;

        // AWP: perturb conv/linear weights along the proxy loss's ascent direction, take the
        // step there, remove the perturbation after the update.
        let awp = match &batch.x_adv {
            Some(x_adv) if config.awp_active(at.epoch) => {
                let proxy = awp_proxy_loss(config, &self.model, &batch, x_adv);
                let grads = ctx.gradients(proxy, &self.model)?;
                Some(WeightPerturbation::new(
                    &self.model,
                    &grads,
                    config.awp_gamma,
                ))
            }
            _ => None,
        };
        if let Some(v) = &awp {
            self.model = v.apply(self.model, 1.0);
        }

        let mut out = step_loss(config, &self.model, &batch, search.masks.as_ref());
        if crate::fault::nan_loss_at(at.global) {
            out.loss = out.loss * f32::NAN;
        }
        let right = correct_on_device(batch.clean_rows(out.logits.detach()), batch.y.clone());
        let zero = || Tensor::<B, 1>::zeros([1], device);
        let values = Tensor::cat(
            vec![
                out.ce.detach(),
                out.kl.unwrap_or_else(zero),
                out.jsd.unwrap_or_else(zero),
                out.loss.clone().detach(),
                right.float(),
                out.subnet_right.map_or_else(zero, |r| r.float()),
            ],
            0,
        );
        let grads = ctx.gradients(out.loss, &self.model)?;
        let skipping = config.on_nonfinite == OnNonFinite::Skip;
        let (grads, norm) = match config.grad_clip {
            Some(max) => clip_grad_norm_on_device(&self.model, grads, max),
            // max 0: the norm alone, to see whether the gradients are finite.
            None if skipping => clip_grad_norm_on_device(&self.model, grads, 0.0),
            None => (grads, None),
        };
        // The gradients are averaged over the peers first, so all peers skip alike.
        let skipped = skipping && norm.is_some_and(|n| !n.into_scalar().elem::<f32>().is_finite());
        if !skipped {
            self.model = self.optim.step(at.lr, self.model, grads);
        }
        if let Some(v) = &awp {
            self.model = v.apply(self.model, -1.0);
        }
        let report = StepReport {
            values: values.inner(),
            images: n,
            masked: search.masks.is_some(),
            controller_updated: search.updated,
            skipped,
        };
        Ok((self, report))
    }
}

/// Reads every parameter once, which initialises a lazy one in place.
struct Materialize;

impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        param.val();
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        param.val();
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        param.val();
    }
}
