//! End-to-end training on generated data with the CPU backend.

use burn::backend::{Autodiff, Flex};
use ews_data::Views;
use ews_train::config::AugmentKind;
use ews_train::trainer::{check_resume, loader_configs};
use ews_train::{Method, SearcherKind, TrainConfig, TrainOptions, train};

type AB = Autodiff<Flex>;

/// Training runs seed burn's backend-global random generator (weight init, dropout), so
/// runs in parallel test threads would disturb each other's reproducibility.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    ews_models::rng_lock()
}

fn tiny(method: Method) -> TrainConfig {
    TrainConfig {
        dataset: "synthetic".into(),
        synthetic_size: (96, 40),
        image_size: Some(16),
        model: "wrn-10-1".into(),
        method,
        epochs: 2,
        batch_size: 16,
        eval_batch_size: 20,
        interval_k: 2,
        log_every: 1,
        workers: 2,
        lr: 0.05,
        ..TrainConfig::default()
    }
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ews_training_writes_metrics_checkpoints_and_resumes_to_the_same_result() {
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(Method::Ews);

    let full = dir.path().join("full");
    let summary = train::<AB>(&config, &full, &TrainOptions::default(), &d).unwrap();
    assert_eq!(summary.epochs, 2);
    for file in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint.ews",
        "best_model.mpk",
        "summary.json",
    ] {
        assert!(full.join(file).is_file(), "{file} missing");
    }
    let metrics = lines(&full.join("metrics.jsonl"));
    let steps: Vec<_> = metrics.iter().filter(|m| m["type"] == "step").collect();
    let epochs: Vec<_> = metrics.iter().filter(|m| m["type"] == "epoch").collect();
    assert_eq!((steps.len(), epochs.len()), (2 * 6, 2));
    for m in &steps {
        for field in [
            "train_ce",
            "kl",
            "lr",
            "controller_reward",
            "baseline",
            "subnet_acc",
            "images_per_s",
        ] {
            assert!(m.get(field).is_some(), "step line lacks {field}: {m}");
        }
    }
    assert!(
        steps.iter().all(|m| m["kl"].as_f64().unwrap() > 0.0),
        "the KL term must be non-zero: masks applied"
    );
    assert!(steps[0]["controller_reward"].as_f64().unwrap() <= 0.0);
    assert!(epochs[1]["test_acc"].as_f64().is_some());

    // A second run in the same folder is refused without --resume.
    let err = train::<AB>(&config, &full, &TrainOptions::default(), &d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");

    // Killed after one epoch, then resumed: the same end as the uninterrupted run.
    let split = dir.path().join("split");
    let first = TrainOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    train::<AB>(&config, &split, &first, &d).unwrap();
    // Simulate the lines a killed process wrote after its last checkpoint.
    std::fs::OpenOptions::new()
        .append(true)
        .open(split.join("metrics.jsonl"))
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, b"{\"type\":\"step\",\"stale\":true}\n")
        })
        .unwrap();
    let resumed = train::<AB>(
        &config,
        &split,
        &TrainOptions {
            resume: true,
            ..Default::default()
        },
        &d,
    )
    .unwrap();
    assert_eq!(resumed.final_test_acc, summary.final_test_acc);
    let a = lines(&full.join("metrics.jsonl"));
    let b = lines(&split.join("metrics.jsonl"));
    assert_eq!(a.len(), b.len(), "stale lines are dropped on resume");
    for (x, y) in a.iter().zip(&b) {
        for field in ["train_ce", "kl", "controller_reward", "test_acc"] {
            assert_eq!(
                x.get(field),
                y.get(field),
                "{field} differs after resume:\n{x}\n{y}"
            );
        }
    }
    let ckpt_a = std::fs::read(full.join("checkpoint.ews")).unwrap();
    let ckpt_b = std::fs::read(split.join("checkpoint.ews")).unwrap();
    assert_eq!(ckpt_a.len(), ckpt_b.len());

    // Resuming with changed settings is refused.
    let changed = TrainConfig {
        lambda: 0.5,
        ..config.clone()
    };
    let err = train::<AB>(
        &changed,
        &split,
        &TrainOptions {
            resume: true,
            ..Default::default()
        },
        &d,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config differs") && err.contains("lambda (saved 1.0, given 0.5)"),
        "{err}"
    );
}

#[test]
fn vanilla_dropout_and_baseline_searchers_train() {
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [
        (
            "vanilla",
            TrainConfig {
                epochs: 1,
                ..tiny(Method::Vanilla)
            },
        ),
        (
            "dropout",
            TrainConfig {
                epochs: 1,
                dropout: 0.2,
                ..tiny(Method::Dropout)
            },
        ),
        (
            "random",
            TrainConfig {
                epochs: 1,
                searcher: SearcherKind::Random,
                rho: 0.5,
                ..tiny(Method::Ews)
            },
        ),
        (
            "l1",
            TrainConfig {
                epochs: 1,
                searcher: SearcherKind::L1Norm,
                ..tiny(Method::Ews)
            },
        ),
    ] {
        let run = dir.path().join(name);
        let s = train::<AB>(&config, &run, &TrainOptions::default(), &d).unwrap();
        assert_eq!(s.epochs, 1, "{name}");
        let metrics = lines(&run.join("metrics.jsonl"));
        let has_kl = metrics[0].get("kl").is_some();
        assert_eq!(has_kl, config.method == Method::Ews, "{name}");
        assert!(
            metrics[0].get("controller_reward").is_none(),
            "{name}: no controller"
        );
    }
}

#[test]
fn ews_with_augmix_jsd_and_autoaugment_train_end_to_end() {
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let augmix = TrainConfig {
        epochs: 1,
        aug: AugmentKind::AugMix,
        ..tiny(Method::Ews)
    };
    let run = dir.path().join("augmix");
    let s = train::<AB>(&augmix, &run, &TrainOptions::default(), &d).unwrap();
    assert_eq!(s.epochs, 1);
    let metrics = lines(&run.join("metrics.jsonl"));
    for line in &metrics {
        for key in ["train_ce", "jsd", "kl", "controller_reward"] {
            let v = line[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} in {line}"));
            assert!(v.is_finite(), "{key} = {v}");
        }
        assert!(line["jsd"].as_f64().unwrap() > 0.0, "AugMix views disagree");
    }
    // The three views triple the images per step but not the examples counted.
    let (train_loader, _) = loader_configs(&augmix);
    assert_eq!(train_loader.views, Views::CleanAndTwoAugmented);

    for (name, config) in [
        (
            "autoaugment",
            TrainConfig {
                epochs: 1,
                aug: AugmentKind::AutoAugment,
                ..tiny(Method::Ews)
            },
        ),
        (
            "augmix-no-jsd",
            TrainConfig {
                epochs: 1,
                aug: AugmentKind::AugMix,
                jsd: false,
                ..tiny(Method::Vanilla)
            },
        ),
    ] {
        let run = dir.path().join(name);
        train::<AB>(&config, &run, &TrainOptions::default(), &d).unwrap();
        let metrics = lines(&run.join("metrics.jsonl"));
        assert!(metrics[0].get("jsd").is_none(), "{name}: no JSD term");
        assert_eq!(loader_configs(&config).0.views, Views::Single, "{name}");
    }
    let bad = TrainConfig {
        augmix_severity: 0,
        aug: AugmentKind::AugMix,
        ..tiny(Method::Ews)
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("augmix"), "{err}");
}

#[test]
fn non_finite_loss_stops_with_a_clear_error() {
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    // Weight decay with lr * decay >> 2 makes the weights grow without bound until they overflow.
    let config = TrainConfig {
        lr: 1e3,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 1e3,
        ..tiny(Method::Vanilla)
    };
    let err = train::<AB>(&config, dir.path(), &TrainOptions::default(), &d)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("loss became") && err.contains("learning rate"),
        "{err}"
    );
}

#[test]
fn the_controller_updates_every_k_steps_of_the_epoch() {
    // 80 images at batch 16: 5 steps per epoch, K = 2. The release counts steps within the
    // epoch (updates at steps 0, 2, 4 of every epoch); a global count would give 3 then 2.
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        synthetic_size: (80, 20),
        ..tiny(Method::Ews)
    };
    train::<AB>(
        &config,
        dir.path(),
        &TrainOptions::default(),
        &Default::default(),
    )
    .unwrap();
    let metrics = lines(&dir.path().join("metrics.jsonl"));
    let updates: Vec<_> = metrics
        .iter()
        .filter(|m| m["type"] == "epoch")
        .map(|m| m["controller_updates"].as_u64().unwrap())
        .collect();
    assert_eq!(updates, [3, 3]);
}

#[test]
fn lambda_and_the_kl_reduction_reach_the_optimised_loss() {
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let one_step = |name: &str, lambda: f64, kl_reduction| {
        let config = TrainConfig {
            epochs: 1,
            synthetic_size: (16, 20),
            lambda,
            kl_reduction,
            ..tiny(Method::Ews)
        };
        let run = dir.path().join(name);
        train::<AB>(&config, &run, &TrainOptions::default(), &d).unwrap();
        let step = lines(&run.join("metrics.jsonl"))
            .into_iter()
            .find(|m| m["type"] == "step")
            .unwrap();
        let weights = std::fs::read(run.join("best_model.mpk")).unwrap();
        let value = |key: &str| step[key].as_f64().unwrap();
        (value("train_loss"), value("train_ce"), value("kl"), weights)
    };
    use ews_train::loss::KlReduction::{BatchMean, Official};
    let (loss, ce, kl, weights) = one_step("lambda-2.5", 2.5, BatchMean);
    assert!(
        kl > 1e-4,
        "the subnet must differ from the full network: kl {kl}"
    );
    assert!(
        (loss - (ce + 2.5 * kl)).abs() < 1e-5 * loss.abs().max(1.0),
        "loss {loss} != ce {ce} + 2.5 * kl {kl}"
    );
    // Same seed, same first step: the release's reduction divides the KL by the 10 classes.
    let (loss_o, ce_o, kl_o, _) = one_step("official", 2.5, Official);
    assert!(
        (ce_o - ce).abs() < 1e-6,
        "same first step: ce {ce} vs {ce_o}"
    );
    assert!(
        (kl_o - kl / 10.0).abs() < 1e-6 * kl.max(1.0),
        "kl {kl} vs {kl_o}"
    );
    assert!((loss_o - (ce_o + 2.5 * kl_o)).abs() < 1e-5 * loss_o.abs().max(1.0));
    // lambda = 0 trains other weights than lambda = 2.5 from the same start.
    let (loss_0, ce_0, _, weights_0) = one_step("lambda-0", 0.0, BatchMean);
    assert!((loss_0 - ce_0).abs() < 1e-6);
    assert_ne!(weights, weights_0, "lambda must change the update");
}

fn adversarial_tiny(kind: ews_train::Adversarial) -> TrainConfig {
    TrainConfig {
        adversarial: kind,
        attack_steps: 2,
        holdout: 16,
        holdout_pgd_steps: 2,
        label_smoothing: 0.1,
        lambda: 0.1,
        rho: 0.9,
        ..tiny(Method::Ews)
    }
}

#[test]
fn pgd_at_with_ews_awp_extra_data_and_early_stopping_runs_end_to_end() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let extra = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ews-data/tests/golden/pseudo_labeled_16px.pickle");
    let config = TrainConfig {
        awp_gamma: 0.01,
        extra_data: Some(extra),
        extra_fraction: 0.25,
        ..adversarial_tiny(ews_train::Adversarial::Pgd)
    };
    let run = dir.path().join("at");
    let summary =
        train::<AB>(&config, &run, &TrainOptions::default(), &Default::default()).unwrap();
    assert_eq!(summary.selected_by, "holdout_robust_acc");
    assert!((0.0..=100.0).contains(&summary.best_selection_value));
    let metrics = lines(&run.join("metrics.jsonl"));
    let epochs: Vec<_> = metrics.iter().filter(|m| m["type"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        let robust = e["holdout_robust_acc"].as_f64().unwrap();
        let clean = e["holdout_acc"].as_f64().unwrap();
        assert!(
            robust <= clean + 1e-9,
            "robust {robust} above clean {clean}"
        );
        assert!(e["kl"].as_f64().unwrap().is_finite());
    }
    // With extra data an epoch is ceil(train images / batch) = ceil((96 - 16) / 16) = 5 steps
    // (Carmon et al.'s sampler), not the 80 / (16 - 4 extra) = 6 batches of a pass over the
    // training images.
    let steps: Vec<_> = metrics.iter().filter(|m| m["type"] == "step").collect();
    assert_eq!(steps.len(), 2 * 5);
    assert!(
        steps
            .iter()
            .all(|s| s["controller_reward"].as_f64().unwrap() <= 0.0)
    );
    // Killed after one epoch and resumed: the same result as the uninterrupted run.
    let chunked = dir.path().join("chunked");
    let once = TrainOptions {
        stop_after: Some(1),
        ..TrainOptions::default()
    };
    train::<AB>(&config, &chunked, &once, &Default::default()).unwrap();
    let resumed = train::<AB>(
        &config,
        &chunked,
        &TrainOptions {
            resume: true,
            ..TrainOptions::default()
        },
        &Default::default(),
    )
    .unwrap();
    assert_eq!(resumed.final_test_acc, summary.final_test_acc);
    assert_eq!(resumed.best_selection_value, summary.best_selection_value);
}

#[test]
fn trades_with_ews_and_awp_runs_end_to_end() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 1,
        awp_gamma: 0.005,
        ..adversarial_tiny(ews_train::Adversarial::Trades)
    };
    let summary = train::<AB>(
        &config,
        dir.path(),
        &TrainOptions::default(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(summary.epochs, 1);
    let metrics = lines(&dir.path().join("metrics.jsonl"));
    for m in metrics.iter().filter(|m| m["type"] == "step") {
        assert!(m["train_ce"].as_f64().unwrap().is_finite());
        assert!(m["kl"].as_f64().unwrap().is_finite());
    }
}

/// About 90 s on two cores: `cargo test -p ews-train --test train -- --ignored`.
/// (CI covers the same property on an untrained network in `ews-attack`'s tests.)
#[test]
#[ignore]
fn pgd_drives_an_undefended_trained_model_near_zero_accuracy() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 5,
        lr: 0.1,
        image_size: Some(32),
        synthetic_size: (960, 64),
        batch_size: 32,
        eval_batch_size: 32,
        log_every: 10,
        ..tiny(Method::Vanilla)
    };
    let summary = train::<AB>(
        &config,
        dir.path(),
        &TrainOptions::default(),
        &Default::default(),
    )
    .unwrap();
    let dataset = ews_train::load_dataset(&config).unwrap();
    let (_, _, model) = ews_train::trainer::load_run::<AB>(
        dir.path(),
        ews_train::trainer::RunWeights::Best,
        &Default::default(),
    )
    .unwrap();
    let (_, eval) = loader_configs(&config);
    let attack = ews_attack::pgd::Pgd::evaluation(ews_attack::Norm::Linf, 8.0 / 255.0, 10);
    let (clean, robust) = ews_train::adversarial::robust_accuracy(
        &model,
        &dataset.test,
        &eval,
        &attack,
        &Default::default(),
    )
    .unwrap();
    assert!(clean >= 30.0, "the model did not learn: {clean}%");
    assert_eq!(
        clean, summary.best_test_acc,
        "evaluation differs from the trainer's"
    );
    assert!(robust <= 5.0, "PGD-10 left {robust}% of {clean}%");
}

/// The metrics lines of a run without the fields that depend on timing.
fn lines_without_timing(path: &std::path::Path) -> Vec<serde_json::Value> {
    let mut all = lines(path);
    for line in &mut all {
        for key in ["images_per_s", "seconds"] {
            line.as_object_mut().unwrap().remove(key);
        }
    }
    all
}

#[test]
fn gradient_checkpointing_trains_to_the_same_metrics() {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny(Method::Ews);
    config.adversarial = ews_train::Adversarial::Trades;
    config.attack_steps = 2;
    config.epochs = 1;
    let (kept, recomputed) = (dir.path().join("kept"), dir.path().join("recomputed"));
    let options = TrainOptions::default();
    train::<AB>(&config, &kept, &options, &Default::default()).unwrap();
    type Checkpointed = Autodiff<Flex, BalancedCheckpointing>;
    train::<Checkpointed>(&config, &recomputed, &options, &Default::default()).unwrap();
    let metrics = |run: &std::path::Path| lines_without_timing(&run.join("metrics.jsonl"));
    assert_eq!(metrics(&kept), metrics(&recomputed));
}

#[test]
fn a_run_folder_in_use_is_refused_until_its_writer_lets_go() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 1,
        ..tiny(Method::Vanilla)
    };
    // Another process's lock: an open file description holding the folder's lock.
    std::fs::create_dir_all(dir.path()).unwrap();
    let other = std::fs::File::create(dir.path().join(".lock")).unwrap();
    other.try_lock().unwrap();
    std::fs::write(dir.path().join(".lock"), "4242").unwrap();
    let err = train::<AB>(
        &config,
        dir.path(),
        &TrainOptions::default(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("in use by another training process (pid 4242)"),
        "{err}"
    );
    drop(other);
    train::<AB>(
        &config,
        dir.path(),
        &TrainOptions::default(),
        &Default::default(),
    )
    .unwrap();
    // Released and emptied at the end of the run.
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".lock")).unwrap(),
        ""
    );
}

#[test]
fn a_nan_loss_stops_the_run_keeping_its_checkpoint_or_is_skipped_and_counted() {
    use ews_train::config::OnNonFinite;
    use ews_train::fault::set_nan_loss_at;
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    // 6 steps per epoch: global step 8 is the third step of epoch 2.
    let config = tiny(Method::Ews);
    set_nan_loss_at(Some(8));
    let stopped = dir.path().join("stopped");
    let err = train::<AB>(&config, &stopped, &TrainOptions::default(), &d)
        .unwrap_err()
        .to_string();
    set_nan_loss_at(None);
    assert!(
        err.contains("at epoch 2, between steps 9 and 9") && err.contains("(epoch 1) is kept"),
        "{err}"
    );
    // The checkpoint of epoch 1 is intact: the run resumes from it and finishes.
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    assert_eq!(
        train::<AB>(&config, &stopped, &resume, &d).unwrap().epochs,
        2
    );

    let skipping = TrainConfig {
        on_nonfinite: OnNonFinite::Skip,
        ..config
    };
    let skipped = dir.path().join("skipped");
    set_nan_loss_at(Some(8));
    let summary = train::<AB>(&skipping, &skipped, &TrainOptions::default(), &d);
    set_nan_loss_at(None);
    assert_eq!(summary.unwrap().epochs, 2);
    let all = lines(&skipped.join("metrics.jsonl"));
    let epochs: Vec<_> = all.iter().filter(|l| l["type"] == "epoch").collect();
    assert_eq!(epochs[0]["skipped_steps"], 0);
    assert_eq!(epochs[1]["skipped_steps"], 1);
    // No NaN reached the metrics (JSON would hold it as null).
    for line in &all {
        for (key, value) in line.as_object().unwrap() {
            assert!(!value.is_null(), "{key} in {line}");
        }
    }
}

/// Damaged run files are refused on resume, naming the file, and the run resumes once they
/// are restored (cases found by the fuzzer, crates/ews-fuzz).
#[test]
fn damaged_run_files_are_refused_on_resume() {
    let _guard = serial();
    let d = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        synthetic_size: (32, 16),
        ..tiny(Method::Ews)
    };
    let run = dir.path().join("run");
    let first = TrainOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    train::<AB>(&config, &run, &first, &d).unwrap();
    let (checkpoint, metrics) = (run.join("checkpoint.ews"), run.join("metrics.jsonl"));
    let (good_checkpoint, good_metrics) = (
        std::fs::read(&checkpoint).unwrap(),
        std::fs::read(&metrics).unwrap(),
    );
    let resume = |expect: &[&str]| {
        let err = check_resume::<AB>(&config, &run, &d)
            .unwrap_err()
            .to_string();
        assert!(expect.iter().all(|e| err.contains(e)), "{expect:?}: {err}");
    };

    // One flipped bit in the weights: the checksum.
    let mut flipped = good_checkpoint.clone();
    flipped[good_checkpoint.len() / 2] ^= 4;
    std::fs::write(&checkpoint, &flipped).unwrap();
    resume(&["checkpoint.ews", "checksum"]);
    std::fs::write(&checkpoint, &good_checkpoint).unwrap();

    // metrics.jsonl shorter than the checkpoint saw, or with a broken line.
    std::fs::write(&metrics, &good_metrics[..good_metrics.len() - 3]).unwrap();
    resume(&["metrics.jsonl", "holds only"]);
    let mut broken = good_metrics.clone();
    broken[1] = b'#';
    std::fs::write(&metrics, &broken).unwrap();
    resume(&["metrics.jsonl", "line 1 is not a JSON object"]);
    std::fs::write(&metrics, &good_metrics).unwrap();

    assert_eq!(check_resume::<AB>(&config, &run, &d).unwrap(), 1);
    let resumed = TrainOptions {
        resume: true,
        ..Default::default()
    };
    assert_eq!(train::<AB>(&config, &run, &resumed, &d).unwrap().epochs, 2);
}

/// Integers beyond TOML's range cannot be saved in config.toml: refused, naming the field
/// (and the file, when read from one).
#[test]
fn integers_beyond_toml_are_refused() {
    let config = TrainConfig {
        holdout: usize::MAX,
        ..tiny(Method::Ews)
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("holdout") && err.contains("2^63"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    let text = tiny(Method::Ews)
        .to_toml()
        .replace("log_every = 1", "log_every = 18446744073709551615");
    std::fs::write(&path, text).unwrap();
    let err = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("mine.toml") && err.contains("log_every"),
        "{err}"
    );
}

/// A folder `ROOT/{train,val}/{a,b}/` of `per_class` square PNG images per class and
/// split, of the sides given in turn.
fn image_folder(root: &std::path::Path, per_class: usize, sides: &[u32]) {
    let sizes: Vec<(u32, u32)> = sides.iter().map(|&s| (s, s)).collect();
    image_folder_sized(root, per_class, &sizes);
}

/// [`image_folder`] of `height x width` images.
fn image_folder_of(root: &std::path::Path, per_class: usize, size: (u32, u32)) {
    image_folder_sized(root, per_class, &[size]);
}

fn image_folder_sized(root: &std::path::Path, per_class: usize, sizes: &[(u32, u32)]) {
    let mut k = 0;
    for split in ["train", "val"] {
        for class in ["a", "b"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let (h, w) = sizes[k % sizes.len()];
                k += 1;
                let shade = if class == "a" { 40 } else { 210 };
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([shade, (x * 7 + y) as u8, (i * 31) as u8])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// A folder of 32 px images trains at 32 px (not 224), saved in config.toml and said in a
/// note; folders of mixed sizes train at 224 px with a warning where that upscales them.
#[test]
fn folder_datasets_train_at_their_images_own_size() {
    use ews_train::trainer::resolve_image_size;
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    image_folder(&small, 4, &[32]);
    let config = TrainConfig {
        dataset: format!("folder:{}", small.display()),
        image_size: None,
        epochs: 1,
        ..tiny(Method::Ews)
    };
    let (resolved, note) = resolve_image_size(&config, dir.path()).unwrap();
    let note = note.unwrap();
    assert_eq!(resolved.image_size, Some(32));
    assert!(
        note.contains("all 32x32") && note.contains("training at 32 px") && note.contains("0.485"),
        "{note}"
    );
    assert!(!note.contains("warning"), "{note}");
    let run = dir.path().join("run");
    train::<AB>(&config, &run, &TrainOptions::default(), &Default::default()).unwrap();
    let saved = TrainConfig::from_toml_file(&run.join("config.toml")).unwrap();
    assert_eq!(saved.image_size, Some(32));
    // A run saved before sizes were resolved (no image_size) resumes as it started.
    let legacy = saved.to_toml().replace("image_size = 32\n", "");
    std::fs::write(run.join("config.toml"), legacy).unwrap();
    assert_eq!(
        resolve_image_size(&config, &run).unwrap(),
        (config.clone(), None)
    );

    let wide = dir.path().join("wide");
    image_folder_of(&wide, 2, (32, 48));
    let config_wide = TrainConfig {
        dataset: format!("folder:{}", wide.display()),
        ..config.clone()
    };
    let (resolved, note) = resolve_image_size(&config_wide, dir.path()).unwrap();
    assert_eq!(resolved.image_size, Some(224));
    assert!(note.unwrap().contains("all 32x48 (not square)"));

    let mixed = dir.path().join("mixed");
    image_folder(&mixed, 2, &[32, 48]);
    let config = TrainConfig {
        dataset: format!("folder:{}", mixed.display()),
        ..config
    };
    let (resolved, note) = resolve_image_size(&config, dir.path()).unwrap();
    let note = note.unwrap();
    assert_eq!(resolved.image_size, Some(224));
    assert!(
        note.contains("differ in size") && note.contains("warning") && note.contains("48 px"),
        "{note}"
    );
    // An explicit size is kept, without a note; other datasets are left alone.
    let explicit = TrainConfig {
        image_size: Some(64),
        ..config
    };
    assert_eq!(
        resolve_image_size(&explicit, dir.path()).unwrap(),
        (explicit.clone(), None)
    );
    let synthetic = tiny(Method::Ews);
    assert_eq!(resolve_image_size(&synthetic, dir.path()).unwrap().1, None);
}
