//! A generated 10-class dataset of shapes, built into the binary so the whole pipeline runs
//! offline in minutes.
//!
//! Each 32x32 image shows one shape (filled circle, ring, filled square, square outline,
//! triangle, plus, horizontal stripes, vertical stripes, X, checkerboard) of random colour,
//! size and position on a random gradient background with Gaussian pixel noise (sigma 16).
//! With probability [`LABEL_NOISE`] a label is replaced by a uniformly drawn *other* class,
//! in both splits. The shape is always recognisable, so the best possible test accuracy is
//! exactly `1 - LABEL_NOISE` = 90%: the dataset is learnable but has a known ceiling.

use std::sync::Arc;

use ews_models::Normalization;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Dataset, ImageSource, Split};

/// Fraction of labels replaced by another class.
pub const LABEL_NOISE: f64 = 0.1;
/// Image side in pixels.
pub const SIZE: usize = 32;
/// Class names in label order.
pub const CLASSES: [&str; 10] = [
    "circle",
    "ring",
    "square",
    "square-outline",
    "triangle",
    "plus",
    "h-stripes",
    "v-stripes",
    "x",
    "checker",
];

/// Sizes of the generated splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
    /// Seed; the test split uses `seed + 1`.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            train: 5000,
            test: 1000,
            seed: 0,
        }
    }
}

/// Whether the point (dx, dy), relative to the shape centre and scaled by its radius r,
/// is covered by the shape of `class`.
fn covered(class: usize, dx: f32, dy: f32, r: f32) -> bool {
    let (ax, ay) = (dx.abs(), dy.abs());
    let inside_box = ax <= r && ay <= r;
    let d = (dx * dx + dy * dy).sqrt();
    let band = (r * 0.3).max(1.5);
    match class {
        0 => d <= r,
        1 => d <= r && d >= r - band,
        2 => inside_box,
        3 => inside_box && (ax >= r - band || ay >= r - band),
        4 => dy <= r && dy >= -r && ax <= (dy + r) * 0.5,
        5 => (ax <= band * 0.6 && ay <= r) || (ay <= band * 0.6 && ax <= r),
        6 => inside_box && ((dy + r) / band) as i32 % 2 == 0,
        7 => inside_box && ((dx + r) / band) as i32 % 2 == 0,
        8 => inside_box && ((dx - dy).abs() <= band * 0.7 || (dx + dy).abs() <= band * 0.7),
        9 => inside_box && ((((dx + r) / band) as i32 + ((dy + r) / band) as i32) % 2 == 0),
        _ => unreachable!("10 classes"),
    }
}

fn normal<R: Rng>(rng: &mut R) -> f32 {
    // Box-Muller.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Renders one image of `class` into `out` (HWC, SIZE x SIZE x 3).
fn render<R: Rng>(class: usize, rng: &mut R, out: &mut [u8]) {
    let bg0: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    let bg1: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    // A foreground colour far enough from the background.
    let fg: [f32; 3] = loop {
        let c: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
        let mid: [f32; 3] = std::array::from_fn(|i| (bg0[i] + bg1[i]) / 2.0);
        if (0..3).map(|i| (c[i] - mid[i]).powi(2)).sum::<f32>().sqrt() > 120.0 {
            break c;
        }
    };
    let r = rng.random_range(7.0..12.0f32);
    let cx = rng.random_range(r..SIZE as f32 - r);
    let cy = rng.random_range(r..SIZE as f32 - r);
    let horizontal = rng.random::<bool>();
    for y in 0..SIZE {
        for x in 0..SIZE {
            let t = if horizontal { x } else { y } as f32 / (SIZE - 1) as f32;
            let on = covered(class, x as f32 + 0.5 - cx, y as f32 + 0.5 - cy, r);
            for c in 0..3 {
                let base = if on {
                    fg[c]
                } else {
                    bg0[c] * (1.0 - t) + bg1[c] * t
                };
                let v = base + 16.0 * normal(rng);
                out[(y * SIZE + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

fn split(n: usize, seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * SIZE * SIZE * 3];
    let mut labels = Vec::with_capacity(n);
    for (i, out) in pixels.chunks_exact_mut(SIZE * SIZE * 3).enumerate() {
        let class = i % CLASSES.len();
        render(class, &mut rng, out);
        let label = if rng.random_bool(LABEL_NOISE) {
            (class + rng.random_range(1..CLASSES.len())) % CLASSES.len()
        } else {
            class
        };
        labels.push(label as u32);
    }
    Split {
        images: ImageSource::Memory {
            pixels: Arc::new(pixels),
            height: SIZE,
            width: SIZE,
        },
        labels: Arc::new(labels),
    }
}

/// Generates the dataset (deterministic for a config).
pub fn generate(config: SyntheticConfig) -> Dataset {
    Dataset {
        name: "synthetic".into(),
        train: split(config.train, config.seed),
        test: split(config.test, config.seed.wrapping_add(1)),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        normalization: Normalization {
            mean: [0.5, 0.5, 0.5],
            std: [0.29, 0.29, 0.29],
        },
    }
}

/// The shape class drawn in image `i` of a split (labels may differ through label noise).
pub fn true_class(i: usize) -> u32 {
    (i % CLASSES.len()) as u32
}
