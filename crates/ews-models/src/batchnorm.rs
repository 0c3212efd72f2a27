//! Batch normalisation with explicit modes.
//!
//! burn 0.21's `BatchNorm` picks its behaviour from the backend (training statistics whenever
//! autodiff is enabled) and always updates its running statistics. EWS needs three behaviours
//! on the same backend, chosen per pass: see [`BnMode`].

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::norm::{self, NormStats};

/// How a forward pass treats batch normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BnMode {
    /// (a) Training: normalise with batch statistics and update the running statistics.
    Train,
    /// (b) Subnet passes: normalise with batch statistics, leave the running statistics
    /// untouched (the official release's BN momentum 0).
    BatchStats,
    /// (c) Evaluation: normalise with the running statistics, also on an autodiff backend
    /// (adversarial attacks need input gradients through an evaluation-mode network).
    Eval,
}

/// 2-d batch normalisation with PyTorch's parameter names, defaults and running-variance
/// update (unbiased batch variance, momentum 0.1, epsilon 1e-5).
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale (PyTorch `weight`, burn `gamma`).
    pub weight: Param<Tensor<B, 1>>,
    /// Shift (PyTorch `bias`, burn `beta`).
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean of the batch means.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running mean of the unbiased batch variances.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Number of training-mode batches seen (PyTorch's `num_batches_tracked`), as a float.
    pub num_batches_tracked: RunningState<Tensor<B, 1>>,
    /// Weight of the newest batch in the running statistics.
    pub momentum: f64,
    /// Added to the variance for numerical stability.
    pub epsilon: f64,
}

impl<B: Backend> BatchNorm2d<B> {
    /// A batch norm over `channels` channels with weight 1, bias 0, mean 0, variance 1.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            num_batches_tracked: RunningState::new(Tensor::zeros([1], device)),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// Normalise `x` of shape `[batch, channels, height, width]` as `mode` says.
    pub fn forward(&self, x: Tensor<B, 4>, mode: BnMode) -> Tensor<B, 4> {
        self.normalize(x, mode, None)
    }

    /// Normalise `x`, which holds only the channels `kept` (ascending indices into this
    /// layer's channels), with those channels' parameters: the kept part of what
    /// [`forward`](Self::forward) gives on the full input.
    ///
    /// # Panics
    /// In [`BnMode::Train`]: a running-statistics update of a channel subset has no
    /// full-width equivalent.
    pub fn forward_kept(
        &self,
        x: Tensor<B, 4>,
        mode: BnMode,
        kept: &Tensor<B, 1, Int>,
    ) -> Tensor<B, 4> {
        assert!(
            mode != BnMode::Train,
            "a channel-sliced batch norm cannot update running statistics (BnMode::Train)"
        );
        self.normalize(x, mode, Some(kept))
    }

    fn normalize(
        &self,
        x: Tensor<B, 4>,
        mode: BnMode,
        kept: Option<&Tensor<B, 1, Int>>,
    ) -> Tensor<B, 4> {
        let [batch, channels, height, width] = x.dims();
        let count = batch * height * width;
        assert!(
            count > 1 || mode != BnMode::Train,
            "batch norm in training mode needs more than one value per channel, got input {:?}",
            [batch, channels, height, width]
        );
        let pick = |t: Tensor<B, 1>| match kept {
            Some(kept) => t.select(0, kept.clone()),
            None => t,
        };
        let (gamma, beta) = (pick(self.weight.val()), pick(self.bias.val()));
        let stats = match mode {
            BnMode::Eval => {
                let device = x.device();
                NormStats::Given(
                    pick(self.running_mean.value_sync().to_device(&device)),
                    pick(self.running_var.value_sync().to_device(&device)),
                )
            }
            BnMode::Train | BnMode::BatchStats => NormStats::Batch,
        };
        let (y, batch_stats) = match norm::batch_norm(&x, &gamma, &beta, &stats, self.epsilon) {
            Some(fused) => (fused.output, fused.batch_stats),
            None => composed(x, gamma, beta, stats, self.epsilon),
        };
        if let (BnMode::Train, Some((mean, var))) = (mode, batch_stats) {
            self.update_running(&mean, &var, count);
        }
        y
    }

    fn update_running(&self, mean: &Tensor<B, 1>, var: &Tensor<B, 1>, count: usize) {
        let device = mean.device();
        let m = self.momentum;
        let unbiased = count as f64 / (count.max(2) - 1) as f64;
        let running_mean = self.running_mean.value_sync().to_device(&device) * (1.0 - m)
            + mean.clone().detach() * m;
        let running_var = self.running_var.value_sync().to_device(&device) * (1.0 - m)
            + var.clone().detach() * (m * unbiased);
        let tracked = self.num_batches_tracked.value_sync().to_device(&device) + 1.0;
        self.running_mean.update(running_mean.detach());
        self.running_var.update(running_var.detach());
        self.num_batches_tracked.update(tracked.detach());
        // burn keeps updates pending until the next synchronised read, and module visitors
        // (exports, counts) read the stale value: fold the update in now.
        let _ = self.running_mean.value_sync();
        let _ = self.running_var.value_sync();
        let _ = self.num_batches_tracked.value_sync();
    }
}

/// A per-channel mean and variance.
type MeanVar<B> = (Tensor<B, 1>, Tensor<B, 1>);

/// Batch norm as tensor operations (backends without fused kernels); returns the output and,
/// for batch statistics, the batch's mean and biased variance.
fn composed<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    stats: NormStats<B>,
    epsilon: f64,
) -> (Tensor<B, 4>, Option<MeanVar<B>>) {
    let channels = x.dims()[1];
    let (mean, var, batch) = match stats {
        NormStats::Given(mean, var) => (mean, var, false),
        NormStats::Batch => {
            // Reduce the contiguous trailing axes first; a transpose to [C, N*H*W] costs a
            // strided copy per pass on CPU backends.
            let per_channel = |t: Tensor<B, 4>| t.mean_dim(3).mean_dim(2).mean_dim(0);
            let mean = per_channel(x.clone());
            let var = per_channel((x.clone() - mean.clone()).square());
            (mean.reshape([channels]), var.reshape([channels]), true)
        }
    };
    let scale = gamma / (var.clone() + epsilon).sqrt();
    let shift = beta - mean.clone() * scale.clone();
    let y = x * scale.reshape([1, channels, 1, 1]) + shift.reshape([1, channels, 1, 1]);
    (y, batch.then_some((mean, var)))
}
