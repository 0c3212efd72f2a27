//! Data-parallel training (`devices` > 1) end to end on the CPU: two peers on threads of this
//! process, exchanging through burn-collective.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use ews_train::{Method, TrainConfig, TrainOptions, train};
use serde_json::Value;

type AB = Autodiff<Flex>;

fn two_peers() -> TrainConfig {
    TrainConfig {
        dataset: "synthetic".into(),
        synthetic_size: (64, 24),
        image_size: Some(16),
        model: "wrn-10-1".into(),
        method: Method::Ews,
        epochs: 2,
        batch_size: 16,
        eval_batch_size: 24,
        interval_k: 2,
        log_every: 1,
        lr: 0.05,
        devices: 2,
        ..TrainConfig::default()
    }
}

/// The metrics lines without their timing fields.
fn lines(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let map = v.as_object_mut().unwrap();
            map.remove("images_per_s");
            map.remove("seconds");
            map.remove("exchange_seconds");
            v
        })
        .collect()
}

/// Trains `config` uninterrupted into `dir/full`, and again stopped after one epoch and
/// resumed into `dir/chunked`; checks that both runs end alike and returns their folders.
fn full_and_resumed(config: &TrainConfig, dir: &Path) -> (PathBuf, PathBuf) {
    let device = Default::default();
    let full = dir.join("full");
    let summary = train::<AB>(config, &full, &TrainOptions::default(), &device).unwrap();
    assert_eq!(summary.epochs, config.epochs);
    let chunked = dir.join("chunked");
    let once = TrainOptions {
        stop_after: Some(1),
        ..TrainOptions::default()
    };
    train::<AB>(config, &chunked, &once, &device).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let resumed = train::<AB>(config, &chunked, &resume, &device).unwrap();
    assert_eq!(lines(&chunked), lines(&full));
    assert_eq!(resumed.final_test_acc, summary.final_test_acc);
    (full, chunked)
}

#[test]
fn two_peers_train_write_one_run_and_resume_to_the_same_result() {
    // burn-collective keeps one server per backend type and process, and burn's generator
    // is process-wide: runs take turns.
    let _turn = ews_models::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = two_peers();
    let (full, chunked) = full_and_resumed(&config, dir.path());
    let metrics = lines(&full);
    // 64 images, batch 16: 4 steps per epoch, one line each, and an epoch line; the step
    // lines count the images of both peers.
    let steps: Vec<_> = metrics.iter().filter(|m| m["type"] == "step").collect();
    assert_eq!(steps.len(), 8);
    for line in &metrics {
        for key in ["train_ce", "kl", "subnet_acc", "controller_reward"] {
            assert!(line[key].as_f64().unwrap().is_finite(), "{key} in {line}");
        }
    }
    let epoch = metrics.iter().find(|m| m["type"] == "epoch").unwrap();
    assert_eq!(epoch["controller_updates"], 2);
    let full_lines = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    assert!(full_lines.contains("exchange_seconds"), "{full_lines}");
    let config_toml = std::fs::read_to_string(full.join("config.toml")).unwrap();
    assert!(config_toml.contains("devices = 2"), "{config_toml}");

    // Another number of peers is another run: refused on resume.
    let one = TrainConfig {
        devices: 1,
        ..config.clone()
    };
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let err = train::<AB>(&one, &chunked, &resume, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("devices (saved 2, given 1)"), "{err}");
}

/// TRADES attacks with batch norm in eval mode, so every peer's running statistics matter:
/// each epoch ends with all peers on peer 0's, and a resumed run matches the uninterrupted one.
#[test]
fn trades_on_two_peers_resumes_to_the_same_result() {
    // burn-collective keeps one server per backend type and process, and burn's generator
    // is process-wide: runs take turns.
    let _turn = ews_models::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        adversarial: ews_train::Adversarial::Trades,
        attack_steps: 1,
        lambda: 0.1,
        ..two_peers()
    };
    full_and_resumed(&config, dir.path());
}

#[test]
fn a_batch_that_does_not_split_evenly_is_refused_before_training() {
    let config = TrainConfig {
        batch_size: 18,
        devices: 4,
        ..two_peers()
    };
    let dir = tempfile::tempdir().unwrap();
    let err = train::<AB>(
        &config,
        dir.path(),
        &TrainOptions::default(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("devices") && err.contains("18"), "{err}");
}
