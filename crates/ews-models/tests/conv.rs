//! The fast convolution against burn's own and against finite differences.

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{Distribution, Tensor, TensorData};
use ews_models::conv::{self, ConvGeometry, cpu};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One convolution to check: input `[n, cin, h, w]`, `cout`, kernel, stride, padding
/// (start, end), dilation, bias.
#[derive(Clone, Copy, Debug)]
struct Case {
    x: [usize; 4],
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad_start: [usize; 2],
    pad_end: [usize; 2],
    dilation: [usize; 2],
    bias: bool,
}

impl Case {
    fn square(x: [usize; 4], cout: usize, kernel: usize, stride: usize, pad: usize) -> Self {
        Self {
            x,
            cout,
            kernel: [kernel; 2],
            stride: [stride; 2],
            pad_start: [pad; 2],
            pad_end: [pad; 2],
            dilation: [1, 1],
            bias: false,
        }
    }

    fn options(&self) -> PaddedConvOptions<2> {
        PaddedConvOptions::asymmetric(self.stride, self.pad_start, self.pad_end, self.dilation, 1)
    }

    fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.x[1], self.kernel[0], self.kernel[1]]
    }
}

/// The network shapes (PreAct ResNet / WRN / ResNet-50 stems and blocks, shrunk), odd
/// channel counts as sliced subnets make them, batches 1..64, asymmetric padding, dilation.
fn cases() -> Vec<Case> {
    let mut cases = vec![
        Case::square([2, 3, 16, 16], 8, 3, 1, 1),
        Case::square([1, 8, 8, 8], 16, 1, 1, 0),
        Case::square([3, 8, 8, 8], 16, 1, 2, 0),
        Case::square([2, 3, 20, 20], 8, 7, 2, 3),
        Case::square([5, 13, 4, 4], 7, 3, 1, 1),
        Case::square([64, 4, 4, 4], 6, 3, 1, 1),
        Case::square([7, 5, 9, 9], 11, 3, 2, 1),
        Case::square([1, 6, 6, 6], 5, 3, 1, 0),
        Case::square([4, 16, 1, 1], 8, 1, 1, 0),
    ];
    cases.push(Case {
        pad_start: [0, 2],
        pad_end: [1, 0],
        bias: true,
        ..Case::square([2, 3, 7, 6], 4, 3, 1, 0)
    });
    // Inputs smaller than the kernel: some kernel rows and columns read only padding.
    cases.push(Case {
        kernel: [1, 3],
        pad_end: [0, 3],
        ..Case::square([1, 1, 1, 1], 1, 1, 1, 0)
    });
    cases.push(Case {
        kernel: [1, 3],
        pad_start: [0, 3],
        ..Case::square([1, 1, 1, 1], 2, 1, 1, 0)
    });
    cases.push(Case::square([1, 1, 2, 2], 3, 7, 2, 3));
    cases.push(Case::square([2, 3, 1, 1], 4, 5, 2, 2));
    cases.push(Case {
        dilation: [2, 2],
        ..Case::square([1, 2, 2, 3], 3, 3, 2, 2)
    });
    cases.push(Case {
        dilation: [2, 2],
        ..Case::square([2, 3, 7, 7], 4, 3, 1, 2)
    });
    cases.push(Case {
        dilation: [2, 1],
        stride: [1, 2],
        bias: true,
        ..Case::square([3, 4, 9, 10], 5, 3, 1, 2)
    });
    cases
}

/// Seeded random shapes: batch 1..64, sides 1..14 (often smaller than the kernel), channels
/// 1..24, kernels 1/3/5/7, strides 1/2, padding 0..4 (sometimes asymmetric), dilation 1/2.
fn random_cases(count: usize) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(2026);
    let mut cases = Vec::new();
    while cases.len() < count {
        let kernel = [1, 3, 5, 7][rng.random_range(0..4)];
        let batch = [1, 2, 3, 7, 16, 64][rng.random_range(0..6)];
        let side = rng.random_range(1..14);
        let pad: [usize; 4] = std::array::from_fn(|_| rng.random_range(0..5));
        let symmetric = rng.random_bool(0.6);
        let case = Case {
            x: [
                batch,
                rng.random_range(1..24),
                side,
                side + rng.random_range(0..3),
            ],
            cout: rng.random_range(1..24),
            kernel: [kernel, kernel],
            stride: [rng.random_range(1..3), rng.random_range(1..3)],
            pad_start: [pad[0], pad[1]],
            pad_end: if symmetric {
                [pad[0], pad[1]]
            } else {
                [pad[2], pad[3]]
            },
            dilation: [rng.random_range(1..3), rng.random_range(1..3)],
            bias: rng.random_bool(0.3),
        };
        if ConvGeometry::new(case.x, case.weight_shape(), &case.options()).is_some() {
            cases.push(case);
        }
    }
    cases
}

fn random<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn assert_close(ours: Tensor<impl Backend, 4>, reference: Tensor<impl Backend, 4>, what: &str) {
    let ours = ours.into_data().to_vec::<f32>().unwrap();
    let reference = reference.into_data().to_vec::<f32>().unwrap();
    assert_close_slices(&ours, &reference, what);
}

fn assert_close_slices(ours: &[f32], reference: &[f32], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths");
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{what}: element {i} is {a}, burn says {b}"
        );
    }
}

#[test]
fn the_fast_path_runs_on_flex_and_its_autodiff_and_not_elsewhere() {
    let _rng = ews_models::rng_lock();
    if !conv::fast_kernels_enabled() {
        // EWS_KERNELS=burn: everything must take burn's path, and say so.
        assert_eq!(
            conv::kernels_of::<Flex>(),
            "burn's conv2d (EWS_KERNELS=burn)"
        );
        return;
    }
    assert_eq!(conv::kernels_of::<Flex>(), "ews im2col + gemm (f32, CPU)");
    assert_eq!(
        conv::kernels_of::<Autodiff<Flex>>(),
        "ews im2col + gemm (f32, CPU)"
    );
    assert_eq!(conv::kernels_of::<NdArray>(), "burn's conv2d");
}

#[test]
fn forward_matches_burn_on_flex_and_ndarray() {
    let _rng = ews_models::rng_lock();
    let device = Default::default();
    for case in cases().into_iter().chain(random_cases(40)) {
        Flex::seed(&device, 7);
        let x = random::<Flex, 4>(case.x, &device);
        let w = random::<Flex, 4>(case.weight_shape(), &device);
        let b = case.bias.then(|| random::<Flex, 1>([case.cout], &device));
        let ours = conv::conv2d(x.clone(), w.clone(), b.clone(), case.options());
        let burn = burn::tensor::module::conv2d(x.clone(), w.clone(), b.clone(), case.options());
        assert_close(ours.clone(), burn, &format!("forward {case:?}"));

        // Other backends take burn's path through the same function.
        let nd_device = Default::default();
        let nd = |t: Tensor<Flex, 4>| Tensor::<NdArray, 4>::from_data(t.into_data(), &nd_device);
        let nd_b = b.map(|b| Tensor::<NdArray, 1>::from_data(b.into_data(), &nd_device));
        let on_ndarray = conv::conv2d(nd(x), nd(w), nd_b, case.options());
        assert_close(on_ndarray, ours, &format!("ndarray {case:?}"));
    }
}

/// Forward and gradients of `case` on `AD` through our path and burn's, compared. With
/// `permuted`, `x` is a non-contiguous view (built as NHCW, then axes swapped).
fn check_gradients<AD: AutodiffBackend>(case: Case, permuted: bool) {
    let device = Default::default();
    AD::seed(&device, 11);
    let x = if permuted {
        let [n, c, h, w] = case.x;
        random::<AD, 4>([n, h, c, w], &device).swap_dims(1, 2)
    } else {
        random::<AD, 4>(case.x, &device)
    };
    let w = random::<AD, 4>(case.weight_shape(), &device);
    let b = case.bias.then(|| random::<AD, 1>([case.cout], &device));
    let run = |fast: bool| {
        let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
        let b = b.clone().map(|b| b.require_grad());
        let y = if fast {
            conv::conv2d(x.clone(), w.clone(), b.clone(), case.options())
        } else {
            burn::tensor::module::conv2d(x.clone(), w.clone(), b.clone(), case.options())
        };
        // A non-uniform upstream gradient: sum(y * r) with a fixed r.
        let r = Tensor::<AD, 4>::from_data(
            TensorData::new(
                (0..y.shape().num_elements())
                    .map(|i| ((i * 7919) % 13) as f32 - 6.0)
                    .collect(),
                y.dims(),
            ),
            &device,
        );
        let grads = (y.clone() * r).sum().backward();
        let gx = x.grad(&grads).unwrap();
        let gw = w.grad(&grads).unwrap();
        let gb = b.map(|b| b.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap());
        (y.inner(), gx, gw, gb)
    };
    let (y, gx, gw, gb) = run(true);
    let (y_ref, gx_ref, gw_ref, gb_ref) = run(false);
    assert_close(y, y_ref, &format!("forward {case:?}"));
    assert_close(gx, gx_ref, &format!("input gradient {case:?}"));
    assert_close(gw, gw_ref, &format!("weight gradient {case:?}"));
    assert_eq!(gb.is_some(), gb_ref.is_some());
    if let (Some(gb), Some(gb_ref)) = (gb, gb_ref) {
        assert_close_slices(&gb, &gb_ref, &format!("bias gradient {case:?}"));
    }
}

#[test]
fn gradients_match_burn_through_autodiff() {
    let _rng = ews_models::rng_lock();
    for case in cases().into_iter().chain(random_cases(40)) {
        check_gradients::<Autodiff<Flex>>(case, false);
    }
}

#[test]
fn gradients_match_with_checkpointing_and_non_contiguous_inputs() {
    let _rng = ews_models::rng_lock();
    for case in cases().into_iter().step_by(2) {
        check_gradients::<Autodiff<Flex, BalancedCheckpointing>>(case, false);
        check_gradients::<Autodiff<Flex>>(case, true);
    }
}

/// Which grouping and GEMM threading runs depends on the pool's size: one thread makes
/// groups of several images, more threads than images hand the threads to the GEMMs.
#[test]
fn every_thread_count_gives_the_same_numbers() {
    let _rng = ews_models::rng_lock();
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for case in cases() {
                check_gradients::<Autodiff<Flex>>(case, false);
            }
        });
    }
}

/// The filter gradient sums over groups of images in parallel; the sum must round the same
/// way every time, or a seeded training run drifts (it did: AugMix runs differed in the
/// 6th digit from run to run under rayon's work-stealing fold). 256 images of 8x8 make 64
/// groups, enough for the old fold to split differently within 30 calls.
#[test]
fn the_filter_gradient_is_bit_identical_from_run_to_run() {
    let _rng = ews_models::rng_lock();
    let case = Case::square([256, 8, 8, 8], 8, 3, 1, 1);
    let g = ConvGeometry::new(case.x, case.weight_shape(), &case.options()).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let (x, dy) = (draw(g.input_len()), draw(g.output_len()));
    for threads in [2, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let first = cpu::backward_filter(&g, &x, &dy);
            for _ in 0..30 {
                assert!(
                    cpu::backward_filter(&g, &x, &dy) == first,
                    "{threads} threads: the filter gradient changed between calls"
                );
            }
        });
    }
}

/// `sum(forward(x, w) * r)`, in f64 for the finite differences.
fn objective(g: &ConvGeometry, x: &[f32], w: &[f32], r: &[f32]) -> f64 {
    let y = cpu::forward(g, x, w, None);
    y.iter().zip(r).map(|(y, r)| *y as f64 * *r as f64).sum()
}

#[test]
fn kernels_match_finite_differences_on_tiny_shapes() {
    let _rng = ews_models::rng_lock();
    let mut rng = StdRng::seed_from_u64(3);
    let tiny = [
        Case::square([2, 2, 5, 5], 3, 3, 1, 1),
        Case::square([1, 3, 6, 6], 2, 3, 2, 1),
        Case::square([3, 2, 3, 3], 2, 1, 1, 0),
        Case {
            pad_start: [1, 0],
            pad_end: [0, 2],
            dilation: [1, 2],
            ..Case::square([2, 2, 5, 6], 2, 3, 1, 0)
        },
    ];
    for case in tiny {
        let g = ConvGeometry::new(case.x, case.weight_shape(), &case.options()).unwrap();
        let mut draw = |n: usize| {
            (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect::<Vec<_>>()
        };
        let (x, w, r) = (
            draw(g.input_len()),
            draw(g.weight_len()),
            draw(g.output_len()),
        );
        let dx = cpu::backward_data(&g, &w, &r);
        let dw = cpu::backward_filter(&g, &x, &r);
        let h = 1e-2f32;
        let numeric = |values: &[f32], i: usize, at: &dyn Fn(&[f32]) -> f64| {
            let (mut plus, mut minus) = (values.to_vec(), values.to_vec());
            plus[i] += h;
            minus[i] -= h;
            (at(&plus) - at(&minus)) / (2.0 * h as f64)
        };
        for (i, analytic) in dx.iter().enumerate() {
            let fd = numeric(&x, i, &|x| objective(&g, x, &w, &r));
            assert!(
                (fd - *analytic as f64).abs() < 1e-3,
                "{case:?}: dx[{i}] {analytic} vs {fd}"
            );
        }
        for (i, analytic) in dw.iter().enumerate() {
            let fd = numeric(&w, i, &|w| objective(&g, &x, w, &r));
            assert!(
                (fd - *analytic as f64).abs() < 1e-3,
                "{case:?}: dw[{i}] {analytic} vs {fd}"
            );
        }
    }
}

#[test]
fn bias_gradient_sums_over_images_and_pixels() {
    let _rng = ews_models::rng_lock();
    let g = ConvGeometry::new(
        [2, 1, 2, 2],
        [3, 1, 1, 1],
        &Case::square([2, 1, 2, 2], 3, 1, 1, 0).options(),
    )
    .unwrap();
    let dy: Vec<f32> = (0..g.output_len()).map(|i| i as f32).collect();
    // Channel c collects planes c and c + 3: (4c..4c+4) + (4c+12..4c+16).
    let expected: Vec<f32> = (0..3).map(|c| (16 * c + 6 + 16 * c + 54) as f32).collect();
    assert_eq!(cpu::backward_bias(&g, &dy), expected);
}

#[test]
fn with_burn_kernels_takes_burns_path_on_this_thread_only() {
    let _rng = ews_models::rng_lock();
    let enabled = conv::fast_kernels_enabled();
    let device = Default::default();
    let case = Case::square([2, 3, 6, 6], 4, 3, 1, 1);
    Flex::seed(&device, 11);
    let x = random::<Flex, 4>(case.x, &device);
    let w = random::<Flex, 4>([4, 3, 3, 3], &device);
    let burns = burn::tensor::module::conv2d(x.clone(), w.clone(), None, case.options().options);
    let inside = conv::with_burn_kernels(|| {
        assert!(!conv::fast_kernels_enabled());
        let other_thread = std::thread::spawn(conv::fast_kernels_enabled)
            .join()
            .unwrap();
        assert_eq!(other_thread, enabled, "the switch is per thread");
        conv::conv2d(x.clone(), w.clone(), None, case.options())
    });
    assert_eq!(conv::fast_kernels_enabled(), enabled, "restored afterwards");
    inside.into_data().assert_eq(&burns.into_data(), true);
}
