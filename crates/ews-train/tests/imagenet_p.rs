//! ImageNet-P metrics: the flip probability and top-5 distance against the reference
//! formulas (golden file from `tests/golden/make_imagenet_p_golden.py`) and hand-computed
//! cases, the mFR normalisation, and an evaluation of a network on `.npy` sequences.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use ews_models::NetworkConfig;
use ews_train::imagenet_p::{
    Normalizers, TEST_PERTURBATIONS, compared_pairs, evaluate_imagenet_p, imagenet_p_report,
    top5_distance, video_scores,
};

#[test]
fn metrics_equal_the_reference_formulas() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/imagenet_p_golden.json");
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let noise = case["noise"].as_bool().unwrap();
        let difficulty = case["difficulty"].as_u64().unwrap() as usize;
        let classes = case["classes"].as_u64().unwrap() as usize;
        let videos = case["videos"].as_array().unwrap();
        let (mut fp, mut t5d) = (0.0, 0.0);
        for v in videos {
            let logits: Vec<f32> = v
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                })
                .collect();
            let (f, t) = video_scores(&logits, classes, noise, difficulty).unwrap();
            fp += f / videos.len() as f64;
            t5d += t / videos.len() as f64;
        }
        let want_fp = case["flip_probability"].as_f64().unwrap();
        let want_t5d = case["top5_distance"].as_f64().unwrap();
        assert!(
            (fp - want_fp).abs() < 1e-12,
            "{case:.0}: FP {fp} != {want_fp}"
        );
        assert!((t5d - want_t5d).abs() < 1e-12, "T5D {t5d} != {want_t5d}");
    }
}

/// Two-class logits whose top-1 classes are `classes`.
fn logits_of(classes: &[usize]) -> Vec<f32> {
    classes
        .iter()
        .flat_map(|&c| if c == 0 { [1.0, 0.0] } else { [0.0, 1.0] })
        .collect()
}

#[test]
fn hand_computed_flips_and_distances() {
    assert_eq!(compared_pairs(4, true, 1), vec![(0, 1), (0, 2), (0, 3)]);
    assert_eq!(compared_pairs(5, false, 2), vec![(0, 2), (1, 3), (2, 4)]);
    // Predictions 0 1 1 1 1: noise compares with frame 0 (4 flips of 4), difficulty 1
    // consecutive frames (1 of 4), difficulty 2 frames two apart (0-2 flips; 1-3, 2-4 not).
    let seq = logits_of(&[0, 1, 1, 1, 1]);
    assert_eq!(video_scores(&seq, 2, true, 1).unwrap().0, 1.0);
    assert_eq!(video_scores(&seq, 2, false, 1).unwrap().0, 0.25);
    assert_eq!(video_scores(&seq, 2, false, 2).unwrap().0, 1.0 / 3.0);
    assert!(video_scores(&logits_of(&[0, 1]), 2, false, 2).is_none());
    // Frame b ranks frame a's classes 0..4 at 6, 5, 4, 3, 2:
    // |0 - 5| + |1 - 4| + |2 - 3| + |3 - 2| + |4 - 1| = 13.
    let a = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0];
    let b = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(top5_distance(&a, &b), 13.0);
    assert_eq!(top5_distance(&a, &a), 0.0);
    // Ties rank by class index: [1, 1, 0, ...] puts class 0 first.
    assert_eq!(top5_distance(&[1.0, 1.0, 0.0], &[1.0, 1.0, 0.0]), 0.0);
    assert_eq!(top5_distance(&[1.0, 1.0, 0.0], &[1.0, 2.0, 0.0]), 2.0);
}

fn alexnet(value: f64) -> Normalizers {
    Normalizers {
        flip_probability: TEST_PERTURBATIONS
            .iter()
            .map(|p| (p.to_string(), value))
            .collect(),
        top5_distance: BTreeMap::new(),
        difficulty: None,
    }
}

#[test]
fn flip_rates_normalise_by_alexnet_and_the_mfr_needs_all_ten() {
    let found: Vec<(String, usize, f64, f64)> = TEST_PERTURBATIONS
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), 2, 0.01 * (i + 1) as f64, 1.0))
        .collect();
    let report = imagenet_p_report("d".into(), 1, found.clone(), Some(&alexnet(0.2)));
    // FR_i = (i + 1)% / 20% = 5 (i + 1)%; mean over i = 0..9: 27.5%.
    assert!((report.perturbations[3].flip_rate.unwrap() - 20.0).abs() < 1e-9);
    assert!((report.mfr.unwrap() - 27.5).abs() < 1e-9);
    assert!((report.mean_flip_probability - 5.5).abs() < 1e-9);
    assert_eq!(report.mt5d, None, "no T5D normalisers");
    assert!(report.markdown().contains("mFR 27.5%"));
    let unnormalised = imagenet_p_report("d".into(), 1, found.clone(), None);
    assert_eq!(unnormalised.mfr, None);
    assert!(unnormalised.markdown().contains("--alexnet-p"));
    let partial = imagenet_p_report("d".into(), 1, found[1..].to_vec(), Some(&alexnet(0.2)));
    assert_eq!(
        (partial.mfr, partial.missing.clone()),
        (None, vec!["gaussian_noise".to_string()])
    );
    // Noise folders of difficulty 2 are `NAME_2` and normalise as NAME.
    let noisy = vec![("gaussian_noise_2".to_string(), 1, 0.1, 0.0)];
    let report = imagenet_p_report("d".into(), 2, noisy, Some(&alexnet(0.2)));
    assert_eq!(report.perturbations[0].flip_rate, Some(50.0));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alexnet.json");
    std::fs::write(&file, r#"{"flip_probability": {"translate": 0.0}}"#).unwrap();
    let err = Normalizers::read(&file).unwrap_err().to_string();
    assert!(
        err.contains("alexnet.json") && err.contains("translate"),
        "{err}"
    );
}

#[test]
fn a_network_flips_never_on_still_sequences() {
    type B = Flex;
    let device = Default::default();
    B::seed(&device, 1);
    let model = NetworkConfig::new("wrn-10-1".parse().unwrap())
        .init::<B>(&device)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (frames, side) = (4usize, 8usize);
    let still: Vec<u8> = (0..side * side * 3).map(|i| (i * 37 % 256) as u8).collect();
    for p in TEST_PERTURBATIONS {
        let class = dir.path().join(p).join("n01");
        std::fs::create_dir_all(&class).unwrap();
        // One still sequence (every frame the same) and one of random frames.
        let pixels: Vec<u8> = still.repeat(frames);
        std::fs::write(
            class.join("a.npy"),
            ews_data::npy::encode_u8(&[frames, side, side, 3], &pixels),
        )
        .unwrap();
        let noisy: Vec<u8> = (0..frames * side * side * 3)
            .map(|i| (i * i % 251) as u8)
            .collect();
        std::fs::write(
            class.join("b.npy"),
            ews_data::npy::encode_u8(&[frames, side, side, 3], &noisy),
        )
        .unwrap();
    }
    let names: Vec<String> = TEST_PERTURBATIONS.iter().map(|p| p.to_string()).collect();
    let mut calls = 0;
    let report = evaluate_imagenet_p(&model, dir.path(), &names, 1, None, &device, |_, _, _| {
        calls += 1
    })
    .unwrap();
    assert_eq!(calls, 20);
    assert_eq!(report.perturbations.len(), 10);
    assert!(report.missing.is_empty());
    for p in &report.perturbations {
        assert_eq!(p.videos, 2);
        // The still video adds nothing, so the mean is at most half.
        assert!(p.flip_probability <= 50.0, "{p:?}");
    }
    let only_still = tempfile::tempdir().unwrap();
    let class = only_still.path().join("translate").join("n01");
    std::fs::create_dir_all(&class).unwrap();
    std::fs::copy(dir.path().join("translate/n01/a.npy"), class.join("a.npy")).unwrap();
    let names = vec!["translate".to_string()];
    let report = evaluate_imagenet_p(
        &model,
        only_still.path(),
        &names,
        1,
        None,
        &device,
        |_, _, _| {},
    )
    .unwrap();
    assert_eq!(report.perturbations[0].flip_probability, 0.0);
    assert_eq!(report.perturbations[0].top5_distance, 0.0);
    assert_eq!(report.missing.len(), 9);
}

#[test]
fn evaluation_names_are_the_generators() {
    use ews_augment::perturb::Perturbation;
    let names: Vec<&str> = Perturbation::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(names, TEST_PERTURBATIONS);
    for p in Perturbation::ALL {
        assert_eq!(
            ews_train::imagenet_p::is_noise(p.name()),
            p.has_difficulties()
        );
        for d in 1..=3u8 {
            if d == 1 || p.has_difficulties() {
                assert_eq!(
                    ews_train::imagenet_p::folder_of(p.name(), d as usize),
                    p.folder(d)
                );
            }
        }
    }
}

/// The golden script's frames (make_alexnet_golden.py `frames`): `count x size x size x 3`.
fn formula_frames(video: usize, count: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * size * size * 3);
    for f in 0..count {
        out.extend((0..size * size * 3).map(|i| {
            let base = (i * 7919 + video * 104_729) % 1009 * 255 / 1008;
            let change = (i * 31 + f * 17 * (video + 1)) % 97;
            ((base + change) % 256) as u8
        }));
    }
    out
}

#[test]
fn alexnet_scores_on_sequences_equal_pytorchs_and_become_normalisers() {
    use ews_models::AlexNet;
    use ews_train::imagenet_p::folder_of;
    type B = Flex;
    let device = Default::default();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ews-models/tests/golden");
    let model: AlexNet<B> =
        ews_data::torch_pth::read_alexnet(&golden.join("alexnet_tiny.pth"), &device).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden.join("alexnet_tiny_expected.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for difficulty in [1, 2] {
        for name in ["gaussian_noise", "rotate"] {
            let class = dir.path().join(folder_of(name, difficulty)).join("n01");
            std::fs::create_dir_all(&class).unwrap();
            for v in 0..2 {
                let npy = ews_data::npy::encode_u8(&[5, 64, 64, 3], &formula_frames(v, 5, 64));
                std::fs::write(class.join(format!("v{v}.npy")), npy).unwrap();
            }
        }
    }
    let names = vec!["gaussian_noise".to_string(), "rotate".to_string()];
    for (difficulty, noise_key, motion_key) in [(1, "noise", "motion"), (2, "noise", "motion_d2")] {
        let report = evaluate_imagenet_p(
            &model,
            dir.path(),
            &names,
            difficulty,
            None,
            &device,
            |_, _, _| {},
        )
        .unwrap();
        for (score, key) in report.perturbations.iter().zip([noise_key, motion_key]) {
            let want = &expected["imagenet_p"][key];
            let fp = want["flip_probability"].as_f64().unwrap();
            let t5d = want["top5_distance"].as_f64().unwrap();
            assert!(
                fp > 0.0 && fp < 1.0,
                "the golden case flips sometimes: {fp}"
            );
            assert!(
                (score.flip_probability - 100.0 * fp).abs() < 1e-9,
                "{score:?} vs {want}"
            );
            assert!(
                (score.top5_distance - t5d).abs() < 1e-9,
                "{score:?} vs {want}"
            );
        }
        // AlexNet's report is the normaliser file: read back, it gives AlexNet an FR of 100%.
        let normalizers = Normalizers::from_report(&report).unwrap();
        assert_eq!(normalizers.difficulty, Some(difficulty));
        let file = dir.path().join(format!("alexnet-p-{difficulty}.json"));
        std::fs::write(&file, serde_json::to_string(&normalizers).unwrap()).unwrap();
        let read = Normalizers::read(&file).unwrap();
        assert_eq!(read, normalizers);
        let again = evaluate_imagenet_p(
            &model,
            dir.path(),
            &names,
            difficulty,
            Some(&read),
            &device,
            |_, _, _| {},
        )
        .unwrap();
        for p in &again.perturbations {
            assert!((p.flip_rate.unwrap() - 100.0).abs() < 1e-9, "{p:?}");
            assert!((p.relative_t5d.unwrap() - 100.0).abs() < 1e-9, "{p:?}");
        }
        // Normalisers of another difficulty are refused.
        let other = if difficulty == 1 { 2 } else { 1 };
        let err = evaluate_imagenet_p(
            &model,
            dir.path(),
            &names,
            other,
            Some(&read),
            &device,
            |_, _, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&format!("difficulty {difficulty}")), "{err}");
    }
}
