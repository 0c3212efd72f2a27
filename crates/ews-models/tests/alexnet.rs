//! AlexNet's structure: torchvision's parameter count, widths from a state dict, PyTorch's
//! tensors in burn's layout (the logits against PyTorch: ews-data's tests/torch_pth.rs).

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::tensor::Tensor;
use ews_models::persist::num_params;
use ews_models::{AlexNet, AlexNetConfig};

type B = Flex;

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
    let mut empty = tiny_shapes();
    empty.insert("features.0.weight".into(), vec![0, 3, 11, 11]);
    let err = AlexNetConfig::from_shapes(&empty).unwrap_err();
    assert!(err.contains("features.0.weight"), "{err}");
    let mut wrong_input = tiny_shapes();
    wrong_input.insert("classifier.1.weight".into(), vec![16, 200]);
    let err = AlexNetConfig::from_shapes(&wrong_input).unwrap_err();
    assert!(
        err.contains("classifier.1.weight") && err.contains("288"),
        "{err}"
    );
}

/// A state dict of the tiny widths with values `i * 0.001` per tensor.
fn tiny_state() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for (name, shape) in tiny_shapes() {
        let bias = name.replace("weight", "bias");
        out.insert(bias, (vec![shape[0]], vec![0.5; shape[0]]));
        let n = shape.iter().product::<usize>();
        out.insert(name, (shape, (0..n).map(|i| i as f32 * 0.001).collect()));
    }
    out
}

#[test]
fn a_state_dict_sets_every_parameter_in_burns_layout() {
    let _rng = ews_models::rng_lock();
    let model = AlexNet::<B>::from_state_dict(&tiny_state(), &Default::default()).unwrap();
    assert_eq!(
        model.config(),
        AlexNetConfig::from_shapes(&tiny_shapes()).unwrap()
    );
    let conv = model
        .conv2
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(conv[..3], [0.0, 0.001, 0.002]);
    // PyTorch's [out, in] weight is burn's [in, out]: element (o, i) moves to (i, o).
    let fc2 = model.fc2.weight.val();
    assert_eq!(fc2.dims(), [16, 16]);
    let fc2 = fc2.into_data().to_vec::<f32>().unwrap();
    assert_eq!(fc2[1], 16.0 * 0.001);
    assert_eq!(fc2[16], 0.001);
    let bias = model
        .fc3
        .bias
        .as_ref()
        .unwrap()
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(bias, vec![0.5; 10]);
}

#[test]
fn state_dicts_that_are_not_alexnets_are_refused_naming_the_tensor() {
    let _rng = ews_models::rng_lock();
    let device = Default::default();
    let mut extra = tiny_state();
    extra.insert("features.1.weight".into(), (vec![1], vec![0.0]));
    let err = AlexNet::<B>::from_state_dict(&extra, &device).unwrap_err();
    assert!(err.contains("features.1.weight"), "{err}");
    let mut no_bias = tiny_state();
    no_bias.remove("classifier.4.bias");
    let err = AlexNet::<B>::from_state_dict(&no_bias, &device).unwrap_err();
    assert!(err.contains("classifier.4.bias"), "{err}");
    let mut short = tiny_state();
    short.get_mut("features.6.weight").unwrap().1.pop();
    let err = AlexNet::<B>::from_state_dict(&short, &device).unwrap_err();
    assert!(err.contains("features.6.weight"), "{err}");
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
