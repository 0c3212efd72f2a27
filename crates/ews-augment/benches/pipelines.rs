//! Single-core throughput of the augmentation pipelines (images/s), the Rust side of the
//! comparison with `benches/pillow_pipelines.py` (same chains in Pillow + numpy).
//!
//! `cargo bench -p ews-augment --bench pipelines [-- --seconds S]`
//!
//! Inputs: the golden images of `tests/golden` (three CIFAR-10 test images, one 224 px
//! photo). Every pipeline ends in the CHW float layout of a batch (ToTensor).

use std::time::Instant;

#[path = "../tests/golden/files.rs"]
mod files;

use ews_augment::policy::{AugMix, AutoAugment, AutoAugmentPolicy};
use ews_augment::{Image, Padding, StandardTransform};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The golden inputs: the CIFAR-10 images and the 224 px photo.
fn golden_inputs() -> (Vec<Image>, Image) {
    let mut all = files::inputs();
    let large = all.remove("astronaut224").expect("a 224 px input");
    (all.into_values().collect(), large)
}

/// Runs `pipeline` over the inputs for about `seconds`; returns images per second.
fn throughput(
    inputs: &[Image],
    seconds: f64,
    mut pipeline: impl FnMut(&Image, &mut StdRng, &mut [f32]),
) -> f64 {
    let plane = inputs[0].height * inputs[0].width * 3;
    let mut out = vec![0f32; 3 * plane];
    let mut rng = StdRng::seed_from_u64(0);
    // Warm-up.
    for img in inputs {
        pipeline(img, &mut rng, &mut out);
    }
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        for img in inputs {
            pipeline(img, &mut rng, &mut out);
        }
        done += inputs.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut seconds = 2.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--seconds S");
        }
    }
    let (small, large) = golden_inputs();
    if std::env::args().any(|a| a == "--ops") {
        time_ops(&large);
        return;
    }
    println!("| pipeline | size | ews (Rust) images/s, 1 core |");
    println!("|---|---|---|");
    for (size, inputs) in [(32usize, small), (224usize, vec![large])] {
        let base = StandardTransform {
            padding: size / 8,
            fill: Padding::Zero,
            flip: true,
        };
        let policy = if size > 64 {
            AutoAugmentPolicy::Imagenet
        } else {
            AutoAugmentPolicy::Cifar10
        };
        let aa = AutoAugment::new(policy);
        let am = AugMix::default();
        let plane = size * size * 3;
        let rows: [(&str, f64); 4] = [
            (
                "standard (pad/crop/flip)",
                throughput(&inputs, seconds, |img, rng, out| {
                    base.apply(img, rng).write_chw_unit(&mut out[..plane]);
                }),
            ),
            (
                "standard + AutoAugment",
                throughput(&inputs, seconds, |img, rng, out| {
                    let x = base.apply(img, rng);
                    aa.apply(&x, rng).write_chw_unit(&mut out[..plane]);
                }),
            ),
            (
                "standard + AugMix",
                throughput(&inputs, seconds, |img, rng, out| {
                    let x = base.apply(img, rng);
                    am.apply_into(&x, rng, &mut out[..plane]);
                }),
            ),
            (
                "standard + AugMix JSD (clean + 2 views)",
                throughput(&inputs, seconds, |img, rng, out| {
                    let x = base.apply(img, rng);
                    x.write_chw_unit(&mut out[..plane]);
                    am.apply_into(&x, rng, &mut out[plane..2 * plane]);
                    am.apply_into(&x, rng, &mut out[2 * plane..]);
                }),
            ),
        ];
        for (name, ips) in rows {
            println!("| {name} | {size} | {ips:.0} |");
        }
    }
}

/// Per-op timings at 224 px (`-- --ops`), to find hot spots.
fn time_ops(img: &Image) {
    use ews_augment::ops::{self, Interpolation::*};
    type OpFn = Box<dyn Fn(&Image) -> Image>;
    let cases: Vec<(&str, OpFn)> = vec![
        ("autocontrast", Box::new(ops::autocontrast)),
        ("equalize", Box::new(ops::equalize)),
        ("posterize", Box::new(|i| ops::posterize(i, 3))),
        ("solarize", Box::new(|i| ops::solarize(i, 128.0))),
        ("color", Box::new(|i| ops::enhance_color(i, 1.5))),
        ("contrast", Box::new(|i| ops::enhance_contrast(i, 1.5))),
        ("brightness", Box::new(|i| ops::enhance_brightness(i, 1.5))),
        ("sharpness", Box::new(|i| ops::enhance_sharpness(i, 1.5))),
        (
            "rotate nearest",
            Box::new(|i| ops::rotate(i, 13.0, Nearest, [0; 3])),
        ),
        (
            "rotate bilinear",
            Box::new(|i| ops::rotate(i, 13.0, Bilinear, [0; 3])),
        ),
        (
            "shear bilinear",
            Box::new(|i| ops::affine(i, [1.0, 0.2, 0.0, 0.0, 1.0, 0.0], Bilinear, [0; 3])),
        ),
        (
            "translate bilinear",
            Box::new(|i| ops::affine(i, [1.0, 0.0, 5.0, 0.0, 1.0, 0.0], Bilinear, [0; 3])),
        ),
        (
            "translate nearest",
            Box::new(|i| ops::affine(i, [1.0, 0.0, 5.0, 0.0, 1.0, 0.0], Nearest, [0; 3])),
        ),
        (
            "crop/flip",
            Box::new(|i| {
                let t = StandardTransform {
                    padding: i.width / 8,
                    fill: Padding::Zero,
                    flip: true,
                };
                t.crop_at(i, 5, -7, true)
            }),
        ),
        (
            "to_tensor (+ clone)",
            Box::new(|i| {
                let mut out = vec![0f32; i.pixels.len()];
                i.write_chw_unit(&mut out);
                std::hint::black_box(out);
                i.clone()
            }),
        ),
        ("clone", Box::new(|i| i.clone())),
    ];
    let only: Option<String> = std::env::args()
        .skip_while(|a| a != "--ops")
        .nth(1)
        .filter(|a| !a.starts_with("--"));
    for (name, f) in cases {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed().as_secs_f64() < 0.5 {
            std::hint::black_box(f(img));
            n += 1;
        }
        println!(
            "{name:20} {:8.1} us",
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
