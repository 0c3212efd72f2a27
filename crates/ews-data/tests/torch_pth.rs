//! PyTorch state dicts: a narrow AlexNet with torchvision's layer structure and random
//! weights, read from the zip and the legacy `.pth` formats, gives PyTorch's logits
//! (ews-models' tests/golden/make_alexnet_golden.py); damaged files are errors naming them.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use ews_data::torch_pth::{read_alexnet, read_state_dict};
use ews_models::AlexNetConfig;
use serde_json::Value;

type B = Flex;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ews-models/tests/golden")
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
    let model = read_alexnet::<B>(&golden(file), &Default::default()).unwrap();
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
fn both_formats_hold_the_same_tensors() {
    let zip = read_state_dict(&golden("alexnet_tiny.pth")).unwrap();
    let legacy = read_state_dict(&golden("alexnet_tiny_legacy.pth")).unwrap();
    assert_eq!(zip.len(), 16);
    assert_eq!(zip, legacy);
    assert_eq!(zip["features.0.weight"].shape, [4, 3, 11, 11]);
}

#[test]
fn every_cut_of_either_format_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["alexnet_tiny.pth", "alexnet_tiny_legacy.pth"] {
        let bytes = std::fs::read(golden(file)).unwrap();
        let cut = dir.path().join(file);
        for len in (0..bytes.len()).step_by(97) {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let err = read_state_dict(&cut).map(|t| t.len());
            let err = err.expect_err(&format!("{file} cut at {len} bytes was read"));
            assert!(err.to_string().contains(file), "{err}");
        }
    }
}

#[test]
fn files_that_are_not_alexnet_weights_are_refused_naming_them() {
    let _rng = ews_models::rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let paths = [
        golden("alexnet_tiny_expected.json"),
        golden("wrn10_1.safetensors"),
        dir.path().join("absent.pth"),
    ];
    for path in paths {
        let err = read_alexnet::<B>(&path, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

/// A full-size torchvision file (244 MB, not in the repository):
/// `EWS_ALEXNET_PTH=datasets/alexnet-owt-7be5be79.pth cargo test -p ews-data --test
/// torch_pth -- --ignored`; with `EWS_ALEXNET_LOGITS=FILE` (a JSON list of PyTorch's 1,000
/// logits for `pattern(1, 224)`) the logits are compared too.
#[test]
#[ignore = "needs EWS_ALEXNET_PTH, a torchvision AlexNet file"]
fn a_full_size_torchvision_file() {
    let _rng = ews_models::rng_lock();
    let path = PathBuf::from(std::env::var("EWS_ALEXNET_PTH").expect("set EWS_ALEXNET_PTH"));
    let model = read_alexnet::<B>(&path, &Default::default()).unwrap();
    assert_eq!(model.config(), AlexNetConfig::torchvision());
    let Ok(logits) = std::env::var("EWS_ALEXNET_LOGITS") else {
        return;
    };
    let want: Vec<f64> = serde_json::from_str(&std::fs::read_to_string(logits).unwrap()).unwrap();
    let got = model
        .forward(pattern(1, 224))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(got.len(), 1000);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * scale,
            "logit {i}: {g} vs PyTorch {w}"
        );
    }
}
