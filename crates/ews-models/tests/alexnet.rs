//! AlexNet against PyTorch: torchvision's layer structure with narrow widths and random
//! weights, read from the zip and the legacy `.pth` formats, gives PyTorch's logits
//! (tests/golden/make_alexnet_golden.py); the full network has torchvision's parameter count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use ews_models::persist::num_params;
use ews_models::{AlexNet, AlexNetConfig};
use serde_json::Value;

type B = Flex;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The golden script's inputs: `((i * 7919) % 1009) / 1008` over the flattened NCHW batch.
fn pattern(n: usize, size: usize) -> Tensor<B, 4> {
    let values: Vec<f32> = (0..n * 3 * size * size)
        .map(|i| ((i as u64 * 7919) % 1009) as f32 / 1008.0)
        .collect();
    Tensor::from_data(
        TensorData::new(values, [n, 3, size, size]),
        &Default::default(),
    )
}

fn assert_matches_pytorch(file: &str) {
    let model = AlexNet::<B>::from_torchvision(&golden(file), &Default::default()).unwrap();
    assert_eq!(
        model.config(),
        AlexNetConfig {
            channels: [4, 8, 8, 8, 8],
            hidden: 16,
            num_classes: 10
        }
    );
    let text = std::fs::read_to_string(golden("alexnet_tiny_expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    for (size, case) in expected["logits"].as_object().unwrap() {
        let size: usize = size.parse().unwrap();
        let n = case["batch"].as_u64().unwrap() as usize;
        let want: Vec<f64> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = model
            .forward(pattern(n, size))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len(), "{file}, {size} px");
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-5 * scale,
                "{file}, {size} px, logit {i}: {g} vs PyTorch {w}"
            );
        }
    }
}

#[test]
fn zip_format_weights_give_pytorchs_logits() {
    let _rng = ews_models::rng_lock();
    assert_matches_pytorch("alexnet_tiny.pth");
}

#[test]
fn legacy_format_weights_give_pytorchs_logits() {
    let _rng = ews_models::rng_lock();
    assert_matches_pytorch("alexnet_tiny_legacy.pth");
}

#[test]
fn torchvision_alexnet_has_its_published_parameter_count() {
    let _rng = ews_models::rng_lock();
    let model = AlexNetConfig::torchvision().init::<B>(&Default::default());
    // torchvision's AlexNet_Weights.IMAGENET1K_V1 meta: num_params 61,100,840 (the two
    // normalisation constants of ours are not parameters).
    assert_eq!(num_params::<B, _>(&model), 61_100_840);
    let logits = model.forward(Tensor::zeros([1, 3, 224, 224], &Default::default()));
    assert_eq!(logits.dims(), [1, 1000]);
}

fn tiny_shapes() -> BTreeMap<String, Vec<usize>> {
    [
        ("features.0.weight", vec![4, 3, 11, 11]),
        ("features.3.weight", vec![8, 4, 5, 5]),
        ("features.6.weight", vec![8, 8, 3, 3]),
        ("features.8.weight", vec![8, 8, 3, 3]),
        ("features.10.weight", vec![8, 8, 3, 3]),
        ("classifier.1.weight", vec![16, 288]),
        ("classifier.4.weight", vec![16, 16]),
        ("classifier.6.weight", vec![10, 16]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect()
}

#[test]
fn widths_come_from_the_state_dict_and_misfits_are_named() {
    let config = AlexNetConfig::from_shapes(&tiny_shapes()).unwrap();
    assert_eq!(config.channels, [4, 8, 8, 8, 8]);
    let mut missing = tiny_shapes();
    missing.remove("classifier.4.weight");
    let err = AlexNetConfig::from_shapes(&missing).unwrap_err();
    assert!(err.contains("classifier.4.weight"), "{err}");
    let mut wrong_kernel = tiny_shapes();
    wrong_kernel.insert("features.3.weight".into(), vec![8, 4, 3, 3]);
    let err = AlexNetConfig::from_shapes(&wrong_kernel).unwrap_err();
    assert!(err.contains("features.3.weight"), "{err}");
    let mut wrong_input = tiny_shapes();
    wrong_input.insert("classifier.1.weight".into(), vec![16, 200]);
    let err = AlexNetConfig::from_shapes(&wrong_input).unwrap_err();
    assert!(
        err.contains("classifier.1.weight") && err.contains("288"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_alexnet_weights_are_refused_naming_them() {
    let _rng = ews_models::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let json = golden("alexnet_tiny_expected.json");
    let truncated = dir.path().join("cut.pth");
    let bytes = std::fs::read(golden("alexnet_tiny.pth")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let other_model = golden("wrn10_1.safetensors");
    for path in [json, truncated, other_model, dir.path().join("absent.pth")] {
        let err = AlexNet::<B>::from_torchvision(&path, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn the_download_is_torchvisions_file_under_its_own_checksum() {
    use ews_models::alexnet::{TORCHVISION_FILE, TORCHVISION_SHA256, TORCHVISION_URL};
    assert!(TORCHVISION_URL.ends_with(&format!("/{TORCHVISION_FILE}")));
    // torchvision names its files `<name>-<first 8 hex digits of the SHA-256>.pth`.
    let prefix = TORCHVISION_FILE
        .trim_end_matches(".pth")
        .rsplit('-')
        .next()
        .unwrap();
    assert_eq!(prefix.len(), 8);
    assert!(TORCHVISION_SHA256.starts_with(prefix));
    assert_eq!(TORCHVISION_SHA256.len(), 64);
}
