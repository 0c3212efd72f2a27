//! Sampling of the augmentation policies: op frequencies against the policy tables,
//! magnitude bins, signs, AugMix's mixing weights and chains, and seeded determinism.

use std::collections::HashMap;

use ews_augment::Image;
use ews_augment::policy::{
    AugMix, AugMixVariant, AutoAugment, AutoAugmentPolicy, Op, Plan, RandAugment,
    TrivialAugmentWide, torch_linspace,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn noise_image(seed: u64, size: usize) -> Image {
    let mut rng = StdRng::seed_from_u64(seed);
    Image::new(
        size,
        size,
        (0..size * size * 3).map(|_| rng.random()).collect(),
    )
}

fn within(observed: f64, expected: f64, n: usize, what: &str) {
    // Binomial-style bound: 5 standard deviations of a frequency, at least 0.005.
    let sd = (expected.max(1e-3) * (1.0 - expected.min(0.999)) / n as f64).sqrt();
    assert!(
        (observed - expected).abs() <= (5.0 * sd).max(0.005),
        "{what}: observed {observed:.4}, expected {expected:.4}"
    );
}

#[test]
fn linspace_and_bins_follow_torch() {
    let v = torch_linspace(0.0, 30.0, 10);
    assert_eq!(v.len(), 10);
    assert_eq!(v[0], 0.0);
    assert_eq!(v[9], 30.0);
    assert!((v[2] - 20.0 / 3.0).abs() < 1e-5);
    let s = torch_linspace(255.0, 0.0, 10);
    assert_eq!((s[0], s[9]), (255.0, 0.0));
    assert!((s[3] - 170.0).abs() < 1e-4);
}

/// Expected number of times each op fires per image under torchvision's CIFAR-10 table
/// (transcribed independently of the library's copy).
fn expected_cifar10_counts() -> HashMap<Op, f64> {
    use Op::*;
    let table: [[(Op, f64); 2]; 25] = [
        [(Invert, 0.1), (Contrast, 0.2)],
        [(Rotate, 0.7), (TranslateX, 0.3)],
        [(Sharpness, 0.8), (Sharpness, 0.9)],
        [(ShearY, 0.5), (TranslateY, 0.7)],
        [(AutoContrast, 0.5), (Equalize, 0.9)],
        [(ShearY, 0.2), (Posterize, 0.3)],
        [(Color, 0.4), (Brightness, 0.6)],
        [(Sharpness, 0.3), (Brightness, 0.7)],
        [(Equalize, 0.6), (Equalize, 0.5)],
        [(Contrast, 0.6), (Sharpness, 0.6)],
        [(Color, 0.7), (TranslateX, 0.5)],
        [(Equalize, 0.3), (AutoContrast, 0.4)],
        [(TranslateY, 0.4), (Sharpness, 0.2)],
        [(Brightness, 0.9), (Color, 0.2)],
        [(Solarize, 0.5), (Invert, 0.0)],
        [(Equalize, 0.2), (AutoContrast, 0.6)],
        [(Equalize, 0.2), (Equalize, 0.6)],
        [(Color, 0.9), (Equalize, 0.6)],
        [(AutoContrast, 0.8), (Solarize, 0.2)],
        [(Brightness, 0.1), (Color, 0.7)],
        [(Solarize, 0.4), (AutoContrast, 0.9)],
        [(TranslateY, 0.9), (TranslateY, 0.7)],
        [(AutoContrast, 0.9), (Solarize, 0.8)],
        [(Equalize, 0.8), (Invert, 0.1)],
        [(TranslateY, 0.7), (AutoContrast, 0.9)],
    ];
    let mut counts = HashMap::new();
    for sub in table {
        for (op, p) in sub {
            *counts.entry(op).or_insert(0.0) += p / 25.0;
        }
    }
    counts
}

#[test]
fn autoaugment_cifar10_fires_ops_at_the_table_rates() {
    let aa = AutoAugment::new(AutoAugmentPolicy::Cifar10);
    let mut rng = StdRng::seed_from_u64(1);
    let n = 40_000;
    let mut counts: HashMap<Op, f64> = HashMap::new();
    let mut rotate_neg = 0usize;
    let mut rotate = 0usize;
    for _ in 0..n {
        let Plan::Torchvision(steps) = aa.plan(32, 32, &mut rng) else {
            panic!("torchvision tables give torchvision plans");
        };
        for (op, m) in steps {
            *counts.entry(op).or_insert(0.0) += 1.0 / n as f64;
            match op {
                // CIFAR-10 rotates only at bin 2 of linspace(0, 30, 10).
                Op::Rotate => {
                    assert!((m.abs() - 20.0 / 3.0).abs() < 1e-5, "rotate magnitude {m}");
                    rotate += 1;
                    rotate_neg += (m < 0.0) as usize;
                }
                // Contrast is used at bins 6 and 7 of linspace(0, 0.9, 10).
                Op::Contrast => assert!(
                    (m.abs() - 0.6).abs() < 1e-5 || (m.abs() - 0.7).abs() < 1e-5,
                    "contrast magnitude {m}"
                ),
                // Posterize bin 7 -> 8 - round(7 / 2.25) = 5 bits.
                Op::Posterize => assert_eq!(m, 5.0),
                // Solarize bins 2, 5, 8, 3 of linspace(255, 0, 10).
                Op::Solarize => assert!(
                    [2, 3, 5, 8]
                        .iter()
                        .any(|&b| (m - (255.0 - 255.0 * b as f64 / 9.0)).abs() < 1e-3)
                ),
                Op::Invert | Op::Equalize | Op::AutoContrast => assert_eq!(m, 0.0),
                _ => {}
            }
        }
    }
    let expected = expected_cifar10_counts();
    for (op, e) in &expected {
        within(*counts.get(op).unwrap_or(&0.0), *e, n, &format!("{op:?}"));
    }
    for op in counts.keys() {
        assert!(
            expected.contains_key(op),
            "{op:?} is not in the CIFAR-10 policy"
        );
    }
    within(
        rotate_neg as f64 / rotate as f64,
        0.5,
        rotate,
        "rotate sign",
    );
}

#[test]
fn tf_policy_ends_with_cutout_and_uses_95_subpolicies() {
    let aa = AutoAugment::new(AutoAugmentPolicy::TfCifar);
    let mut rng = StdRng::seed_from_u64(2);
    let mut seen_cutout_in_policy = false;
    for _ in 0..5_000 {
        let Plan::Release(steps) = aa.plan(32, 32, &mut rng) else {
            panic!("the TF policy gives release plans");
        };
        assert!(steps.len() <= 3);
        let last = steps.last().unwrap();
        assert_eq!((last.op, last.level), (Op::Cutout, 8.0));
        seen_cutout_in_policy |= steps[..steps.len() - 1].iter().any(|s| s.op == Op::Cutout);
        for s in &steps {
            assert!((0.0..=10.0).contains(&s.level));
            assert!(s.at.0 < 32 && s.at.1 < 32);
        }
    }
    assert!(
        seen_cutout_in_policy,
        "exp2_1 / exp2_2 / exp2_5 hold Cutout sub-policies"
    );
    // The final cutout paints a 16x16 square (clipped at the border) in the mean colour.
    let img = noise_image(3, 32);
    let out = aa.apply(&img, &mut StdRng::seed_from_u64(4));
    let mean = out
        .pixels
        .chunks_exact(3)
        .filter(|p| p == &[125, 123, 114])
        .count();
    assert!(
        mean >= 64,
        "cutout covers at least a quarter square, got {mean} pixels"
    );
}

#[test]
fn randaugment_draws_uniform_ops_at_the_fixed_bin() {
    let ra = RandAugment::default();
    let mut rng = StdRng::seed_from_u64(5);
    let n = 20_000;
    let mut counts: HashMap<Op, usize> = HashMap::new();
    for _ in 0..n {
        let Plan::Torchvision(steps) = ra.plan(32, 32, &mut rng) else {
            panic!()
        };
        assert_eq!(steps.len(), 2);
        for (op, m) in steps {
            *counts.entry(op).or_default() += 1;
            match op {
                Op::Rotate => assert!((m.abs() - 9.0).abs() < 1e-4, "{m}"),
                Op::ShearX => assert!((m.abs() - 0.09).abs() < 1e-6, "{m}"),
                Op::Posterize => assert_eq!(m, 8.0 - (9.0f64 / 7.5).round()),
                _ => {}
            }
        }
    }
    assert_eq!(counts.len(), 14, "identity + 13 ops");
    for (op, c) in counts {
        within(
            c as f64 / (2 * n) as f64,
            1.0 / 14.0,
            2 * n,
            &format!("{op:?}"),
        );
    }
}

#[test]
fn trivialaugment_draws_one_op_and_uniform_bins() {
    let ta = TrivialAugmentWide::default();
    let mut rng = StdRng::seed_from_u64(6);
    let n = 30_000;
    let mut rotations = Vec::new();
    let mut ops = HashMap::<Op, usize>::new();
    for _ in 0..n {
        let Plan::Torchvision(steps) = ta.plan(32, 32, &mut rng) else {
            panic!()
        };
        assert_eq!(steps.len(), 1);
        *ops.entry(steps[0].0).or_default() += 1;
        if steps[0].0 == Op::Rotate {
            rotations.push(steps[0].1);
        }
    }
    assert_eq!(ops.len(), 14);
    assert!(rotations.iter().all(|r| r.abs() <= 135.0 + 1e-4));
    let mean_abs = rotations.iter().map(|r| r.abs()).sum::<f64>() / rotations.len() as f64;
    assert!((mean_abs - 67.5).abs() < 3.0, "mean |rotation| {mean_abs}");
}

#[test]
fn augmix_original_weights_chains_and_levels() {
    let mut rng = StdRng::seed_from_u64(7);
    let n = 20_000;
    for all_ops in [false, true] {
        let am = AugMix {
            all_ops,
            ..AugMix::default()
        };
        let mut original = 0.0;
        let mut depths = [0usize; 4];
        let mut ops = HashMap::<Op, usize>::new();
        for _ in 0..n {
            let plan = am.plan(32, 32, &mut rng);
            let total: f32 = plan.original + plan.weights.iter().sum::<f32>();
            assert!((total - 1.0).abs() < 1e-5, "weights sum to {total}");
            assert!(plan.weights.iter().all(|&w| w >= 0.0));
            original += plan.original as f64 / n as f64;
            assert_eq!(plan.chains.len(), 3);
            for chain in &plan.chains {
                let Plan::Release(steps) = chain else {
                    panic!()
                };
                depths[steps.len()] += 1;
                for s in steps {
                    assert!((0.1..3.0).contains(&s.level), "level {}", s.level);
                    *ops.entry(s.op).or_default() += 1;
                }
            }
        }
        // 1 - m with m ~ Beta(1, 1): mean 1/2; depth uniform on 1..=3.
        assert!(
            (original - 0.5).abs() < 0.01,
            "mean original weight {original}"
        );
        assert_eq!(depths[0], 0);
        for count in &depths[1..] {
            within(*count as f64 / (3 * n) as f64, 1.0 / 3.0, 3 * n, "depth");
        }
        let expected_ops = if all_ops { 13 } else { 9 };
        assert_eq!(ops.len(), expected_ops);
        assert!(!ops.contains_key(&Op::Invert));
        assert_eq!(
            ops.contains_key(&Op::Color) || ops.contains_key(&Op::Sharpness),
            all_ops
        );
    }
}

#[test]
fn augmix_torchvision_variant_uses_bins_below_severity() {
    let am = AugMix {
        variant: AugMixVariant::Torchvision,
        ..AugMix::default()
    };
    let mut rng = StdRng::seed_from_u64(8);
    let shear_bins = torch_linspace(0.0, 0.3, 10);
    for _ in 0..5_000 {
        let plan = am.plan(32, 32, &mut rng);
        let total: f32 = plan.original + plan.weights.iter().sum::<f32>();
        assert!((total - 1.0).abs() < 1e-5);
        for chain in &plan.chains {
            let Plan::Torchvision(steps) = chain else {
                panic!()
            };
            for &(op, m) in steps {
                if op == Op::ShearX {
                    let bin = shear_bins
                        .iter()
                        .position(|&b| (b as f64 - m.abs()).abs() < 1e-7)
                        .expect("magnitude is a bin");
                    assert!(bin < 3, "severity 3 allows bins 0..3, got {bin}");
                }
                assert!(!matches!(op, Op::Color | Op::Invert), "all_ops is off");
            }
        }
    }
}

#[test]
fn augmix_output_is_a_unit_range_mix_and_seeded() {
    let img = noise_image(9, 32);
    for variant in [AugMixVariant::Original, AugMixVariant::Torchvision] {
        let am = AugMix {
            variant,
            ..AugMix::default()
        };
        let run = |seed| {
            let mut out = vec![0f32; 32 * 32 * 3];
            am.apply_into(&img, &mut StdRng::seed_from_u64(seed), &mut out);
            out
        };
        let a = run(10);
        assert!(a.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
        assert_eq!(a, run(10), "same seed, same image");
        assert_ne!(a, run(11), "another seed, another mix");
        let mut clean = vec![0f32; a.len()];
        img.write_chw_unit(&mut clean);
        assert_ne!(a, clean);
    }
}

#[test]
fn every_policy_is_deterministic_per_seed() {
    let img = noise_image(12, 32);
    type PolicyFn<'a> = Box<dyn Fn(&mut StdRng) -> Image + 'a>;
    let policies: Vec<PolicyFn> = vec![
        Box::new(|r| AutoAugment::new(AutoAugmentPolicy::Cifar10).apply(&img, r)),
        Box::new(|r| AutoAugment::new(AutoAugmentPolicy::Imagenet).apply(&img, r)),
        Box::new(|r| AutoAugment::new(AutoAugmentPolicy::Svhn).apply(&img, r)),
        Box::new(|r| AutoAugment::new(AutoAugmentPolicy::TfCifar).apply(&img, r)),
        Box::new(|r| RandAugment::default().apply(&img, r)),
        Box::new(|r| TrivialAugmentWide::default().apply(&img, r)),
    ];
    for (i, p) in policies.iter().enumerate() {
        let outs: Vec<Image> = (0..20).map(|s| p(&mut StdRng::seed_from_u64(s))).collect();
        let again: Vec<Image> = (0..20).map(|s| p(&mut StdRng::seed_from_u64(s))).collect();
        assert_eq!(outs, again, "policy {i}");
        assert!(
            outs.iter().any(|o| o != &outs[0]),
            "policy {i} varies with the seed"
        );
        assert!(outs.iter().any(|o| o != &img), "policy {i} changes images");
    }
}
