//! The training loop (paper Algorithm 1), as parts that a run composes:
//!
//! - [`run`]: the run folder: config, metrics file, checkpoints, best model, resume;
//! - [`inputs`]: dataset, held-out split, pseudo-labelled extra data, loaders;
//! - `search`: the subnet search step (controller update every K steps, proposal);
//! - `objective`: standard / AugMix + JSD / PGD-AT / TRADES, each with the subnet term;
//! - `step`: one training step (attack, search, AWP, objective, optimiser);
//! - `epoch`: the epoch loop, its metrics lines, evaluation and selection at its end;
//! - [`evaluation`]: accuracies and the choice of the best epoch;
//! - `peers`: data-parallel peers (`devices` or `nodes` > 1) exchanging through
//!   burn-collective.

mod epoch;
pub mod evaluation;
pub mod inputs;
mod metrics;
mod objective;
mod peers;
pub mod run;
mod search;
mod step;

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;

pub use evaluation::{evaluate, subnet_accuracy};
pub use inputs::{
    load_dataset, load_eval_dataset, loader_configs, resolve_image_size, steps_per_epoch,
    to_tensors, training_policy,
};
pub use peers::NodeLink;
pub(crate) use run::io_err;
pub use run::{RunFiles, RunWeights, Summary, load_controller, load_run};
pub(crate) use step::sgd;

use crate::TrainError;
use crate::config::TrainConfig;
use epoch::EpochLoop;
use inputs::TrainingData;
use run::Run;
use step::Learner;

/// How a call of [`train`] runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Continue the run in the folder from its checkpoint.
    pub resume: bool,
    /// Show a progress bar with ETA on standard error.
    pub progress: bool,
    /// Stop once this many epochs are done in total, leaving a resumable checkpoint
    /// (training in chunks, e.g. under a job time limit).
    pub stop_after: Option<usize>,
    /// This machine's place in a run over several (`nodes` > 1 in the config).
    pub node: Option<NodeLink>,
}

/// Trains as `config` says, writing into `run_dir`: `config.toml`, `metrics.jsonl`,
/// `checkpoint.ews` (every epoch, atomically), `best_model.mpk` and `summary.json`.
///
/// With `resume`, a run folder holding a checkpoint continues where it stopped (its saved
/// config must equal `config`) and ends as the uninterrupted run would have; without it, a
/// folder that already holds a checkpoint is refused so finished work is never overwritten.
///
/// On a node other than 0 of a run over several machines (`options.node`), the folder gets
/// only `config.toml` and that node's checkpoints (`checkpoint.node-R.epoch-E.ews`, the last
/// two), and the returned summary holds no scores (node 0 evaluates).
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    run_dir: &Path,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<Summary, TrainError> {
    config.validate()?;
    let (config, _) = inputs::resolve_image_size(config, run_dir)?;
    let config = &config;
    let node = match (&options.node, config.nodes) {
        (None, 1) => 0,
        (Some(link), nodes) if nodes > 1 => {
            link.check(nodes)?;
            let limit = peers::timeout_from_env().min(std::time::Duration::from_secs(120));
            link.reach_coordinator(limit)?;
            link.rank
        }
        (None, nodes) => {
            return Err(TrainError::Config(format!(
                "nodes = {nodes}: give this machine's --node-rank, the --coordinator's address and its own --node-address"
            )));
        }
        (Some(_), _) => {
            return Err(TrainError::Config(
                "--node-rank, --coordinator and --node-address need --nodes 2 or more".into(),
            ));
        }
    };
    let run = Run::open(config, run_dir, options.resume, node)?;
    if config.devices > 1 || config.nodes > 1 {
        return peers::train_data_parallel::<B>(config, run, options, device);
    }
    train_peer::<B>(config, run, options, device, None)
}

/// Opens `run_dir` to resume `config` and reads what [`train`] reads before its first step
/// (the saved config, the checkpoint with model, optimiser and controller, the metrics
/// file), without training. Returns the number of finished epochs. The metrics file is cut
/// to the checkpoint's length, as a resume does.
pub fn check_resume<B: AutodiffBackend>(
    config: &TrainConfig,
    run_dir: &Path,
    device: &B::Device,
) -> Result<usize, TrainError> {
    config.validate()?;
    let (config, _) = inputs::resolve_image_size(config, run_dir)?;
    let config = &config;
    let mut run = Run::open(config, run_dir, true, 0)?;
    let data = TrainingData::prepare(config)?;
    let learner = Learner::<B>::new(config, &data.dataset, device)?;
    let (_, state) = run.start(config, learner, device)?;
    Ok(state.epochs_done)
}

/// One process's (or one data-parallel peer's) training: data, learner, epochs, summary.
/// `peer` holds the peer and what makes every peer of the process start alike.
fn train_peer<B: AutodiffBackend>(
    config: &TrainConfig,
    mut run: Run,
    options: &TrainOptions,
    device: &B::Device,
    peer: Option<(&peers::Peer, &peers::PeerStart)>,
) -> Result<Summary, TrainError> {
    let data = TrainingData::prepare(config)?;
    let (mut learner, mut state) = match peer {
        Some((peer, start)) => peers::start_peer(config, &mut run, &data, device, peer, start)?,
        None => {
            let learner = Learner::<B>::new(config, &data.dataset, device)?;
            run.start(config, learner, device)?
        }
    };
    let mut extra = data.extra_stream(state.global_step)?;
    let epochs = EpochLoop {
        config,
        data: &data,
        schedule: config.lr_schedule(),
        progress: options.progress && run.keeps_checkpoint(),
        device,
        peer: peer.map(|(peer, _)| peer),
    };
    let started = Instant::now();
    let mut images_seen = 0usize;
    let last_epoch = options
        .stop_after
        .map_or(config.epochs, |n| n.min(config.epochs));
    for epoch in state.epochs_done..last_epoch {
        let (next, mut totals) =
            epochs.train_epoch(epoch, learner, &mut state, &mut run, extra.as_mut())?;
        learner = next;
        images_seen += totals.meter.images;
        epochs.finish_epoch(epoch, &mut learner, &mut totals, &mut state, &mut run)?;
    }
    if let Some((peer, _)) = peer {
        peer.finish::<B::InnerBackend>()?;
    }

    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        epochs: state.epochs_done,
        final_test_acc: state.last_test_acc,
        best_test_acc: state.best_test_acc,
        best_epoch: state.best_epoch,
        seconds,
        images_per_s: images_seen as f64 / seconds.max(1e-9),
        selected_by: evaluation::selected_by(config).into(),
        best_selection_value: state.best_selection.unwrap_or(state.best_test_acc),
    };
    run.write_summary(&summary)?;
    Ok(summary)
}
