//! The fused batch norm (flex) against the tensor-operation version (ndarray), in every mode,
//! forward and backward, with and without a channel subset.

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use ews_models::{BatchNorm2d, BnMode};

/// Deterministic values with an offset, so the mean is far from 0 (as after a convolution).
fn values(n: usize, salt: usize, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % 1000) as f32 / 250.0 - 2.0 + offset)
        .collect()
}

fn tensor<B: Backend, const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// A batch norm over 6 channels with non-trivial parameters and running statistics.
fn layer<B: Backend>() -> BatchNorm2d<B> {
    let bn = BatchNorm2d::new(6, &Default::default());
    let bn = BatchNorm2d {
        weight: Param::from_tensor(tensor(values(6, 1, 1.0), [6])),
        bias: Param::from_tensor(tensor(values(6, 2, 0.0), [6])),
        ..bn
    };
    bn.running_mean.update(tensor(values(6, 3, 0.5), [6]));
    bn.running_var.update(tensor(values(6, 4, 3.0), [6]));
    bn
}

/// Output, input gradient, weight and bias gradients, running mean and variance after one
/// pass of `mode` on `B`.
fn pass<B: AutodiffBackend>(mode: BnMode, kept: Option<&[i64]>) -> Vec<Vec<f32>> {
    let bn = layer::<B>();
    let width = kept.map_or(6, |k| k.len());
    let shape = [3, width, 5, 4];
    let x = tensor::<B, 4>(values(shape.iter().product(), 5, 7.0), shape).require_grad();
    let y = match kept {
        Some(kept) => {
            let kept = Tensor::<B, 1, Int>::from_data(
                TensorData::new(kept.to_vec(), [kept.len()]),
                &Default::default(),
            );
            bn.forward_kept(x.clone(), mode, &kept)
        }
        None => bn.forward(x.clone(), mode),
    };
    let r = tensor::<B, 4>(values(y.shape().num_elements(), 6, 0.0), y.dims());
    let grads = (y.clone() * r).sum().backward();
    let read = |t: Tensor<B::InnerBackend, 1>| t.into_data().to_vec::<f32>().unwrap();
    let read4 = |t: Tensor<B::InnerBackend, 4>| t.into_data().to_vec::<f32>().unwrap();
    vec![
        read4(y.inner()),
        read4(x.grad(&grads).unwrap()),
        read(bn.weight.val().grad(&grads).unwrap()),
        read(bn.bias.val().grad(&grads).unwrap()),
        read(bn.running_mean.value_sync().inner()),
        read(bn.running_var.value_sync().inner()),
        read(bn.num_batches_tracked.value_sync().inner()),
    ]
}

fn assert_agree(mode: BnMode, kept: Option<&[i64]>) {
    assert_lists_agree(
        &pass::<Autodiff<Flex>>(mode, kept),
        &pass::<Autodiff<NdArray>>(mode, kept),
        &format!("{mode:?} {kept:?}"),
    );
    // The same node under gradient checkpointing.
    assert_lists_agree(
        &pass::<Autodiff<Flex, BalancedCheckpointing>>(mode, kept),
        &pass::<Autodiff<NdArray>>(mode, kept),
        &format!("{mode:?} {kept:?}, checkpointing"),
    );
}

fn assert_lists_agree(fused: &[Vec<f32>], composed: &[Vec<f32>], what: &str) {
    assert_eq!(fused.len(), composed.len());
    let names = [
        "output",
        "input gradient",
        "weight gradient",
        "bias gradient",
        "running mean",
        "running var",
        "batches tracked",
    ];
    for ((name, a), b) in names.iter().zip(fused).zip(composed) {
        assert_eq!(a.len(), b.len(), "{what} {name}: lengths");
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= 2e-4 * scale,
                "{what} {name}[{i}]: fused {a}, composed {b}"
            );
        }
    }
}

#[test]
fn fused_batch_norm_matches_the_composed_one_in_every_mode() {
    let _rng = ews_models::rng_lock();
    for mode in [BnMode::Train, BnMode::BatchStats, BnMode::Eval] {
        assert_agree(mode, None);
    }
}

#[test]
fn fused_batch_norm_matches_on_a_channel_subset() {
    let _rng = ews_models::rng_lock();
    for mode in [BnMode::BatchStats, BnMode::Eval] {
        assert_agree(mode, Some(&[0, 2, 3, 5]));
    }
}

#[test]
fn the_fused_path_is_named_for_flex_only() {
    let _rng = ews_models::rng_lock();
    use ews_models::norm::kernels_of;
    if !ews_models::conv::fast_kernels_enabled() {
        assert_eq!(
            kernels_of::<Flex>(),
            "burn's tensor operations (EWS_KERNELS=burn)"
        );
        return;
    }
    assert_eq!(kernels_of::<Flex>(), "ews fused kernel (f32, CPU)");
    assert_eq!(
        kernels_of::<Autodiff<Flex>>(),
        "ews fused kernel (f32, CPU)"
    );
    assert_eq!(kernels_of::<NdArray>(), "burn's tensor operations");
}

/// Output, running mean, variance and batch count after one forward on an inference
/// backend (no autodiff) in `mode`.
fn plain_pass<B: Backend>(mode: BnMode) -> Vec<Vec<f32>> {
    let bn = layer::<B>();
    let x = tensor::<B, 4>(values(2 * 6 * 9, 8, 3.0), [2, 6, 3, 3]);
    let y = bn.forward(x, mode);
    let read = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().unwrap();
    vec![
        y.into_data().to_vec::<f32>().unwrap(),
        read(bn.running_mean.value_sync()),
        read(bn.running_var.value_sync()),
        read(bn.num_batches_tracked.value_sync()),
    ]
}

#[test]
fn inference_backends_agree_in_every_mode() {
    let _rng = ews_models::rng_lock();
    for mode in [BnMode::Train, BnMode::BatchStats, BnMode::Eval] {
        let (fused, composed) = (plain_pass::<Flex>(mode), plain_pass::<NdArray>(mode));
        for (a, b) in fused.iter().zip(&composed) {
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(b) {
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1.0),
                    "{mode:?}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn inference_backends_take_the_fused_path_too() {
    let _rng = ews_models::rng_lock();
    let x = tensor::<Flex, 4>(values(2 * 6 * 9, 8, 1.0), [2, 6, 3, 3]);
    let bn = layer::<Flex>();
    let y = bn
        .forward(x.clone(), BnMode::Eval)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let reference = layer::<NdArray>()
        .forward(
            tensor(x.into_data().to_vec::<f32>().unwrap(), [2, 6, 3, 3]),
            BnMode::Eval,
        )
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (a, b) in y.iter().zip(&reference) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}
