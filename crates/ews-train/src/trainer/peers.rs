//! Data-parallel training: one peer per device, each with its shard of every batch. The
//! peers exchange through burn's collective all-reduce (burn-collective): gradients are
//! averaged before every update (AWP's proxy gradients too), the controller learns from the
//! averaged rewards, so weights and controllers stay identical on every peer; batch norm
//! normalises with each peer's own shard, as PyTorch's DataParallel and DDP do.
//!
//! burn-collective waits without a deadline; every exchange here runs on a helper thread
//! that is abandoned when another peer of the process failed or when no answer comes within
//! `EWS_PEER_TIMEOUT_S` seconds (default 3600), so a dead peer ends the others with an error.

use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, Device, DeviceId};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::run::{Run, Summary};
use super::step::Learner;
use super::{TrainOptions, train_peer};
use crate::TrainError;
use crate::config::TrainConfig;
use ews_models::persist::{load_record_bytes, record_bytes};
use ews_search::WeightNorms;

/// Default seconds a peer waits for the others in one exchange.
const DEFAULT_TIMEOUT_S: u64 = 3600;

/// One peer of a data-parallel run; exchanges run on the backend `B` (an inner, non-autodiff
/// backend: gradients live there).
pub(crate) struct Peer {
    /// This peer's index (0 writes the run's files).
    pub rank: usize,
    /// Peers in the run.
    pub count: usize,
    failed: Arc<AtomicBool>,
    timeout: Duration,
    /// Nanoseconds spent in exchanges (waiting for the other peers included).
    exchanging: AtomicU64,
}

/// What the peers of one process share: the flag a failing peer raises.
#[derive(Clone, Default)]
pub(crate) struct PeerGroup {
    failed: Arc<AtomicBool>,
}

impl PeerGroup {
    /// Peer `rank` of `count`, not yet registered.
    pub fn peer(&self, rank: usize, count: usize) -> Peer {
        Peer {
            rank,
            count,
            failed: self.failed.clone(),
            timeout: timeout_from_env(),
            exchanging: AtomicU64::new(0),
        }
    }

    /// Tells the other peers to stop.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }
}

fn timeout_from_env() -> Duration {
    let seconds = std::env::var("EWS_PEER_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT_S);
    Duration::from_secs(seconds)
}

impl Peer {
    /// Waits for a peer with a shorter deadline (tests).
    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// Seconds spent in exchanges since the last call, waiting for the other peers included.
    pub fn take_exchange_seconds(&self) -> f64 {
        self.exchanging.swap(0, Ordering::Relaxed) as f64 * 1e-9
    }

    /// Joins the collective on `device`; returns once every peer has joined.
    pub fn register<B: Backend>(&self, device: &B::Device) -> Result<(), TrainError> {
        let (id, device) = (self.id(), device.clone());
        let config = CollectiveConfig::default().with_num_devices(self.count);
        self.exchange("joining the other peers", move || {
            collective::register::<B>(id, device, config)
        })
    }

    /// Leaves the collective at the end of the run.
    pub fn finish<B: Backend>(&self) -> Result<(), TrainError> {
        let id = self.id();
        self.exchange("leaving the collective", move || {
            collective::finish_collective::<B>(id)
        })
    }

    /// Returns once every peer has come here.
    pub fn barrier<B: Backend>(&self, device: &B::Device) -> Result<(), TrainError> {
        self.sum_values::<B>(&[0.0], device).map(|_| ())
    }

    /// The mean of every peer's gradients.
    pub fn mean_gradients<B: AutodiffBackend>(
        &self,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        let id = self.id();
        self.exchange("averaging gradients", move || {
            grads.all_reduce::<B::InnerBackend>(id, ReduceOperation::Mean)
        })
    }

    /// The sum of `values` over the peers.
    pub fn sum<B: Backend>(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError> {
        let (id, primitive) = (self.id(), values.into_primitive().tensor());
        let summed = self.exchange("summing metrics", move || {
            collective::all_reduce::<B>(id, primitive, ReduceOperation::Sum)
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// The mean of `values` over the peers (the controller's rewards).
    pub fn mean_values<B: Backend>(
        &self,
        values: &[f64],
        device: &B::Device,
    ) -> Result<Vec<f64>, TrainError> {
        let sum = self.sum_values::<B>(values, device)?;
        Ok(sum.into_iter().map(|v| v / self.count as f64).collect())
    }

    /// The sum of `values` over the peers (exchanged as f32).
    fn sum_values<B: Backend>(
        &self,
        values: &[f64],
        device: &B::Device,
    ) -> Result<Vec<f64>, TrainError> {
        let t = Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device);
        let sum = self.sum(t)?.into_data().convert::<f64>();
        Ok(sum.to_vec::<f64>().expect("f64 values"))
    }

    /// Checks that every peer holds the same weights and controller after `epoch` (1-based;
    /// 0 at the start):
    /// each contributes a fingerprint (a hash of its conv weight norms and controller state)
    /// in its own slot, so the exchange adds each only to zeros and compares exactly.
    pub fn check_in_sync<B: AutodiffBackend>(
        &self,
        epoch: usize,
        learner: &Learner<B>,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let own = fingerprint(learner);
        let mut slots = vec![0.0; 3 * self.count];
        slots[3 * self.rank..3 * self.rank + 3].copy_from_slice(&own);
        let all = self.sum_values::<B::InnerBackend>(&slots, device)?;
        for (rank, other) in all.chunks(3).enumerate() {
            if other != own {
                return Err(self.error(format!(
                    "after epoch {epoch} peer {rank} holds other weights or another controller than peer {}: the peers diverged (a bug: please report it with the run's config)",
                    self.rank
                )));
            }
        }
        Ok(())
    }

    /// Runs a blocking collective call on a helper thread and waits for it, giving up when
    /// another peer failed or the deadline passed (the helper is then left blocked).
    fn exchange<T, F>(&self, what: &str, call: F) -> Result<T, TrainError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, CollectiveError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("ews-peer-{}", self.rank))
            .spawn(move || {
                let _ = tx.send(call());
            })
            .map_err(|e| self.error(format!("{what}: cannot start a thread: {e}")))?;
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(value)) => {
                    let nanos = started.elapsed().as_nanos() as u64;
                    self.exchanging.fetch_add(nanos, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(e)) => return Err(self.error(format!("{what}: {e:?}"))),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.error(format!("{what}: the collective call panicked")));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.failed.load(Ordering::SeqCst) {
                        return Err(TrainError::PeerStopped { rank: self.rank });
                    }
                    if started.elapsed() > self.timeout {
                        return Err(self.error(format!(
                            "{what}: no answer from the other peers within {} s; a peer died or hangs (EWS_PEER_TIMEOUT_S sets the limit)",
                            self.timeout.as_secs()
                        )));
                    }
                }
            }
        }
    }

    /// This peer's error with `message`.
    pub fn error(&self, message: String) -> TrainError {
        TrainError::Peers {
            rank: self.rank,
            message,
        }
    }
}

/// Trains with `config.devices` peers on threads of this process, one per device (for
/// CPU backends all share the CPU). Peer 0 writes the run's files; the error of the first
/// peer that failed is returned, after the others have stopped.
pub(crate) fn train_data_parallel<B: AutodiffBackend>(
    config: &TrainConfig,
    run: Run,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<Summary, TrainError> {
    let count = config.devices;
    collective::reset_collective::<B::InnerBackend>();
    let group = PeerGroup::default();
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
                let peer = group.peer(rank, count);
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

/// A hash of the learner's conv weights (their norms) and controller (its log-probability
/// and entropy of a fixed proposal, and its baseline) as three 21-bit integers, exact in f32.
fn fingerprint<B: AutodiffBackend>(learner: &Learner<B>) -> [f64; 3] {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", WeightNorms::of(&learner.model)).hash(&mut hasher);
    if let Some(controller) = learner.search.controller() {
        // The controller's values, not its state bytes: those hold each peer's own random
        // parameter ids.
        let probe =
            controller.sample(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0));
        let (log_prob, entropy) = controller.log_prob_and_entropy(&probe);
        let values = Tensor::cat(vec![log_prob, entropy], 0).into_data();
        for v in values.convert::<f32>().to_vec::<f32>().expect("f32 values") {
            v.to_bits().hash(&mut hasher);
        }
        controller.baseline.map(f64::to_bits).hash(&mut hasher);
    }
    let hash = hasher.finish();
    [0, 21, 42].map(|shift| ((hash >> shift) & 0x1F_FFFF) as f64)
}

/// What makes the peers of a process start alike: the network of the first peer, which the
/// others load. The copies keep its parameter ids, which the gradient all-reduce pairs
/// parameters by (a network of its own draws new random ids), but hold batch-norm running
/// statistics of their own: a clone would share them (burn's `RunningState` averages the
/// updates of all threads that hold it, in whatever order they come).
#[derive(Default)]
pub(crate) struct PeerStart {
    first: Mutex<Option<Vec<u8>>>,
}

impl PeerStart {
    /// A peer's learner: seeded and initialised while no other peer draws from burn's
    /// process-wide generator (so controllers start equal), with the first peer's network.
    pub fn learner<B: AutodiffBackend>(
        &self,
        config: &TrainConfig,
        dataset: &ews_data::Dataset,
        device: &B::Device,
    ) -> Result<Learner<B>, TrainError> {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        let mut learner = Learner::<B>::new(config, dataset, device)?;
        learner.materialize();
        match first.as_ref() {
            Some(bytes) => {
                let source = std::path::Path::new("<the first peer's network>");
                learner.model = load_record_bytes(learner.model, bytes.clone(), source, device)?;
            }
            None => *first = Some(record_bytes(&learner.model)?),
        }
        Ok(learner)
    }
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

#[cfg(test)]
mod tests {
    use super::super::objective::StepBatch;
    use super::super::search::Searcher;
    use super::super::step::{StepContext, StepPosition};
    use super::*;
    use burn::backend::Flex;

    /// burn-collective keeps one server per backend type and process: tests that register
    /// peers take turns.
    static COLLECTIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn two_peers_sum_and_average() {
        let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
        collective::reset_collective::<Flex>();
        let group = PeerGroup::default();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|rank| {
                    let peer = group.peer(rank, 2);
                    s.spawn(move || {
                        let device = Default::default();
                        peer.register::<Flex>(&device).unwrap();
                        let mean = peer
                            .mean_values::<Flex>(&[rank as f64, 10.0], &device)
                            .unwrap();
                        peer.finish::<Flex>().unwrap();
                        mean
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results, vec![vec![0.5, 10.0], vec![0.5, 10.0]]);
    }

    #[test]
    fn a_peer_that_never_answers_ends_the_wait_with_an_error() {
        let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
        collective::reset_collective::<Flex>();
        let group = PeerGroup::default();
        // Peer 1 of 2 never registers: peer 0 must give up at its deadline.
        let peer = group.peer(0, 2).with_timeout(Duration::from_millis(500));
        let started = Instant::now();
        let err = peer.register::<Flex>(&Default::default()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.to_string().contains("no answer from the other peers"),
            "{err}"
        );
        collective::reset_collective::<Flex>();
    }

    #[test]
    fn a_failed_peer_stops_the_others_at_once() {
        let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
        collective::reset_collective::<Flex>();
        let group = PeerGroup::default();
        let peer = group.peer(0, 2);
        let failing = group.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            failing.fail();
        });
        let started = Instant::now();
        let err = peer.register::<Flex>(&Default::default()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, TrainError::PeerStopped { rank: 0 }), "{err}");
        collective::reset_collective::<Flex>();
    }

    type AB = burn::backend::Autodiff<Flex>;

    fn tiny() -> TrainConfig {
        TrainConfig {
            model: "wrn-10-1".into(),
            image_size: Some(16),
            interval_k: 1,
            subnets_per_update: 2,
            lr: 0.05,
            ..TrainConfig::default()
        }
    }

    fn dataset() -> ews_data::Dataset {
        ews_data::synthetic::generate(ews_data::synthetic::SyntheticConfig {
            train: 8,
            test: 8,
            seed: 0,
        })
    }

    /// A learner with `like`'s weights and controller state and a fresh optimiser.
    fn replica(config: &TrainConfig, like: &Learner<AB>) -> Learner<AB> {
        let mut learner = Learner::<AB>::new(config, &dataset(), &Default::default()).unwrap();
        let bytes = record_bytes(&like.model).unwrap();
        let source = std::path::Path::new("test");
        learner.model =
            load_record_bytes(learner.model, bytes, source, &Default::default()).unwrap();
        if let Some(c) = like.search.controller() {
            let bytes = c.state_bytes().unwrap();
            learner.search.searcher = match learner.search.searcher {
                Searcher::Controller(own) => Searcher::Controller(Box::new(
                    own.load_state_bytes(&bytes, std::path::Path::new("test"))
                        .unwrap(),
                )),
                other => other,
            };
        }
        learner
    }

    fn images(seed: u64, n: usize) -> (Tensor<AB, 4>, Tensor<AB, 1, burn::tensor::Int>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x: Vec<f32> = (0..n * 3 * 16 * 16)
            .map(|_| rng.random_range(0.0..1.0))
            .collect();
        let y: Vec<i64> = (0..n).map(|_| rng.random_range(0..10)).collect();
        let device = Default::default();
        (
            Tensor::from_data(TensorData::new(x, [n, 3, 16, 16]), &device),
            Tensor::from_data(TensorData::new(y, [n]), &device),
        )
    }

    /// Three EWS steps; returns the network's output on a probe batch (batch statistics, so
    /// every weight counts and no running statistic does).
    fn three_steps(
        config: &TrainConfig,
        mut learner: Learner<AB>,
        batch: &(Tensor<AB, 4>, Tensor<AB, 1, burn::tensor::Int>),
        peer: Option<&Peer>,
    ) -> (Vec<f32>, Learner<AB>) {
        let device = Default::default();
        let ctx = StepContext {
            config,
            device: &device,
            peer,
        };
        for step in 0..3 {
            let at = StepPosition {
                epoch: 0,
                index: step,
                global: step,
                lr: config.lr,
            };
            let batch = StepBatch {
                x: batch.0.clone(),
                y: batch.1.clone(),
                x_adv: None,
                views: 1,
            };
            learner = learner.step(&ctx, batch, at).unwrap().0;
        }
        let probe = images(99, 4).0;
        let out = learner.model.forward(probe, ews_models::BnMode::BatchStats);
        (out.into_data().to_vec::<f32>().unwrap(), learner)
    }

    fn max_gap(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// Runs 2 peers on `shards` from copies of `start`; returns peer outputs and learners.
    fn two_peers(
        config: &TrainConfig,
        start: &Learner<AB>,
        shards: [&(Tensor<AB, 4>, Tensor<AB, 1, burn::tensor::Int>); 2],
    ) -> Vec<(Vec<f32>, Learner<AB>)> {
        collective::reset_collective::<Flex>();
        let group = PeerGroup::default();
        let learners: Vec<_> = (0..2).map(|_| replica(config, start)).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = learners
                .into_iter()
                .zip(shards)
                .enumerate()
                .map(|(rank, (learner, shard))| {
                    let peer = group.peer(rank, 2);
                    s.spawn(move || {
                        peer.register::<Flex>(&Default::default()).unwrap();
                        let out = three_steps(config, learner, shard, Some(&peer));
                        peer.finish::<Flex>().unwrap();
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn two_peers_train_as_one_on_the_doubled_batch_up_to_batch_norm() {
        let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
        let config = tiny();
        let start = Learner::<AB>::new(&config, &dataset(), &Default::default()).unwrap();
        start.materialize();
        let (a, b) = (images(1, 8), images(2, 8));
        type Batch = (Tensor<AB, 4>, Tensor<AB, 1, burn::tensor::Int>);
        let cat = |p: &Batch, q: &Batch| -> Batch {
            (
                Tensor::cat(vec![p.0.clone(), q.0.clone()], 0),
                Tensor::cat(vec![p.1.clone(), q.1.clone()], 0),
            )
        };
        // Equal shards: the batch statistics of each peer are those of the doubled batch, so
        // the runs agree up to rounding.
        let (solo, _) = three_steps(&config, replica(&config, &start), &cat(&a, &a), None);
        let peers = two_peers(&config, &start, [&a, &a]);
        assert!(
            max_gap(&solo, &peers[0].0) < 1e-4,
            "{}",
            max_gap(&solo, &peers[0].0)
        );
        // The peers hold bit-identical weights and controllers.
        assert_eq!(peers[0].0, peers[1].0);
        assert_eq!(fingerprint(&peers[0].1), fingerprint(&peers[1].1));
        assert_ne!(fingerprint(&peers[0].1), fingerprint(&start));
        // Different shards: batch norm normalises each peer's shard on its own (as DDP), and
        // the result differs from one process on the whole batch.
        let (solo, _) = three_steps(&config, replica(&config, &start), &cat(&a, &b), None);
        let peers = two_peers(&config, &start, [&a, &b]);
        assert_eq!(peers[0].0, peers[1].0);
        let gap = max_gap(&solo, &peers[0].0);
        assert!(gap > 1e-3, "per-peer batch norm should show: gap {gap}");
    }

    #[test]
    fn peers_that_diverged_are_caught() {
        let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
        collective::reset_collective::<Flex>();
        let config = tiny();
        let first = Learner::<AB>::new(&config, &dataset(), &Default::default()).unwrap();
        first.materialize();
        let mut second = replica(&config, &first);
        second.model = Learner::<AB>::new(
            &TrainConfig { seed: 7, ..tiny() },
            &dataset(),
            &Default::default(),
        )
        .unwrap()
        .model;
        let group = PeerGroup::default();
        let errors: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = [first, second]
                .into_iter()
                .enumerate()
                .map(|(rank, learner)| {
                    let peer = group.peer(rank, 2);
                    s.spawn(move || {
                        let device = Default::default();
                        peer.register::<Flex>(&device).unwrap();
                        let result = peer.check_in_sync(1, &learner, &device);
                        peer.finish::<Flex>().unwrap();
                        result
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for e in errors {
            let e = e.unwrap_err().to_string();
            assert!(e.contains("diverged"), "{e}");
        }
    }
}
