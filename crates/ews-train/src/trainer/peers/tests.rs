use super::super::objective::StepBatch;
use super::super::search::Searcher;
use super::super::step::{StepContext, StepPosition};
use super::*;
use crate::config::TrainConfig;
use burn::backend::Flex;
use ews_models::persist::{load_record_bytes, record_bytes};
use std::time::{Duration, Instant};

/// burn-collective keeps one server per backend type and process: tests that register
/// peers take turns.
static COLLECTIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn two_peers_sum_and_average() {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    collective::reset_collective::<Flex>();
    let group = PeerGroup::new(2, 1, None);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let peer = group.peer(rank);
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
    let group = PeerGroup::new(2, 1, None);
    // Peer 1 of 2 never registers: peer 0 must give up at its deadline.
    let peer = group.peer(0).with_timeout(Duration::from_millis(500));
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
    let group = PeerGroup::new(2, 1, None);
    let peer = group.peer(0);
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
    learner.model = load_record_bytes(learner.model, bytes, source, &Default::default()).unwrap();
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
    let group = PeerGroup::new(2, 1, None);
    let learners: Vec<_> = (0..2).map(|_| replica(config, start)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = learners
            .into_iter()
            .zip(shards)
            .enumerate()
            .map(|(rank, (learner, shard))| {
                let peer = group.peer(rank);
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
    let group = PeerGroup::new(2, 1, None);
    let errors: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = [first, second]
            .into_iter()
            .enumerate()
            .map(|(rank, learner)| {
                let peer = group.peer(rank);
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

#[test]
fn peers_with_parameter_ids_of_their_own_take_peer_0s_network_and_train_alike() {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    collective::reset_collective::<Flex>();
    let config = tiny();
    // Two networks built apart, as in two processes: other weights and other random ids
    // (the controllers start equal, from the run's seed).
    let first = Learner::<AB>::new(&config, &dataset(), &Default::default()).unwrap();
    first.materialize();
    let mut second = replica(&config, &first);
    let other = TrainConfig { seed: 7, ..tiny() };
    second.model = Learner::<AB>::new(&other, &dataset(), &Default::default())
        .unwrap()
        .model;
    second.materialize();
    let (solo, _) = three_steps(
        &config,
        replica(&config, &first),
        &{
            let a = images(1, 8);
            (
                Tensor::cat(vec![a.0.clone(), a.0], 0),
                Tensor::cat(vec![a.1.clone(), a.1], 0),
            )
        },
        None,
    );
    let (a, b) = (images(1, 8), images(2, 8));
    let group = PeerGroup::new(2, 1, None);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = [first, second]
            .into_iter()
            .zip([(&a, &a), (&a, &b)])
            .enumerate()
            .map(|(rank, (mut learner, (same, own)))| {
                let (peer, config) = (group.peer(rank), &config);
                s.spawn(move || {
                    peer.register::<Flex>(&Default::default()).unwrap();
                    learner.model = peer.take_from_first(learner.model).unwrap();
                    let start = fingerprint(&learner);
                    // Equal shards: both peers train as one process on the doubled batch.
                    let (out, learner) = three_steps(config, learner, same, Some(&peer));
                    // Different shards: the running statistics part until peer 0's are taken.
                    let (_, mut learner) = three_steps(config, learner, own, Some(&peer));
                    let parted = (fingerprint(&learner), all_values(&learner));
                    learner.model = peer.take_statistics_from_first(learner.model).unwrap();
                    peer.finish::<Flex>().unwrap();
                    (start, out, parted, all_values(&learner))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0].0, results[1].0);
    assert_eq!(results[0].1, results[1].1);
    assert!(
        max_gap(&solo, &results[0].1) < 1e-4,
        "{}",
        max_gap(&solo, &results[0].1)
    );
    // Equal in every weight; the running statistics alone differ.
    assert_eq!(results[0].2.0, results[1].2.0);
    assert_ne!(
        results[0].2.1, results[1].2.1,
        "per-peer batch-norm statistics"
    );
    assert_eq!(results[0].3, results[1].3);
}

/// Every float value of the learner's network, running statistics included.
fn all_values(learner: &Learner<AB>) -> Vec<f32> {
    let values = super::tensors::module_values(&learner.model, super::tensors::Tensors::All);
    values.into_data().to_vec::<f32>().unwrap()
}
