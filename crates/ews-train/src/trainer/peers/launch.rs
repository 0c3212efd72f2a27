//! The peers of this process: one thread per device, started alike, the first error kept.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use burn::collective;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceId};

use super::{Peer, PeerGroup};
use crate::TrainError;
use crate::config::TrainConfig;
use crate::trainer::inputs::TrainingData;
use crate::trainer::run::{Run, RunState, Summary};
use crate::trainer::step::Learner;
use crate::trainer::{TrainOptions, train_peer};

/// Trains with `config.devices` peers on threads of this process, one per device (for
/// CPU backends all share the CPU), with the peers of `config.nodes - 1` other processes
/// where `options.node` links this one to them. The run's peer 0 writes the run's files (the
/// first peer of every other node keeps a checkpoint of its own); the error of the first
/// peer that failed is returned, after the others of this process have stopped.
pub(crate) fn train_data_parallel<B: AutodiffBackend>(
    config: &TrainConfig,
    run: Run,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<Summary, TrainError> {
    let count = config.devices;
    collective::reset_collective::<B::InnerBackend>();
    let group = PeerGroup::new(count, config.nodes, options.node.clone());
    let start = PeerStart::default();
    let readers: Vec<Run> = (1..count).map(|_| run.reader()).collect();
    let runs = std::iter::once(run).chain(readers);
    let results: Vec<Result<Summary, TrainError>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .zip(peer_devices::<B>(device, count))
            .enumerate()
            .map(|(rank, (run, device))| {
                let (group, start) = (&group, &start);
                let peer = group.peer(rank);
                s.spawn(move || {
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        train_peer::<B>(config, run, options, &device, Some((&peer, start)))
                    }))
                    .unwrap_or_else(|panic| {
                        Err(peer.error(format!("panicked: {}", panic_text(&panic))))
                    });
                    if result.is_err() {
                        group.fail();
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("peer panics are caught"))
            .collect()
    });
    // The error that made the peers stop: the first that is not a peer noticing another's.
    let mut summary = None;
    let mut stopped = None;
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Ok(s) if rank == 0 => summary = Some(s),
            Ok(_) => {}
            Err(e @ TrainError::PeerStopped { .. }) => {
                stopped.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match (summary, stopped) {
        (Some(summary), None) => Ok(summary),
        (_, Some(e)) => Err(e),
        (None, None) => unreachable!("peer 0 returned a summary or an error"),
    }
}

/// What makes the peers of a process start alike: each builds its learner from the run's
/// seed while no other peer draws from burn's process-wide generator, so all start equal
/// (controllers included), each with batch-norm running statistics of its own (a clone
/// would share them: burn's `RunningState` averages the updates of every thread that holds
/// it). Peer 0's network is then handed to every peer, on other nodes too.
#[derive(Default)]
pub(crate) struct PeerStart {
    drawing: Mutex<()>,
}

impl PeerStart {
    /// A peer's learner, seeded and initialised while no other peer of the process draws.
    pub fn learner<B: AutodiffBackend>(
        &self,
        config: &TrainConfig,
        dataset: &ews_data::Dataset,
        device: &B::Device,
    ) -> Result<Learner<B>, TrainError> {
        let _drawing = self.drawing.lock().unwrap_or_else(|e| e.into_inner());
        let learner = Learner::<B>::new(config, dataset, device)?;
        learner.materialize();
        Ok(learner)
    }
}

/// A peer's learner and counters at the start of its run: built alike on every peer of
/// the process, registered with the others, resumed from the checkpoint of the epoch node 0
/// resumes after (on other nodes, from their own), then given peer 0's network and checked.
pub(crate) fn start_peer<B: AutodiffBackend>(
    config: &TrainConfig,
    run: &mut Run,
    data: &TrainingData,
    device: &B::Device,
    peer: &Peer,
    start: &PeerStart,
) -> Result<(Learner<B>, RunState), TrainError> {
    let learner = start.learner::<B>(config, &data.dataset, device)?;
    peer.register::<B::InnerBackend>(device)?;
    let (mut learner, state) = if run.node() == 0 {
        let (learner, state) = run.start(config, learner, device)?;
        peer.first_values::<B::InnerBackend>(&[state.epochs_done as f64], device)?;
        (learner, state)
    } else {
        let epoch = peer.first_values::<B::InnerBackend>(&[0.0], device)?[0];
        run.resume_after(epoch as usize)?;
        run.start(config, learner, device)?
    };
    learner.model = peer.take_from_first(learner.model)?;
    peer.check_in_sync(state.epochs_done, &learner, device)?;
    peer.take_exchange_seconds();
    Ok((learner, state))
}

/// Device `rank` of a data-parallel run: `first`'s index plus `rank` (CPU backends have a
/// single device, which every peer shares).
fn peer_devices<B: Backend>(first: &B::Device, count: usize) -> Vec<B::Device> {
    let id = first.to_id();
    (0..count)
        .map(|rank| B::Device::from_id(DeviceId::new(id.type_id, id.index_id + rank as u16)))
        .collect()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
