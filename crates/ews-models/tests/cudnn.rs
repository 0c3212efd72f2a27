//! GPU tests of the cuDNN convolutions against burn's own CUDA kernels. They need an NVIDIA GPU,
//! CUDA 13 (`CUDA_PATH`, libnvrtc) and libcudnn 9, so they are ignored by default:
//!
//! ```text
//! CUDARC_CUDA_VERSION=13000 cargo test -p ews-models --features cudnn --test cudnn -- --ignored
//! ```
//!
//! (`xtask/gpu-check.sh` runs them from binaries built elsewhere, in both stream modes.)
//! Tolerances are TF32's: cuDNN may use TF32 tensor cores for f32, as PyTorch does.
#![cfg(feature = "cudnn")]

use burn::backend::Autodiff;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::Backend;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use ews_models::conv::cudnn::{CubeCuda, FusionCuda};
use ews_models::conv::{self, with_burn_kernels};
use ews_models::{Architecture, BnMode, Network, NetworkConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What `ews` trains on with the `cuda` feature.
type Train = Autodiff<FusionCuda>;

/// `max |t|`.
fn max_abs<B: Backend, const D: usize>(t: Tensor<B, D>) -> f32 {
    t.abs().max().into_scalar().elem()
}

/// `max |a - b| / max |b|`.
fn relative_error<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    max_abs(a - b.clone()) / max_abs(b).max(1e-12)
}

/// A host-generated tensor (identical for both kernels, whatever the device's generator).
fn host_random<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let mut rng = StdRng::seed_from_u64(seed);
    let len = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// One convolution: batch, input channels (of which `used` are kept by slicing a larger
/// tensor, for the sliced-subnet shapes), output channels, size, kernel, stride, padding, and
/// whether the input arrives permuted (non-contiguous).
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    cin: usize,
    used: usize,
    cout: usize,
    size: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    permuted: bool,
}

fn cases() -> Vec<Case> {
    let case = |batch, cin, cout, size, kernel, stride, pad| Case {
        batch,
        cin,
        used: cin,
        cout,
        size,
        kernel,
        stride,
        pad,
        permuted: false,
    };
    let mut cases = vec![];
    for batch in [1, 128] {
        cases.push(case(batch, 64, 64, 32, 3, 1, 1));
        cases.push(case(batch, 64, 128, 32, 3, 2, 1));
        cases.push(case(batch, 64, 128, 32, 1, 2, 0));
        cases.push(case(batch, 128, 128, 16, 1, 1, 0));
        cases.push(case(batch, 3, 64, 32, 3, 1, 1));
        cases.push(case(batch, 16, 16, 9, 3, 1, 0));
    }
    cases.push(Case {
        permuted: true,
        ..case(8, 32, 48, 16, 3, 1, 1)
    });
    cases.push(Case {
        used: 45,
        ..case(16, 64, 64, 16, 3, 1, 1)
    });
    cases.push(Case {
        used: 45,
        permuted: true,
        ..case(16, 64, 45, 8, 3, 2, 1)
    });
    cases
}

/// Output, input gradient and weight gradient of `sum(conv(x, w) * r)`, on cuDNN or on burn's
/// kernels.
fn passes(case: &Case, burn: bool) -> [Tensor<FusionCuda, 4>; 3] {
    let device = Default::default();
    let run = || {
        // Permuted: NHWC memory seen as NCHW (non-contiguous); else packed NCHW.
        let x = if case.permuted {
            let nhwc = [case.batch, case.size, case.size, case.cin];
            host_random::<Train, 4>(nhwc, 1, &device).permute([0, 3, 1, 2])
        } else {
            let nchw = [case.batch, case.cin, case.size, case.size];
            host_random::<Train, 4>(nchw, 1, &device)
        };
        let x = x.slice([0..case.batch, 0..case.used]).require_grad();
        let w =
            host_random::<Train, 4>([case.cout, case.cin, case.kernel, case.kernel], 2, &device);
        let w = w.slice([0..case.cout, 0..case.used]).require_grad();
        let options = PaddedConvOptions::from(burn::tensor::ops::ConvOptions::new(
            [case.stride; 2],
            [case.pad; 2],
            [1, 1],
            1,
        ));
        let y = conv::conv2d(x.clone(), w.clone(), None, options);
        let r = host_random::<Train, 4>(y.dims(), 3, &device);
        let grads = (y.clone() * r).sum().backward();
        [y.inner(), x.grad(&grads).unwrap(), w.grad(&grads).unwrap()]
    };
    if burn { with_burn_kernels(run) } else { run() }
}

fn cudnn_in_use() {
    let status = conv::kernels_of::<FusionCuda>();
    assert!(status.starts_with("cuDNN"), "cuDNN is not in use: {status}");
    println!("convolutions: {status}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and libcudnn 9"]
fn cudnn_matches_burn_forward_and_both_gradients() {
    let _rng = ews_models::rng_lock();
    cudnn_in_use();
    for case in cases() {
        let ours = passes(&case, false);
        let burns = passes(&case, true);
        for ((name, a), b) in ["y", "dx", "dw"].iter().zip(ours).zip(burns) {
            let error = relative_error(a, b);
            println!("{case:?} {name}: relative error {error:.2e}");
            assert!(error < 1e-2, "{case:?} {name}: relative error {error}");
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU and libcudnn 9"]
fn cudnn_runs_without_fusion_and_in_bf16() {
    let _rng = ews_models::rng_lock();
    cudnn_in_use();
    let device = Default::default();
    let x = host_random::<CubeCuda, 4>([4, 16, 8, 8], 1, &device);
    let w = host_random::<CubeCuda, 4>([32, 16, 3, 3], 2, &device);
    let options = || {
        PaddedConvOptions::from(burn::tensor::ops::ConvOptions::new(
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        ))
    };
    let ours = conv::conv2d(x.clone(), w.clone(), None, options());
    let burns = with_burn_kernels(|| conv::conv2d(x.clone(), w.clone(), None, options()));
    let error = relative_error(ours, burns.clone());
    assert!(error < 1e-2, "CubeBackend: relative error {error}");

    let bf16 = burn::tensor::FloatDType::BF16;
    let ours = conv::conv2d(x.clone().cast(bf16), w.clone().cast(bf16), None, options());
    let error = relative_error(ours.cast(burn::tensor::FloatDType::F32), burns);
    println!("bf16 against f32: relative error {error:.2e}");
    assert!(error < 3e-2, "bf16: relative error {error}");
}

/// PreAct ResNet-18, CIFAR-shaped, seeded: identical weights for both kernels.
fn preact18() -> Network<Train> {
    let device = Default::default();
    Train::seed(&device, 5);
    let arch: Architecture = "preact-resnet18".parse().unwrap();
    NetworkConfig::new(arch)
        .with_num_classes(10)
        .init::<Train>(&device)
        .unwrap()
}

/// A seeded batch of 32 images and labels.
fn batch(seed: u64) -> (Tensor<Train, 4>, Tensor<Train, 1, Int>) {
    let device = Default::default();
    let x = host_random::<Train, 4>([32, 3, 32, 32], seed, &device).abs();
    let labels: Vec<i64> = (0..32)
        .map(|i| ((i as u64 * 7 + seed) % 10) as i64)
        .collect();
    (x, Tensor::from_data(TensorData::new(labels, [32]), &device))
}

fn loss(model: &Network<Train>, seed: u64) -> Tensor<Train, 1> {
    let (x, y) = batch(seed);
    let logits = model.forward(x, BnMode::Train);
    CrossEntropyLossConfig::new()
        .init(&Default::default())
        .forward(logits, y)
}

#[test]
#[ignore = "needs an NVIDIA GPU and libcudnn 9"]
fn preact_resnet18_gradients_agree() {
    let _rng = ews_models::rng_lock();
    cudnn_in_use();
    let step = || {
        let model = preact18();
        let grads = loss(&model, 1).backward();
        let stem = model.stem_conv.weight.grad(&grads).unwrap();
        let classifier = model.classifier.weight.grad(&grads).unwrap();
        (stem, classifier)
    };
    let (stem, classifier) = step();
    let (stem_burn, classifier_burn) = with_burn_kernels(step);
    let (e_stem, e_fc) = (
        relative_error(stem, stem_burn),
        relative_error(classifier, classifier_burn),
    );
    println!("stem weight grad error {e_stem:.2e}, classifier weight grad error {e_fc:.2e}");
    assert!(
        e_stem < 2e-2 && e_fc < 2e-2,
        "stem {e_stem}, classifier {e_fc}"
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU and libcudnn 9"]
fn preact_resnet18_loss_curves_agree_over_100_steps() {
    let _rng = ews_models::rng_lock();
    cudnn_in_use();
    let curve = || {
        let mut model = preact18();
        let mut optim = SgdConfig::new().init::<Train, Network<Train>>();
        let mut losses = Vec::new();
        for step in 0..100 {
            let loss = loss(&model, step % 8);
            losses.push(loss.clone().into_scalar().elem::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.02, model, grads);
        }
        losses
    };
    let ours = curve();
    let burns = with_burn_kernels(curve);
    println!("cuDNN loss curve: {ours:?}\nburn loss curve: {burns:?}");
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    for (step, (a, b)) in ours.iter().zip(&burns).enumerate() {
        assert!(
            (a - b).abs() <= 0.1 * b.abs() + 0.05,
            "step {step}: cuDNN {a}, burn {b}"
        );
    }
    let (tail_ours, tail_burn) = (mean(&ours[90..]), mean(&burns[90..]));
    assert!(
        (tail_ours - tail_burn).abs() <= 0.05 * tail_burn + 0.02,
        "last 10: {tail_ours} vs {tail_burn}"
    );
    assert!(
        tail_ours < ours[0],
        "the loss must fall: {} -> {tail_ours}",
        ours[0]
    );
}
