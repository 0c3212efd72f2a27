//! Parameter counts, masked-forward and batch-norm properties, persistence round trips.
//! All on the CPU backend with tiny inputs.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{
    Distribution, ElementConversion, Tensor, TensorData, Tolerance, backend::Backend,
};
use ews_models::persist::{
    export_safetensors, import_safetensors, load_weights, num_params, pytorch_state_dict,
    save_weights,
};
use ews_models::{
    Architecture, BatchNorm2d, BnMode, Network, NetworkConfig, Normalization, Subnet,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

type B = Flex;
type AB = Autodiff<Flex>;

fn device() -> <B as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

fn build<Bk: Backend>(name: &str, classes: usize, device: &Bk::Device) -> Network<Bk> {
    Bk::seed(device, 7);
    NetworkConfig::new(name.parse().unwrap())
        .with_num_classes(classes)
        .with_normalization(Normalization::cifar10())
        .init(device)
        .unwrap()
}

fn images<Bk: Backend>(n: usize, size: usize, device: &Bk::Device) -> Tensor<Bk, 4> {
    Tensor::random([n, 3, size, size], Distribution::Uniform(0.0, 1.0), device)
}

fn max_abs_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    (a - b).abs().max().into_scalar().elem::<f32>()
}

#[test]
fn parameter_counts_match_the_published_ones() {
    let _rng = ews_models::rng_lock();
    let d = device();
    for (name, classes, expected) in [
        ("preact-resnet18", 10, 11_172_170),
        ("wrn-28-10", 10, 36_479_194),
        ("wrn-34-10", 10, 46_160_474),
        ("resnet50", 10, 23_520_842),
        ("imagenet-resnet50", 1000, 25_557_032),
    ] {
        let model = build::<B>(name, classes, &d);
        assert_eq!(num_params(&model), expected, "{name}");
    }
}

#[test]
fn subnet_spaces_follow_the_release() {
    let _rng = ews_models::rng_lock();
    let d = device();
    let widths = |name: &str| -> Vec<usize> {
        let space = build::<B>(name, 10, &d).subnet_space();
        space
            .blocks
            .iter()
            .map(|b| b.paths[0].layers[0].width)
            .collect()
    };
    assert_eq!(
        widths("preact-resnet18"),
        vec![64, 64, 128, 128, 256, 256, 512, 512]
    );
    assert_eq!(widths("wrn-16-1"), vec![16, 16, 32, 32, 64, 64]);
    let r50 = widths("resnet50");
    assert_eq!(r50.len(), 16);
    assert_eq!((r50[0], r50[3], r50[7], r50[13]), (64, 128, 256, 512));
    let space = build::<B>("wrn-16-1", 10, &d).subnet_space();
    assert_eq!(space.blocks[2].name, "block2.layer.0");
    assert_eq!(space.blocks[0].paths[1].name, "skip");
    assert!(
        space
            .blocks
            .iter()
            .all(|b| b.paths.len() == 2 && b.paths[1].layers.is_empty())
    );
}

/// A copy of `model` with the given input channels of every block's conv2 zeroed.
fn zero_conv2_inputs<Bk: Backend>(model: Network<Bk>, subnet: &Subnet) -> Network<Bk> {
    let mut model = model;
    let mut index = 0;
    for stage in model.stages.iter_mut() {
        for block in stage.iter_mut() {
            let choice = &subnet.blocks[index];
            index += 1;
            let conv2 = match block {
                ews_models::Block::PreAct(b) => &mut b.conv2,
                ews_models::Block::Basic(b) => &mut b.conv2,
                ews_models::Block::Bottleneck(b) => &mut b.conv2,
            };
            let keep_residual = choice.paths.contains(&0);
            let kept = &choice.channels[0][0];
            let w = conv2.weight.val();
            let [o, i, kh, kw] = w.dims();
            let mut mask = vec![0.0f32; i];
            if keep_residual {
                for &c in kept {
                    mask[c] = 1.0;
                }
            }
            let mask = Tensor::<Bk, 4>::from_data(TensorData::new(mask, [1, i, 1, 1]), &w.device());
            let zeroed = w * mask.expand([o, i, kh, kw]);
            conv2.weight = conv2.weight.clone().map(|_| zeroed.clone());
        }
    }
    model
}

#[test]
fn full_subnet_gives_exactly_the_full_forward_and_others_differ() {
    let _rng = ews_models::rng_lock();
    let d = device();
    for (name, size) in [
        ("wrn-16-1", 8),
        ("preact-resnet18", 8),
        ("resnet18", 8),
        ("resnet50", 8),
        ("imagenet-resnet18", 32),
    ] {
        let model = build::<B>(name, 10, &d);
        let x = images::<B>(4, size, &d);
        let space = model.subnet_space();
        let full_masks = space.full().to_masks::<B>(&space, &d).unwrap();
        for mode in [BnMode::Eval, BnMode::BatchStats] {
            let full = model.forward(x.clone(), mode).into_data();
            let via_masks = model
                .forward_subnet(x.clone(), &full_masks, mode)
                .into_data();
            assert_eq!(
                full, via_masks,
                "{name} {mode:?}: all-kept subnet must equal the full forward"
            );
        }
        let subnet = space.random(0.7, &mut StdRng::seed_from_u64(1));
        let masks = subnet.to_masks::<B>(&space, &d).unwrap();
        let full = model.forward(x.clone(), BnMode::Eval);
        let sub = model.forward_subnet(x.clone(), &masks, BnMode::Eval);
        assert!(
            max_abs_diff(full, sub) > 1e-4,
            "{name}: masked forward must differ from the full one"
        );
    }
}

#[test]
fn masking_channels_equals_zeroing_the_middle_conv_inputs() {
    let _rng = ews_models::rng_lock();
    let d = device();
    for (name, rho) in [
        ("wrn-16-1", 0.7),
        ("wrn-16-1", 0.5),
        ("preact-resnet18", 0.3),
        ("resnet18", 0.7),
        ("resnet50", 0.7),
    ] {
        let model = build::<B>(name, 10, &d);
        let x = images::<B>(3, 8, &d);
        let space = model.subnet_space();
        let mut rng = StdRng::seed_from_u64(11);
        let mut subnet = space.random(rho, &mut rng);
        if !model.arch.is_preactivation() {
            // For post-activation blocks a dropped residual path is not the same as zero
            // conv2 weights (bn2 adds its shift): compare channel masks only.
            for block in &mut subnet.blocks {
                block.paths = vec![0, 1];
            }
        } else {
            // Keep the skip path: dropping it is covered by the test below.
            for block in &mut subnet.blocks {
                if !block.paths.contains(&1) {
                    block.paths = vec![1];
                }
            }
        }
        let masks = subnet.to_masks::<B>(&space, &d).unwrap();
        let masked = model.forward_subnet(x.clone(), &masks, BnMode::Eval);
        let reference = zero_conv2_inputs(model, &subnet).forward(x, BnMode::Eval);
        masked
            .into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-4));
    }
}

#[test]
fn dropped_paths_change_the_output_and_keep_shapes() {
    let _rng = ews_models::rng_lock();
    let d = device();
    let model = build::<B>("wrn-16-1", 10, &d);
    let space = model.subnet_space();
    let x = images::<B>(2, 8, &d);
    let full = model.forward(x.clone(), BnMode::Eval);
    for dropped in [0usize, 1] {
        let mut subnet = space.full();
        subnet.blocks[3].paths = vec![1 - dropped];
        let masks = subnet.to_masks::<B>(&space, &d).unwrap();
        assert!(!masks.blocks[3].paths[dropped]);
        let out = model.forward_subnet(x.clone(), &masks, BnMode::Eval);
        assert_eq!(out.dims(), [2, 10]);
        assert!(
            max_abs_diff(out, full.clone()) > 1e-5,
            "dropping path {dropped} must matter"
        );
    }
    // The exact rounding drops one of the two paths in every block at rho <= 0.5, the
    // release's ceil(2 * (rho + 1e-6)) only below 0.5.
    for (width, paths) in [
        (ews_models::SubnetWidth::exact(0.5), 1),
        (ews_models::SubnetWidth::new(0.5), 2),
        (ews_models::SubnetWidth::new(0.3), 1),
    ] {
        let s = space.random(width, &mut StdRng::seed_from_u64(2));
        assert!(s.blocks.iter().all(|b| b.paths.len() == paths), "{width}");
        space.validate(&s, Some(width)).unwrap();
    }
}

fn bn_state<Bk: Backend>(model: &Network<Bk>) -> Vec<TensorData> {
    let mut out = Vec::new();
    let mut push = |bn: &BatchNorm2d<Bk>| {
        out.push(bn.running_mean.value_sync().into_data());
        out.push(bn.running_var.value_sync().into_data());
        out.push(bn.num_batches_tracked.value_sync().into_data());
    };
    for stage in &model.stages {
        for block in stage {
            match block {
                ews_models::Block::PreAct(b) => {
                    push(&b.bn1);
                    push(&b.bn2)
                }
                ews_models::Block::Basic(b) => {
                    push(&b.bn1);
                    push(&b.bn2)
                }
                ews_models::Block::Bottleneck(b) => {
                    push(&b.bn1);
                    push(&b.bn2);
                    push(&b.bn3)
                }
            }
        }
    }
    if let Some(bn) = &model.head_bn {
        push(bn);
    }
    if let Some(bn) = &model.stem_bn {
        push(bn);
    }
    out
}

#[test]
fn batch_norm_modes_treat_running_statistics_as_specified() {
    let _rng = ews_models::rng_lock();
    let d = burn::backend::flex::FlexDevice;
    for name in ["wrn-16-1", "resnet18"] {
        let model = build::<AB>(name, 10, &d);
        let x = images::<AB>(4, 8, &d);
        let space = model.subnet_space();
        let masks = space
            .random(0.7, &mut StdRng::seed_from_u64(5))
            .to_masks::<AB>(&space, &d)
            .unwrap();
        let before = bn_state(&model);

        // (b) subnet passes and batch-statistics passes leave the statistics untouched.
        let stats_out = model.forward(x.clone(), BnMode::BatchStats);
        let _ = model.forward_subnet(x.clone(), &masks, BnMode::BatchStats);
        assert_eq!(
            bn_state(&model),
            before,
            "{name}: BatchStats mode moved running statistics"
        );

        // (c) evaluation with input gradients (attacks) leaves them untouched too.
        let xg = x.clone().require_grad();
        let loss = model.forward(xg.clone(), BnMode::Eval).sum();
        let grads = loss.backward();
        let gx = xg.grad(&grads).expect("input gradient in eval mode");
        assert!(gx.abs().sum().into_scalar().elem::<f32>() > 0.0);
        assert_eq!(
            bn_state(&model),
            before,
            "{name}: Eval mode moved running statistics"
        );

        // (a) training mode updates them, with the same output as batch statistics.
        let train_out = model.forward(x.clone(), BnMode::Train);
        train_out
            .into_data()
            .assert_approx_eq::<f32>(&stats_out.into_data(), Tolerance::absolute(1e-5));
        let after = bn_state(&model);
        assert_ne!(
            after, before,
            "{name}: Train mode must update running statistics"
        );
        let tracked: Vec<f32> = after[2].to_vec().unwrap();
        assert_eq!(tracked, vec![1.0]);
    }
}

#[test]
fn running_statistics_follow_pytorch() {
    let _rng = ews_models::rng_lock();
    let d = device();
    let bn = BatchNorm2d::<B>::new(3, &d);
    let values: Vec<f32> = (0..2 * 3 * 2 * 2)
        .map(|i| ((i * 37 % 23) as f32) / 7.0)
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [2, 3, 2, 2]), &d);
    let y = bn.forward(x, BnMode::Train);
    for c in 0..3 {
        let xs: Vec<f64> = (0..2)
            .flat_map(|n| (0..4).map(move |k| (n, k)))
            .map(|(n, k)| values[n * 12 + c * 4 + k] as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / 8.0;
        let var_biased = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0;
        let var_unbiased = var_biased * 8.0 / 7.0;
        let rm: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
        let rv: Vec<f32> = bn.running_var.value_sync().into_data().to_vec().unwrap();
        assert!((rm[c] as f64 - 0.1 * mean).abs() < 1e-5);
        assert!((rv[c] as f64 - (0.9 + 0.1 * var_unbiased)).abs() < 1e-5);
        let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
        let expect = (xs[0] - mean) / (var_biased + 1e-5).sqrt();
        assert!((out[c * 4] as f64 - expect).abs() < 1e-4);
    }
}

#[test]
fn dropout_acts_only_in_full_training_passes() {
    let _rng = ews_models::rng_lock();
    let d = device();
    B::seed(&d, 3);
    let model: Network<B> = NetworkConfig::new("wrn-16-1".parse().unwrap())
        .with_dropout(0.3)
        .init(&d)
        .unwrap();
    let x = images::<B>(4, 8, &d);
    let a = model.forward(x.clone(), BnMode::Train);
    let b = model.forward(x.clone(), BnMode::Train);
    assert!(
        max_abs_diff(a, b) > 1e-6,
        "dropout must be random in training"
    );
    let space = model.subnet_space();
    let masks = space.full().to_masks::<B>(&space, &d).unwrap();
    let s1 = model
        .forward_subnet(x.clone(), &masks, BnMode::BatchStats)
        .into_data();
    let s2 = model
        .forward_subnet(x.clone(), &masks, BnMode::BatchStats)
        .into_data();
    assert_eq!(s1, s2);
    assert_eq!(
        model.forward(x.clone(), BnMode::Eval).into_data(),
        model.forward(x, BnMode::Eval).into_data()
    );
}

#[test]
fn masked_channels_get_no_gradient_through_the_subnet() {
    let _rng = ews_models::rng_lock();
    let d = burn::backend::flex::FlexDevice;
    let model = build::<AB>("wrn-16-1", 10, &d);
    let space = model.subnet_space();
    let mut subnet = space.random(0.7, &mut StdRng::seed_from_u64(9));
    for block in &mut subnet.blocks {
        block.paths = vec![0, 1];
    }
    let masks = subnet.to_masks::<AB>(&space, &d).unwrap();
    let x = images::<AB>(4, 8, &d);
    let loss = model
        .forward_subnet(x, &masks, BnMode::BatchStats)
        .powf_scalar(2.0)
        .sum();
    let grads = loss.backward();
    let ews_models::Block::PreAct(block) = &model.stages[1][1] else {
        panic!("preact block")
    };
    let grad = block.conv2.weight.grad(&grads).unwrap();
    let per_input: Vec<f32> = grad
        .abs()
        .sum_dim(0)
        .sum_dim(2)
        .sum_dim(3)
        .into_data()
        .to_vec()
        .unwrap();
    let kept = &subnet.blocks[3].channels[0][0];
    for (c, g) in per_input.iter().enumerate() {
        if kept.contains(&c) {
            assert!(*g > 0.0, "kept channel {c} must get gradient");
        } else {
            assert_eq!(*g, 0.0, "masked channel {c} must get no gradient");
        }
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let _rng = ews_models::rng_lock();
    let d = device();
    let arch: Architecture = "wrn-16-1".parse().unwrap();
    assert!(
        NetworkConfig::new(arch)
            .with_num_classes(0)
            .init::<B>(&d)
            .is_err()
    );
    assert!(
        NetworkConfig::new(arch)
            .with_dropout(1.0)
            .init::<B>(&d)
            .is_err()
    );
    let bad = Normalization {
        mean: [0.0; 3],
        std: [1.0, 0.0, 1.0],
    };
    let err = NetworkConfig::new(arch)
        .with_normalization(bad)
        .init::<B>(&d)
        .unwrap_err();
    assert!(err.to_string().contains("normalization"));
}

#[test]
fn weights_round_trip_through_burn_checkpoints() {
    let _rng = ews_models::rng_lock();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mpk");
    let model = build::<B>("wrn-16-1", 10, &d);
    let x = images::<B>(4, 8, &d);
    let _ = model.forward(x.clone(), BnMode::Train); // non-trivial running statistics
    save_weights(&model, &path).unwrap();
    B::seed(&d, 99);
    let fresh: Network<B> = NetworkConfig::new(model.arch)
        .with_normalization(Normalization::cifar10())
        .init(&d)
        .unwrap();
    assert_ne!(
        fresh.forward(x.clone(), BnMode::Eval).into_data(),
        model.forward(x.clone(), BnMode::Eval).into_data()
    );
    let loaded = load_weights(fresh, &path, &d).unwrap();
    assert_eq!(
        loaded.forward(x.clone(), BnMode::Eval).into_data(),
        model.forward(x, BnMode::Eval).into_data()
    );
    assert_eq!(bn_state(&loaded), bn_state(&model));

    // Another architecture or a damaged file gives an error naming the file.
    let other: Network<B> = NetworkConfig::new("wrn-16-2".parse().unwrap())
        .init(&d)
        .unwrap();
    let err = load_weights(other, &path, &d).unwrap_err().to_string();
    assert!(err.contains("model.mpk") && err.contains("shape"), "{err}");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let fresh: Network<B> = NetworkConfig::new(model.arch).init(&d).unwrap();
    let err = load_weights(fresh, &path, &d).unwrap_err().to_string();
    assert!(err.contains("model.mpk"), "{err}");
}

#[test]
fn safetensors_use_pytorch_names_and_round_trip() {
    let _rng = ews_models::rng_lock();
    let d = device();
    let dir = tempfile::tempdir().unwrap();
    type Expected<'a> = &'a [(&'a str, &'a [usize])];
    let cases: [(&str, Expected); 3] = [
        (
            "preact-resnet18",
            &[
                ("conv1.weight", &[64, 3, 3, 3]),
                ("layer2.0.shortcut.0.weight", &[128, 64, 1, 1]),
                ("layer4.1.bn2.running_var", &[512]),
                ("layer1.0.bn1.num_batches_tracked", &[]),
                ("bn.weight", &[512]),
                ("linear.weight", &[10, 512]),
                ("linear.bias", &[10]),
            ],
        ),
        (
            "resnet50",
            &[
                ("bn1.running_mean", &[64]),
                ("layer1.0.downsample.0.weight", &[256, 64, 1, 1]),
                ("layer1.0.downsample.1.weight", &[256]),
                ("layer3.5.conv3.weight", &[1024, 256, 1, 1]),
                ("fc.weight", &[10, 2048]),
            ],
        ),
        (
            "wrn-16-2",
            &[
                ("block1.layer.0.convShortcut.weight", &[32, 16, 1, 1]),
                ("block3.layer.1.conv2.weight", &[128, 128, 3, 3]),
                ("bn1.bias", &[128]),
                ("fc.weight", &[10, 128]),
            ],
        ),
    ];
    for (name, expected) in cases {
        let model = build::<B>(name, 10, &d);
        let state = pytorch_state_dict(&model);
        for (key, shape) in expected {
            let (got, _) = state
                .get(*key)
                .unwrap_or_else(|| panic!("{name}: no tensor {key}"));
            assert_eq!(got.as_slice(), *shape, "{name}: {key}");
        }
        // Trainable entries add up to the parameter count (buffers excluded).
        let total: usize = state
            .iter()
            .filter(|(k, _)| {
                !k.ends_with("running_mean")
                    && !k.ends_with("running_var")
                    && !k.ends_with("num_batches_tracked")
            })
            .map(|(_, (s, _))| s.iter().product::<usize>())
            .sum();
        assert_eq!(total, num_params(&model));
    }

    let model = build::<B>("wrn-16-1", 10, &d);
    let x = images::<B>(2, 8, &d);
    let _ = model.forward(x.clone(), BnMode::Train);
    let path = dir.path().join("w.safetensors");
    export_safetensors(&model, &path).unwrap();
    // The same weights give the same bytes (the header's keys in one order).
    for _ in 0..4 {
        let again = dir.path().join("again.safetensors");
        export_safetensors(&model, &again).unwrap();
        assert!(std::fs::read(&again).unwrap() == std::fs::read(&path).unwrap());
    }
    B::seed(&d, 1234);
    let fresh: Network<B> = NetworkConfig::new(model.arch)
        .with_normalization(Normalization::cifar10())
        .init(&d)
        .unwrap();
    let loaded = import_safetensors(fresh, &path).unwrap();
    assert_eq!(
        loaded.forward(x.clone(), BnMode::Eval).into_data(),
        model.forward(x, BnMode::Eval).into_data()
    );
    assert_eq!(bn_state(&loaded), bn_state(&model));

    let wrong: Network<B> = NetworkConfig::new(model.arch)
        .with_num_classes(100)
        .init(&d)
        .unwrap();
    let err = import_safetensors(wrong, &path).unwrap_err().to_string();
    assert!(
        err.contains("fc.weight") && err.contains("w.safetensors"),
        "{err}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    let fresh: Network<B> = NetworkConfig::new(model.arch).init(&d).unwrap();
    assert!(
        import_safetensors(fresh, &path)
            .unwrap_err()
            .to_string()
            .contains("w.safetensors")
    );
}

#[test]
fn imported_weights_keep_training_on_autodiff() {
    let _rng = ews_models::rng_lock();
    let d = burn::backend::flex::FlexDevice;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let model = build::<AB>("wrn-16-1", 10, &d);
    export_safetensors(&model, &path).unwrap();
    let loaded = import_safetensors(build::<AB>("wrn-16-1", 10, &d), &path).unwrap();
    let loss = loaded.forward(images::<AB>(2, 8, &d), BnMode::Train).sum();
    let grads = loss.backward();
    assert!(
        loaded.classifier.weight.grad(&grads).is_some(),
        "imported parameters must stay trainable"
    );
}

#[test]
fn modules_are_generic_over_backends() {
    let _rng = ews_models::rng_lock();
    // The same code on the second CPU backend gives the same parameter count and shapes.
    let d = burn::backend::ndarray::NdArrayDevice::Cpu;
    let model = build::<burn::backend::NdArray>("wrn-16-1", 10, &d);
    assert_eq!(
        num_params(&model),
        num_params(&build::<B>("wrn-16-1", 10, &device()))
    );
    let out = model.forward(images(2, 8, &d), BnMode::Eval);
    assert_eq!(out.dims(), [2, 10]);
    assert!(
        model.num_params() > num_params(&model),
        "burn counts BN buffers too"
    );
}

/// Reads an f32 tensor from a safetensors file as (shape, values).
fn read_f32(file: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = file
        .tensor(name)
        .unwrap_or_else(|_| panic!("golden tensor {name}"));
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (view.shape().to_vec(), values)
}

#[test]
fn pytorch_named_weights_reproduce_the_numpy_reference() {
    let _rng = ews_models::rng_lock();
    // Golden files from tests/golden/make_wrn_golden.py (numpy, PyTorch layout and names).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let d = device();
    let model: Network<B> = NetworkConfig::new("wrn-10-1".parse().unwrap())
        .with_normalization(Normalization::cifar10())
        .init(&d)
        .unwrap();
    let model = import_safetensors(model, &dir.join("wrn10_1.safetensors")).unwrap();
    let bytes = std::fs::read(dir.join("wrn10_1_expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (shape, x) = read_f32(&expected, "golden.x");
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, shape), &d);
    let check = |got: Tensor<B, 2>, name: &str| {
        let (shape, want) = read_f32(&expected, name);
        got.into_data()
            .assert_approx_eq::<f32>(&TensorData::new(want, shape), Tolerance::absolute(1e-4));
    };
    check(model.forward(x.clone(), BnMode::Eval), "golden.eval_logits");
    check(
        model.forward(x.clone(), BnMode::BatchStats),
        "golden.train_logits",
    );

    let space = model.subnet_space();
    let mut subnet = space.full();
    for (block, choice) in space.blocks.iter().zip(subnet.blocks.iter_mut()) {
        let (_, mask) = read_f32(&expected, &format!("golden.mask.{}", block.name));
        choice.channels[0][0] = (0..mask.len()).filter(|&c| mask[c] == 1.0).collect();
    }
    space.validate(&subnet, Some(0.7.into())).unwrap();
    let masks = subnet.to_masks::<B>(&space, &d).unwrap();
    check(
        model.forward_subnet(x, &masks, BnMode::Eval),
        "golden.subnet_logits",
    );
}

/// Every float parameter's gradient, flattened, in visiting order.
struct GradientCollector<'a> {
    grads: &'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: Vec<Vec<f32>>,
}

impl burn::module::ModuleVisitor<AB> for GradientCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<AB, D>>) {
        let grad = param.val().grad(self.grads);
        let n = param.val().shape().num_elements();
        self.out.push(match grad {
            Some(g) => g.into_data().to_vec().unwrap(),
            None => vec![0.0; n],
        });
    }
}

#[test]
fn sliced_subnets_match_masked_ones_in_outputs_and_gradients() {
    let _rng = ews_models::rng_lock();
    use ews_models::SubnetExecution;
    let d = burn::backend::flex::FlexDevice;
    // Pre-activation (WideResNet), basic and bottleneck blocks. ResNet-50 needs 32 px and 4
    // images: with batch statistics over fewer values (16 px and 3 images: 12 per channel in
    // the last stage) float rounding differences between the two passes grew into a 0.6%
    // gradient gap on an AMD EPYC machine. ResNet-18 at 8 px and 3 images normalised its last
    // stage over 3 values, which turned the rounding of the empty-channel check below into
    // logit gaps of 2e-5 to 1.3e-4 depending on the random draw; 16 px and 4 images give 16.
    for (name, size, batch) in [("wrn-16-2", 8, 3), ("resnet18", 16, 4), ("resnet50", 32, 4)] {
        let model = build::<AB>(name, 10, &d);
        let space = model.subnet_space();
        let mut subnet = space.random(
            ews_models::SubnetWidth::exact(0.5),
            &mut StdRng::seed_from_u64(11),
        );
        // Keep both paths in most blocks so the sliced residual branches are exercised,
        // drop the residual path in one.
        for block in &mut subnet.blocks {
            block.paths = vec![0, 1];
        }
        subnet.blocks[1].paths = vec![1];
        let x = images::<AB>(batch, size, &d);
        // A loss linear in the logits: a non-linear one (e.g. z sin z) turns the rounding
        // differences of large initial logits into unrelated gradients (seen on an AMD EPYC
        // machine for ResNet-50), which would test the loss, not the two passes.
        let coefficients =
            Tensor::<AB, 2>::random([batch, 10], Distribution::Uniform(-1.0, 1.0), &d);
        for mode in [BnMode::Eval, BnMode::BatchStats, BnMode::Train] {
            let run = |execution: SubnetExecution, x: Tensor<AB, 4>| {
                let masks = subnet.to_masks_as::<AB>(&space, &d, execution).unwrap();
                let logits = model.forward_subnet(x, &masks, mode);
                let loss = (logits.clone() * coefficients.clone()).sum();
                let grads = loss.backward();
                let mut collector = GradientCollector {
                    grads: &grads,
                    out: Vec::new(),
                };
                model.visit(&mut collector);
                (logits.inner(), collector.out)
            };
            let (masked, masked_grads) = run(SubnetExecution::Masked, x.clone());
            let (sliced, sliced_grads) = run(SubnetExecution::Sliced, x.clone());
            let diff = max_abs_diff(masked.clone(), sliced);
            let scale = masked.abs().max().into_scalar().elem::<f32>();
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{name} {mode:?}: logits differ by {diff} (scale {scale})"
            );
            assert_eq!(masked_grads.len(), sliced_grads.len());
            // The accumulation order differs between the passes (other channel counts), and
            // a deep network at initialisation turns such rounding differences into gradient
            // changes wherever a ReLU input sits near zero: the yardstick is how far the same
            // masked pass moves when the input changes by one part in a million (ResNet-50:
            // about 0.5% in Eval, 2% in BatchStats on an AMD EPYC). A wrong channel or path
            // differs by O(1).
            let (_, nudged_grads) = run(SubnetExecution::Masked, x.clone() * (1.0 + 1e-6));
            let relative = |a: &[f32], b: &[f32]| {
                let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
                norm(&mut a.iter().zip(b).map(|(a, b)| (a - b) as f64))
                    / norm(&mut a.iter().map(|&x| x as f64)).max(1e-6)
            };
            let sensitivity = masked_grads
                .iter()
                .zip(&nudged_grads)
                .map(|(a, b)| relative(a, b))
                .fold(0.0, f64::max);
            let allowed = (3.0 * sensitivity).max(2e-3);
            for (i, (a, b)) in masked_grads.iter().zip(&sliced_grads).enumerate() {
                let gap = relative(a, b);
                assert!(
                    gap <= allowed,
                    "{name} {mode:?}: gradient of parameter {i} differs by {gap} of its norm \
                     (allowed {allowed}, sensitivity to a 1e-6 input change {sensitivity})"
                );
            }
        }
        // A kept residual path with no kept channel: sliced passes mask it to zero too.
        let mut empty = subnet.clone();
        empty.blocks[2].paths = vec![0, 1];
        empty.blocks[2].channels[0][0].clear();
        let logits = |execution| {
            let masks = empty.to_masks_as::<AB>(&space, &d, execution).unwrap();
            model.forward_subnet(x.clone(), &masks, BnMode::BatchStats)
        };
        let diff = max_abs_diff(
            logits(SubnetExecution::Masked),
            logits(SubnetExecution::Sliced),
        );
        assert!(diff < 1e-4, "{name}: empty channel set differs by {diff}");

        // A sliced subnet really is a subnet: it differs from the full network.
        let masks = subnet
            .to_masks_as::<AB>(&space, &d, SubnetExecution::Sliced)
            .unwrap();
        let full = model.forward(x.clone(), BnMode::BatchStats);
        let sub = model.forward_subnet(x.clone(), &masks, BnMode::BatchStats);
        assert!(max_abs_diff(full, sub) > 1e-3, "{name}");
    }
}

#[test]
fn subnet_execution_parses_and_prints() {
    let _rng = ews_models::rng_lock();
    use ews_models::SubnetExecution;
    for e in [SubnetExecution::Masked, SubnetExecution::Sliced] {
        assert_eq!(e.to_string().parse::<SubnetExecution>().unwrap(), e);
    }
    assert!(
        "pruned"
            .parse::<ews_models::SubnetExecution>()
            .unwrap_err()
            .contains("masked or sliced")
    );
}

#[test]
fn bf16_convolutions_track_f32_and_keep_f32_parameters() {
    let _rng = ews_models::rng_lock();
    use burn::module::AutodiffModule;
    use burn::optim::{GradientsParams, Optimizer, SgdConfig};
    use ews_models::{Precision, SubnetExecution};
    let d = burn::backend::flex::FlexDevice;
    let model = build::<AB>("wrn-10-2", 10, &d);
    let x = images::<AB>(4, 8, &d);
    let full = model.forward(x.clone(), BnMode::BatchStats);
    let half = model.clone().with_precision(Precision::Bf16).unwrap();
    assert_eq!(half.valid().precision, Precision::Bf16);
    let logits = half.forward(x.clone(), BnMode::BatchStats);
    assert_eq!(logits.dtype(), burn::tensor::DType::F32);
    let scale = full.clone().abs().max().into_scalar().elem::<f32>();
    let diff = max_abs_diff(full.clone(), logits.clone());
    // bf16 keeps 8 bits of mantissa: errors of a few percent of the logit scale.
    assert!(
        diff > 0.0 && diff < 0.1 * scale,
        "diff {diff}, scale {scale}"
    );

    // Gradients reach the f32 parameters and point the same way as in f32.
    let grads_of = |m: &Network<AB>| {
        let loss = m
            .forward(x.clone(), BnMode::BatchStats)
            .powf_scalar(2.0)
            .sum();
        let grads = loss.backward();
        let mut collector = GradientCollector {
            grads: &grads,
            out: Vec::new(),
        };
        m.visit(&mut collector);
        collector.out.concat()
    };
    let (g32, g16) = (grads_of(&model), grads_of(&half));
    let dot: f64 = g32.iter().zip(&g16).map(|(a, b)| (a * b) as f64).sum();
    let norm = |g: &[f32]| g.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
    let cosine = dot / (norm(&g32) * norm(&g16));
    // Measured 0.985 on this tiny batch; an unrelated gradient would be near 0.
    assert!(cosine > 0.95, "gradient cosine {cosine}");

    // An optimizer step keeps f32 parameters and the precision setting.
    let grads = GradientsParams::from_grads(
        half.forward(x.clone(), BnMode::Train).sum().backward(),
        &half,
    );
    let stepped = SgdConfig::new().init().step(0.1, half.clone(), grads);
    assert_eq!(stepped.precision, Precision::Bf16);
    assert_eq!(
        stepped.stem_conv.weight.val().dtype(),
        burn::tensor::DType::F32
    );

    // Sliced subnets run in bf16 too.
    let space = half.subnet_space();
    let masks = space
        .random(0.5, &mut StdRng::seed_from_u64(2))
        .to_masks_as::<AB>(&space, &d, SubnetExecution::Sliced)
        .unwrap();
    let sub = half.forward_subnet(x, &masks, BnMode::BatchStats);
    assert!(
        sub.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    );

    assert!(
        "fp16"
            .parse::<Precision>()
            .unwrap_err()
            .contains("f32 or bf16")
    );
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
}
