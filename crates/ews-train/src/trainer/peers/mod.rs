//! Data-parallel training: one peer per device, each with its shard of every batch, on one
//! machine or on several (nodes, joined by `ews coordinator`). The peers exchange through
//! burn's collective all-reduce (burn-collective): gradients are averaged before every update
//! (AWP's proxy gradients too), the controller learns from the averaged rewards, so weights
//! and controllers stay identical on every peer; batch norm normalises with each peer's own
//! shard, as PyTorch's DataParallel and DDP do, and every epoch ends with all peers on peer
//! 0's running statistics.
//!
//! burn-collective waits without a deadline; every exchange here runs on a helper thread
//! that is abandoned when another peer of the process failed or when no answer comes within
//! `EWS_PEER_TIMEOUT_S` seconds (default 3600), so a dead peer ends the others with an error.

mod launch;
mod node;
mod tensors;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::step::Learner;
use crate::TrainError;

pub(crate) use launch::{PeerStart, start_peer, train_data_parallel};
pub use node::NodeLink;

/// Default seconds a peer waits for the others in one exchange.
const DEFAULT_TIMEOUT_S: u64 = 3600;

/// One peer of a data-parallel run; exchanges run on the backend `B` (an inner, non-autodiff
/// backend: gradients live there).
pub(crate) struct Peer {
    /// This peer's index among all peers of the run, on every node (0 writes the run's files).
    pub rank: usize,
    /// Peers in the run, on every node.
    pub count: usize,
    /// Peers in this process.
    local_count: usize,
    /// The other machines of a run over several nodes.
    cluster: Option<Cluster>,
    failed: Arc<AtomicBool>,
    timeout: Duration,
    /// Nanoseconds spent in exchanges (waiting for the other peers included).
    exchanging: AtomicU64,
}

/// A run over several machines: how many, and this one's link to the others.
#[derive(Clone, Debug)]
struct Cluster {
    nodes: usize,
    link: NodeLink,
}

/// What the peers of one process share: their number, the node they run on and the flag a
/// failing peer raises.
#[derive(Clone)]
pub(crate) struct PeerGroup {
    local_count: usize,
    cluster: Option<Cluster>,
    failed: Arc<AtomicBool>,
}

impl PeerGroup {
    /// The `local_count` peers of this process; with `link`, those of node `link.rank` of
    /// `nodes`.
    pub fn new(local_count: usize, nodes: usize, link: Option<NodeLink>) -> Self {
        Self {
            local_count,
            cluster: link.map(|link| Cluster { nodes, link }),
            failed: Arc::default(),
        }
    }

    /// This process's peer `local` (from 0), not yet registered.
    pub fn peer(&self, local: usize) -> Peer {
        let (node, nodes) = self
            .cluster
            .as_ref()
            .map_or((0, 1), |c| (c.link.rank, c.nodes));
        Peer {
            rank: node * self.local_count + local,
            count: nodes * self.local_count,
            local_count: self.local_count,
            cluster: self.cluster.clone(),
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

/// How long a peer waits for the others in one exchange: `EWS_PEER_TIMEOUT_S` seconds.
pub(crate) fn timeout_from_env() -> Duration {
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

    /// Joins the collective on `device` (and, on several nodes, the coordinator); returns
    /// once every peer has joined.
    pub fn register<B: Backend>(&self, device: &B::Device) -> Result<(), TrainError> {
        let (id, device) = (self.id(), device.clone());
        let mut config = CollectiveConfig::default().with_num_devices(self.local_count);
        if let Some(cluster) = &self.cluster {
            config = cluster.link.configure(config, cluster.nodes);
        }
        let what = match &self.cluster {
            Some(c) => format!(
                "joining the other peers through the coordinator at {}",
                c.link.coordinator
            ),
            None => "joining the other peers".into(),
        };
        self.exchange(&what, move || collective::register::<B>(id, device, config))
    }

    /// Leaves the collective at the end of the run.
    pub fn finish<B: Backend>(&self) -> Result<(), TrainError> {
        let id = self.id();
        self.exchange("leaving the collective", move || {
            collective::finish_collective::<B>(id)
        })
    }

    /// The sum of `values` over the peers.
    pub fn sum<B: Backend>(&self, values: Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError> {
        self.all_reduce(values, ReduceOperation::Sum, "summing metrics")
    }

    /// `values` all-reduced over the peers with `op`.
    fn all_reduce<B: Backend>(
        &self,
        values: Tensor<B, 1>,
        op: ReduceOperation,
        what: &str,
    ) -> Result<Tensor<B, 1>, TrainError> {
        // burn-collective's ring between nodes splits a tensor into one slice per node and
        // fails on a shorter one (and its caller then waits forever): pad with zeros.
        let len = values.dims()[0];
        let values = match len < self.count {
            true => {
                let zeros = Tensor::zeros([self.count - len], &values.device());
                Tensor::cat(vec![values, zeros], 0)
            }
            false => values,
        };
        let (id, primitive) = (self.id(), values.into_primitive().tensor());
        let reduced =
            self.exchange(what, move || collective::all_reduce::<B>(id, primitive, op))?;
        let reduced: Tensor<B, 1> = Tensor::from_primitive(TensorPrimitive::Float(reduced));
        Ok(reduced.slice(0..len))
    }

    /// Returns once every peer has come here.
    pub fn barrier<B: Backend>(&self, device: &B::Device) -> Result<(), TrainError> {
        self.sum_values::<B>(&[0.0], device).map(|_| ())
    }

    /// Peer 0's `values` (small integers, exact in f32), on every peer.
    pub fn first_values<B: Backend>(
        &self,
        values: &[f64],
        device: &B::Device,
    ) -> Result<Vec<f64>, TrainError> {
        let own = match self.rank {
            0 => values.to_vec(),
            _ => vec![0.0; values.len()],
        };
        self.sum_values::<B>(&own, device)
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
    /// each contributes a fingerprint (a hash of every trained weight and of the controller)
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
                    "{} peer {rank} holds other weights or another controller than peer {}: the peers diverged (a bug: please report it with the run's config)",
                    match epoch {
                        0 => "at the start".to_string(),
                        n => format!("after epoch {n}"),
                    },
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
                Ok(Err(CollectiveError::LocalServerMissing)) => {
                    return Err(self.error(format!(
                        "{what}: the exchange broke down; a peer died or lost its connection"
                    )));
                }
                Ok(Err(e)) => return Err(self.error(format!("{what}: {e:?}"))),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.error(format!(
                        "{what}: the exchange broke down (it panicked); a peer died or lost its connection"
                    )));
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

/// A hash of the learner's network (every trained weight, bit for bit; batch-norm running
/// statistics are each peer's own until an epoch's end) and
/// controller (its log-probability and entropy of a fixed proposal, and its baseline) as
/// three 21-bit integers, exact in f32.
fn fingerprint<B: AutodiffBackend>(learner: &Learner<B>) -> [f64; 3] {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let network = tensors::module_values(&learner.model, tensors::Tensors::Trained).into_data();
    for v in network
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 values")
    {
        v.to_bits().hash(&mut hasher);
    }
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

#[cfg(test)]
mod tests;
