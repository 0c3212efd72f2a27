//! The epoch loop: batches through the training step, progress bar and metrics lines,
//! then evaluation, the best model and the checkpoint.

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use ews_data::loader::mix;
use ews_data::{BatchLoader, HostBatch};
use indicatif::{ProgressBar, ProgressStyle};

use super::evaluation::score_epoch;
use super::inputs::{ExtraStream, TrainingData, steps_per_epoch, to_tensors};
use super::metrics::{DeviceSums, Meter, epoch_line, step_line};
use super::objective::StepBatch;
use super::peers::Peer;
use super::run::{Run, RunState};
use super::step::{Learner, StepContext, StepPosition};
use crate::TrainError;
use crate::config::TrainConfig;
use crate::schedule::LrSchedule;

/// What stays fixed over the epochs of a run.
pub(crate) struct EpochLoop<'a, B: AutodiffBackend> {
    pub config: &'a TrainConfig,
    pub data: &'a TrainingData,
    pub schedule: LrSchedule,
    pub progress: bool,
    pub device: &'a B::Device,
    /// This process's peer in data-parallel runs.
    pub peer: Option<&'a Peer>,
}

/// What an epoch's steps add up to.
pub(crate) struct EpochTotals {
    /// The step metrics summed over the epoch.
    pub meter: Meter,
    /// Controller updates in the epoch.
    pub controller_updates: usize,
    /// Steps in the epoch.
    pub batches: usize,
    /// Seconds this peer spent exchanging with the others (data-parallel runs).
    pub exchange_seconds: Option<f64>,
    /// Steps whose update was skipped for non-finite gradients.
    pub skipped_steps: usize,
}

impl<B: AutodiffBackend> EpochLoop<'_, B> {
    /// Trains epoch `epoch` (from 0): every batch through [`Learner::step`], a metrics line
    /// every `log_every` steps. A non-finite loss ends the run before anything of the epoch
    /// is saved.
    pub fn train_epoch(
        &self,
        epoch: usize,
        mut learner: Learner<B>,
        state: &mut RunState,
        run: &mut Run,
        mut extra: Option<&mut ExtraStream>,
    ) -> Result<(Learner<B>, EpochTotals), TrainError> {
        let config = self.config;
        B::seed(self.device, mix(config.seed, epoch as u64 + 1));
        let train = &self.data.dataset.train;
        let (rank, count) = self.peer.map_or((0, 1), |p| (p.rank, p.count));
        let loader = BatchLoader::shard(train, &self.data.train_loader, epoch as u64, rank, count);
        let batches = steps_per_epoch(config, train.len(), loader.num_batches());
        let bar = self.progress_bar(epoch, batches);
        let mut meter = Meter::default();
        let mut sums = DeviceSums::<B::InnerBackend>::new(state.global_step);
        let mut controller_updates = 0usize;
        let mut skipped_steps = 0usize;
        let ctx = StepContext {
            config,
            device: self.device,
            peer: self.peer,
        };
        for (i, batch) in loader.take(batches).enumerate() {
            let at = StepPosition {
                epoch,
                index: i,
                global: state.global_step,
                lr: self.schedule.at_step(epoch, i, batches),
            };
            let batch = self.step_batch(batch?, extra.as_deref_mut())?;
            let (next, report) = learner.step(&ctx, batch, at)?;
            learner = next;
            if report.skipped {
                skipped_steps += 1;
                bar.println(format!(
                    "step {}: non-finite gradients, update skipped",
                    state.global_step + 1
                ));
            } else {
                sums.add(report.values, report.images);
            }
            controller_updates += usize::from(report.controller_updated);
            state.global_step += 1;
            bar.inc(1);
            if state.global_step.is_multiple_of(config.log_every) {
                let window = self.read_interval(&mut sums, &mut meter, state, epoch)?;
                bar.set_message(format!(
                    "ce {:.3} kl {:.3} {:.0} img/s",
                    meter.ce / meter.steps as f64,
                    meter.kl / meter.steps as f64,
                    meter.images as f64 / meter.seconds
                ));
                let line = step_line(
                    epoch,
                    state.global_step,
                    at.lr,
                    &window,
                    report.masked,
                    &learner.search,
                );
                run.log(line)?;
            }
        }
        bar.finish_and_clear();
        self.read_interval(&mut sums, &mut meter, state, epoch)?;
        let totals = EpochTotals {
            meter,
            controller_updates,
            skipped_steps,
            batches,
            exchange_seconds: None,
        };
        Ok((learner, totals))
    }

    /// Ends epoch `epoch`: checks that the peers agree, scores the network, logs the epoch
    /// line, keeps the best model and writes the checkpoint. In data-parallel runs every
    /// peer first takes peer 0's batch-norm running statistics, as DDP keeps rank 0's
    /// buffers, so that a resumed run continues as the uninterrupted one; the first peer of
    /// every other node writes its node's checkpoint before node 0 writes the run's, so
    /// every node holds a checkpoint of the epoch node 0 resumes after.
    pub fn finish_epoch(
        &self,
        epoch: usize,
        learner: &mut Learner<B>,
        totals: &mut EpochTotals,
        state: &mut RunState,
        run: &mut Run,
    ) -> Result<(), TrainError> {
        if let Some(peer) = self.peer {
            peer.check_in_sync(epoch + 1, learner, self.device)?;
            totals.exchange_seconds = Some(peer.take_exchange_seconds());
        }
        state.epochs_done = epoch + 1;
        if run.writes() {
            self.score_and_keep_best(epoch, learner, totals, state, run)?;
        }
        if let Some(peer) = self.peer {
            learner.model = peer.take_statistics_from_first(learner.model.clone())?;
            if !run.writes() {
                run.save_checkpoint(state, learner)?;
            }
            peer.barrier::<B::InnerBackend>(self.device)?;
        }
        if run.writes() {
            run.save_checkpoint(state, learner)?;
        }
        Ok(())
    }

    fn score_and_keep_best(
        &self,
        epoch: usize,
        learner: &Learner<B>,
        totals: &EpochTotals,
        state: &mut RunState,
        run: &mut Run,
    ) -> Result<(), TrainError> {
        let config = self.config;
        let scores = score_epoch(config, &learner.model, self.data, self.device)?;
        state.last_test_acc = scores.test_acc;
        // The rate the next epoch's first step trains with (one warm-up formula for both).
        let lr = self.schedule.at_step(epoch + 1, 0, totals.batches);
        run.log(epoch_line(
            epoch,
            state.global_step,
            lr,
            totals,
            &scores,
            config,
            &learner.search,
        ))?;
        if self.progress {
            eprintln!(
                "epoch {}/{}: test accuracy {:.2}%",
                epoch + 1,
                config.epochs,
                scores.test_acc
            );
        }
        let selection = scores.selection();
        if state.best_selection.is_none_or(|best| selection > best) {
            state.best_selection = Some(selection);
            state.best_test_acc = scores.test_acc;
            state.best_epoch = epoch + 1;
            run.save_best(&learner.model)?;
        }
        Ok(())
    }

    /// The device batch of a step: the loader's images (this peer's part), with the extra
    /// stream's pseudo-labelled images appended where the run mixes them in.
    fn step_batch(
        &self,
        batch: HostBatch,
        extra: Option<&mut ExtraStream>,
    ) -> Result<StepBatch<B>, TrainError> {
        let views = batch.views;
        // The loader built this peer's part of the batch; the extra stream's is cut here.
        let (mut x, mut y) = to_tensors::<B>(&batch, self.device);
        if let Some(stream) = extra {
            let extra = match self.peer {
                Some(peer) => stream.next_batch()?.shard(peer.rank, peer.count),
                None => stream.next_batch()?,
            };
            let (xe, ye) = to_tensors::<B>(&extra, self.device);
            x = Tensor::cat(vec![x, xe], 0);
            y = Tensor::cat(vec![y, ye], 0);
        }
        Ok(StepBatch {
            x,
            y,
            x_adv: None,
            views,
        })
    }

    fn progress_bar(&self, epoch: usize, batches: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.config.epochs));
        bar
    }

    /// Reads the device sums of the interval that ends at the current step into the epoch's
    /// meter and returns the interval; a non-finite loss is an error naming the epoch, the
    /// steps and the last saved epoch.
    fn read_interval(
        &self,
        sums: &mut DeviceSums<B::InnerBackend>,
        meter: &mut Meter,
        state: &RunState,
        epoch: usize,
    ) -> Result<Meter, TrainError> {
        let step = state.global_step;
        let (window, loss, first_step) = sums.read(step, self.peer)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                value: loss,
                epoch: epoch + 1,
                first_step: first_step + 1,
                step,
                last_good: state.epochs_done,
            });
        }
        meter.add(&window);
        Ok(window)
    }
}
