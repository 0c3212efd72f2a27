//! The flex max-pool kernel and the per-image input normalisation against burn's own ops.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use ews_models::pool::{self, normalise_input};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// burn's max pool (no dilation, floor mode).
fn burn_pool<B: Backend>(
    x: Tensor<B, 4>,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
) -> Tensor<B, 4> {
    burn::tensor::module::max_pool2d(x, k, s, p, [1, 1], false)
}

fn values<B: Backend>(t: Tensor<B, 4>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().to_vec::<f32>().unwrap())
}

/// The pools of the networks (AlexNet's 3x3/2, the ImageNet ResNet stem's 3x3/2 pad 1) and
/// random kernels, strides, paddings and sizes, odd and even.
/// Input shape, kernel, stride, padding.
type Case = ([usize; 4], [usize; 2], [usize; 2], [usize; 2]);

fn cases() -> Vec<Case> {
    let mut cases = vec![
        ([3, 4, 55, 55], [3, 3], [2, 2], [0, 0]),
        ([2, 5, 112, 112], [3, 3], [2, 2], [1, 1]),
        ([1, 1, 13, 13], [3, 3], [2, 2], [0, 0]),
        ([2, 3, 8, 8], [2, 2], [2, 2], [0, 0]),
        ([1, 2, 7, 9], [1, 1], [1, 1], [0, 0]),
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..40 {
        let k = [rng.random_range(1..=5), rng.random_range(1..=5)];
        let s = [rng.random_range(1..=3), rng.random_range(1..=3)];
        let p = [
            rng.random_range(0..=k[0] / 2),
            rng.random_range(0..=k[1] / 2),
        ];
        let x = [
            rng.random_range(1..=3),
            rng.random_range(1..=4),
            rng.random_range(k[0]..=20),
            rng.random_range(k[1]..=20),
        ];
        cases.push((x, k, s, p));
    }
    cases
}

#[test]
fn flex_max_pool_equals_burns_on_every_shape() {
    let device = Default::default();
    for (shape, k, s, p) in cases() {
        let x = Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let ours = values(pool::max_pool2d(x.clone(), k, s, p));
        let burn = values(burn_pool(x.clone(), k, s, p));
        assert_eq!(
            ours, burn,
            "input {shape:?}, kernel {k:?}, stride {s:?}, padding {p:?}"
        );
        // A non-contiguous input (H and W swapped, and the window with them) pools the same.
        let swapped = x.swap_dims(2, 3);
        let flip = |[a, b]: [usize; 2]| [b, a];
        let (k, s, p) = (flip(k), flip(s), flip(p));
        let ours = values(pool::max_pool2d(swapped.clone(), k, s, p));
        assert_eq!(
            ours,
            values(burn_pool(swapped, k, s, p)),
            "swapped {shape:?}"
        );
    }
}

#[test]
fn max_pool_takes_burns_path_elsewhere_and_keeps_its_gradient() {
    let device = Default::default();
    let data = TensorData::new(
        (0..2 * 3 * 9 * 9).map(|v| (v * 37 % 101) as f32).collect(),
        [2, 3, 9, 9],
    );
    let x = Tensor::<NdArray, 4>::from_data(data.clone(), &device);
    let reference = values(burn_pool(x.clone(), [3, 3], [2, 2], [1, 1]));
    assert_eq!(
        values(pool::max_pool2d(x, [3, 3], [2, 2], [1, 1])),
        reference
    );
    let x = Tensor::<Autodiff<Flex>, 4>::from_data(data, &Default::default()).require_grad();
    let y = pool::max_pool2d(x.clone(), [3, 3], [2, 2], [1, 1]);
    let grad = y.sum().backward();
    let dx = x.grad(&grad).unwrap().into_data().to_vec::<f32>().unwrap();
    // Each output sends 1 to its window's largest value: as many ones as outputs.
    assert_eq!(dx.iter().sum::<f32>(), (2 * 3 * 5 * 5) as f32);
}

#[test]
fn a_nan_in_the_window_gives_nan_as_in_pytorch() {
    let mut plane = vec![0.0f32; 25];
    plane[12] = f32::NAN; // the centre of a 5x5 plane
    plane[24] = 7.0;
    let (y, [oh, ow]) = pool::cpu::max_pool2d(&plane, [1, 5, 5], [3, 3], [2, 2], [0, 0]);
    assert_eq!([oh, ow], [2, 2]);
    // Every 3x3 window of stride 2 holds the centre; only the last one holds the 7 as well.
    assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
    // 2x2 windows 3 apart miss the centre: the NaN leaks nowhere.
    let (y, _) = pool::cpu::max_pool2d(&plane, [1, 5, 5], [2, 2], [3, 3], [0, 0]);
    assert_eq!(y, [0.0, 0.0, 0.0, 7.0]);
}

#[test]
#[should_panic(expected = "empty 0 x 4 planes")]
fn empty_planes_are_refused() {
    let _ = pool::cpu::max_pool2d(&[], [1, 0, 4], [1, 1], [1, 1], [0, 0]);
}

#[test]
#[should_panic(expected = "padding must be at most half the kernel")]
fn padding_over_half_the_kernel_is_refused() {
    let _ = pool::cpu::max_pool2d(&[0.0; 16], [1, 4, 4], [2, 2], [1, 1], [2, 2]);
}

#[test]
fn per_image_normalisation_gives_the_broadcast_values() {
    let device = Default::default();
    let stats = |v: [f32; 3]| {
        Tensor::<Flex, 4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), &device)
    };
    let (mean, std) = (stats([0.485, 0.456, 0.406]), stats([0.229, 0.224, 0.225]));
    for batch in [1, 2, 5] {
        let x =
            Tensor::<Flex, 4>::random([batch, 3, 6, 7], Distribution::Uniform(0.0, 1.0), &device);
        let broadcast = values((x.clone() - mean.clone()) / std.clone());
        assert_eq!(
            values(normalise_input(x, &mean, &std)),
            broadcast,
            "batch {batch}"
        );
    }
}
