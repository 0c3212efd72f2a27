//! Corruptions of the CIFAR-10-C / ImageNet-C benchmark (Hendrycks & Dietterich, 2019),
//! following the reference generators (`make_cifar_c.py`, `make_imagenet_c.py`): every
//! corruption maps u8 -> float in [0, 1] -> corrupted -> clipped -> x 255 -> truncated u8,
//! with the 32 px (CIFAR) or 224 px (ImageNet) parameter table.
//!
//! Implemented here: the noise family (gaussian, shot, impulse, speckle), gaussian, defocus,
//! glass, zoom and motion blur, snow, frost, fog, brightness, contrast, elastic transform,
//! pixelate, JPEG, spatter and saturate: all 15 benchmark corruptions and the 4 extras. The deterministic
//! ones are checked against the reference formulas' output (golden files); the random ones
//! against their distributions.

use rand::Rng;
use rand_distr::{Distribution, Normal, Poisson};
use serde::{Deserialize, Serialize};

use crate::Image;
use crate::standard::reflect as reflect101;

/// Which parameter table of the reference generators to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// `make_cifar_c.py` (32 x 32 images).
    Cifar,
    /// `make_imagenet_c.py` (224 x 224 images).
    Imagenet,
}

impl Table {
    /// The table for images of this size: the CIFAR one up to 64 px on the longer side,
    /// the ImageNet one above.
    pub fn for_size(height: usize, width: usize) -> Table {
        if height.max(width) > 64 {
            Table::Imagenet
        } else {
            Table::Cifar
        }
    }
}

/// A corruption of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// Additive Gaussian noise.
    GaussianNoise,
    /// Poisson (shot) noise.
    ShotNoise,
    /// Salt-and-pepper noise.
    ImpulseNoise,
    /// Multiplicative Gaussian noise (extra).
    SpeckleNoise,
    /// Gaussian blur (extra).
    GaussianBlur,
    /// Disk-kernel blur.
    DefocusBlur,
    /// Blur, local pixel copies, blur.
    GlassBlur,
    /// Average of centre zooms.
    ZoomBlur,
    /// Diamond-square plasma haze.
    Fog,
    /// HSV value shift.
    Brightness,
    /// Contrast reduction around the channel means.
    Contrast,
    /// HSV saturation change (extra).
    Saturate,
    /// Box downscale and upscale.
    Pixelate,
    /// JPEG round trip at a low quality.
    JpegCompression,
    /// ImageMagick's motion blur at a random angle.
    MotionBlur,
    /// Motion-blurred snow flakes over a greyed image.
    Snow,
    /// A random affine warp plus a smooth random displacement field.
    ElasticTransform,
    /// A crop of a frost texture blended over the image (see [`FrostTextures`]).
    Frost,
    /// Water drops (severities 1-3) or mud (4-5) splashed over the image (extra).
    Spatter,
}

impl Corruption {
    /// Every implemented corruption.
    pub const ALL: [Corruption; 19] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::SpeckleNoise,
        Corruption::GaussianBlur,
        Corruption::DefocusBlur,
        Corruption::GlassBlur,
        Corruption::ZoomBlur,
        Corruption::Fog,
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::Saturate,
        Corruption::Pixelate,
        Corruption::JpegCompression,
        Corruption::MotionBlur,
        Corruption::Snow,
        Corruption::ElasticTransform,
        Corruption::Frost,
        Corruption::Spatter,
    ];

    /// The reference file stem (`gaussian_noise`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::ShotNoise => "shot_noise",
            Corruption::ImpulseNoise => "impulse_noise",
            Corruption::SpeckleNoise => "speckle_noise",
            Corruption::GaussianBlur => "gaussian_blur",
            Corruption::DefocusBlur => "defocus_blur",
            Corruption::GlassBlur => "glass_blur",
            Corruption::ZoomBlur => "zoom_blur",
            Corruption::Fog => "fog",
            Corruption::Brightness => "brightness",
            Corruption::Contrast => "contrast",
            Corruption::Saturate => "saturate",
            Corruption::Pixelate => "pixelate",
            Corruption::JpegCompression => "jpeg_compression",
            Corruption::MotionBlur => "motion_blur",
            Corruption::Snow => "snow",
            Corruption::ElasticTransform => "elastic_transform",
            Corruption::Frost => "frost",
            Corruption::Spatter => "spatter",
        }
    }

    /// Looks a corruption up by its file stem.
    pub fn from_name(name: &str) -> Option<Corruption> {
        Corruption::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// An RGB image of doubles, HWC.
#[derive(Clone, Debug, PartialEq)]
struct Float {
    height: usize,
    width: usize,
    data: Vec<f64>,
}

impl Float {
    fn from_image(image: &Image) -> Self {
        Self {
            height: image.height,
            width: image.width,
            data: image.pixels.iter().map(|&v| v as f64 / 255.0).collect(),
        }
    }

    /// `np.uint8(np.clip(x, 0, 1) * 255)`.
    fn to_image(&self) -> Image {
        Image::new(
            self.height,
            self.width,
            self.data
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0) as u8)
                .collect(),
        )
    }
}

/// Frost textures: the reference set (`frost1.png` ... `frost6.jpg` of hendrycks/robustness,
/// decoded by the caller) or a procedural stand-in. Results with the stand-in are not
/// comparable to published numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct FrostTextures {
    /// The textures in the reference's file order; the reference draws from the first five.
    pub images: Vec<Image>,
    /// Whether these are the procedural stand-in.
    pub procedural: bool,
}

impl FrostTextures {
    /// The reference textures as decoded RGB images (at least one); for the CIFAR table
    /// they are shrunk to 0.2 of their size first, as the reference does with
    /// `cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)` (size rounded, sampled every 5 pixels).
    pub fn from_images(images: Vec<Image>, table: Table) -> Result<Self, String> {
        if images.is_empty() {
            return Err("no frost textures".into());
        }
        let images = images
            .into_iter()
            .map(|img| match table {
                Table::Cifar => crate::standard::resize_bilinear_scaled(
                    &img,
                    ((img.height as f64 * 0.2).round() as usize).max(1),
                    ((img.width as f64 * 0.2).round() as usize).max(1),
                    5.0,
                    5.0,
                ),
                Table::Imagenet => img,
            })
            .collect();
        Ok(Self {
            images,
            procedural: false,
        })
    }

    /// Five procedural textures of `size x size` (ice needles over a cloudy grey-blue base),
    /// seeded; the fallback when the reference images are not at hand.
    pub fn procedural(size: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        let images = (0..5)
            .map(|k| procedural_frost(size, &mut rand::rngs::StdRng::seed_from_u64(seed ^ (k + 1))))
            .collect();
        Self {
            images,
            procedural: true,
        }
    }

    /// The built-in stand-in for a table (twice the image side, generated once).
    pub fn builtin(table: Table) -> &'static FrostTextures {
        static CIFAR: std::sync::OnceLock<FrostTextures> = std::sync::OnceLock::new();
        static IMAGENET: std::sync::OnceLock<FrostTextures> = std::sync::OnceLock::new();
        match table {
            Table::Cifar => CIFAR.get_or_init(|| FrostTextures::procedural(96, 0xF205)),
            Table::Imagenet => IMAGENET.get_or_init(|| FrostTextures::procedural(512, 0xF205)),
        }
    }
}

/// A frost-like texture: a cloudy base (plasma) crossed by thin bright needles, lightly
/// blurred, tinted towards blue.
fn procedural_frost<R: Rng + ?Sized>(size: usize, rng: &mut R) -> Image {
    let map = size.next_power_of_two().max(32);
    let cloud = plasma_fractal(map, 1.8, rng);
    let mut v: Vec<f64> = (0..size * size)
        .map(|i| 45.0 + 70.0 * cloud[(i / size) * map + i % size])
        .collect();
    let needles = size * size / 30;
    for _ in 0..needles {
        let (mut y, mut x) = (
            rng.random_range(0.0..size as f64),
            rng.random_range(0.0..size as f64),
        );
        let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let len = rng.random_range(2.0..(size as f64 / 6.0).max(3.0));
        let gain = rng.random_range(40.0..140.0);
        let (dy, dx) = (angle.sin(), angle.cos());
        for _ in 0..len as usize {
            let (yi, xi) = (y as usize, x as usize);
            if yi < size && xi < size {
                v[yi * size + xi] += gain;
            }
            y += dy;
            x += dx;
            if y < 0.0 || x < 0.0 {
                break;
            }
        }
    }
    let mut plane = Float {
        height: size,
        width: size,
        data: v
            .iter()
            .flat_map(|&g| [g * 0.82, g * 0.9, g])
            .map(|c| c.min(255.0) / 255.0)
            .collect(),
    };
    gaussian_filter(&mut plane, 0.6);
    plane.to_image()
}

/// The blend weights (image, texture) of frost at `severity` in the reference's tables.
fn frost_weights(severity: u8, table: Table) -> (f64, f64) {
    assert!(
        (1..=5).contains(&severity),
        "severity must be 1..=5, got {severity}"
    );
    let weights = match table {
        Table::Cifar => [
            (1.0, 0.2),
            (1.0, 0.3),
            (0.9, 0.4),
            (0.85, 0.4),
            (0.75, 0.45),
        ],
        Table::Imagenet => [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    };
    weights[severity as usize - 1]
}

/// `frost` with the given textures: a random texture (of the first five) cropped at a random
/// position, blended as `clip(a * x + b * frost)` on the 0-255 scale.
pub fn frost_with<R: Rng + ?Sized>(
    image: &Image,
    severity: u8,
    table: Table,
    textures: &FrostTextures,
    rng: &mut R,
) -> Image {
    frost_weights(severity, table);
    let pick = rng.random_range(0..textures.images.len().min(5));
    let mut tex = &textures.images[pick];
    let (h, w) = (image.height, image.width);
    let resized;
    if tex.height <= h || tex.width <= w {
        resized = crate::standard::resize_bilinear(tex, 2 * h, 2 * w);
        tex = &resized;
    }
    let y0 = rng.random_range(0..tex.height - h);
    let x0 = rng.random_range(0..tex.width - w);
    frost_at(image, severity, table, tex, y0, x0)
}

/// Frost with a given texture crop: `clip(a * x + b * texture[y0.., x0..])` on the 0-255
/// scale, truncated to bytes as the reference's `np.uint8` does. `texture` must hold the
/// crop (a CIFAR-table texture already shrunk, as [`FrostTextures`] keeps it).
pub fn frost_at(
    image: &Image,
    severity: u8,
    table: Table,
    texture: &Image,
    y0: usize,
    x0: usize,
) -> Image {
    let (a, b) = frost_weights(severity, table);
    let (h, w) = (image.height, image.width);
    assert!(
        y0 + h <= texture.height && x0 + w <= texture.width,
        "the crop at ({y0}, {x0}) leaves the {}x{} texture",
        texture.height,
        texture.width
    );
    let tex = texture;
    let mut pixels = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let (p, f) = (image.get(y, x), tex.get(y0 + y, x0 + x));
            for c in 0..3 {
                pixels.push((a * p[c] as f64 + b * f[c] as f64).clamp(0.0, 255.0) as u8);
            }
        }
    }
    Image::new(h, w, pixels)
}

/// [`corrupt`], with frost on the reference `frost` textures where given.
pub fn corrupt_with<R: Rng + ?Sized>(
    image: &Image,
    corruption: Corruption,
    severity: u8,
    table: Table,
    frost: Option<&FrostTextures>,
    rng: &mut R,
) -> Image {
    match (corruption, frost) {
        (Corruption::Frost, Some(textures)) => frost_with(image, severity, table, textures, rng),
        _ => corrupt(image, corruption, severity, table, rng),
    }
}

/// Applies `corruption` at `severity` (1..=5) with the parameters of `table`. Frost uses
/// the procedural stand-in textures here; [`frost_with`] takes the reference ones.
pub fn corrupt<R: Rng + ?Sized>(
    image: &Image,
    corruption: Corruption,
    severity: u8,
    table: Table,
    rng: &mut R,
) -> Image {
    assert!(
        (1..=5).contains(&severity),
        "severity must be 1..=5, got {severity}"
    );
    let s = severity as usize - 1;
    let cifar = table == Table::Cifar;
    let pick = |c: [f64; 5], i: [f64; 5]| if cifar { c[s] } else { i[s] };
    match corruption {
        Corruption::GaussianNoise => {
            let c = pick(
                [0.04, 0.06, 0.08, 0.09, 0.10],
                [0.08, 0.12, 0.18, 0.26, 0.38],
            );
            let normal = Normal::new(0.0, c).expect("positive scale");
            map_values(image, |x| x + normal.sample(rng))
        }
        Corruption::ShotNoise => {
            let c = pick(
                [500.0, 250.0, 100.0, 75.0, 50.0],
                [60.0, 25.0, 12.0, 5.0, 3.0],
            );
            let laws = poisson_laws(c);
            let mut x = Float::from_image(image);
            for (v, &byte) in x.data.iter_mut().zip(&image.pixels) {
                *v = laws[byte as usize]
                    .as_ref()
                    .map_or(0.0, |p| p.sample(rng) / c);
            }
            x.to_image()
        }
        Corruption::ImpulseNoise => {
            let amount = pick(
                [0.01, 0.02, 0.03, 0.05, 0.07],
                [0.03, 0.06, 0.09, 0.17, 0.27],
            );
            // skimage.util.random_noise(mode="s&p"): each value flips with probability
            // `amount`, to 1 or 0 with equal probability.
            map_values(image, |x| {
                let flipped = rng.random::<f64>() < amount;
                let salted = rng.random::<f64>() < 0.5;
                match (flipped, salted) {
                    (true, true) => 1.0,
                    (true, false) => 0.0,
                    _ => x,
                }
            })
        }
        Corruption::SpeckleNoise => {
            let c = pick([0.06, 0.1, 0.12, 0.16, 0.2], [0.15, 0.2, 0.35, 0.45, 0.6]);
            let normal = Normal::new(0.0, c).expect("positive scale");
            map_values(image, |x| x + x * normal.sample(rng))
        }
        Corruption::GaussianBlur => {
            let sigma = pick([0.4, 0.6, 0.7, 0.8, 1.0], [1.0, 2.0, 3.0, 4.0, 6.0]);
            let mut x = Float::from_image(image);
            gaussian_filter(&mut x, sigma);
            x.to_image()
        }
        Corruption::DefocusBlur => {
            let (radius, alias) = if cifar {
                [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)][s]
            } else {
                [(3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)][s]
            };
            defocus(image, radius, alias)
        }
        Corruption::GlassBlur => {
            let (sigma, delta, iterations) = if cifar {
                [
                    (0.05, 1, 1),
                    (0.25, 1, 1),
                    (0.4, 1, 1),
                    (0.25, 1, 2),
                    (0.4, 1, 2),
                ][s]
            } else {
                [
                    (0.7, 1, 2),
                    (0.9, 2, 1),
                    (1.0, 2, 3),
                    (1.1, 3, 2),
                    (1.5, 4, 2),
                ][s]
            };
            glass(image, sigma, delta, iterations, rng)
        }
        Corruption::ZoomBlur => {
            let (stop, step) = if cifar {
                [
                    (1.06, 0.01),
                    (1.11, 0.01),
                    (1.16, 0.01),
                    (1.21, 0.01),
                    (1.26, 0.01),
                ][s]
            } else {
                [
                    (1.11, 0.01),
                    (1.16, 0.01),
                    (1.21, 0.02),
                    (1.26, 0.02),
                    (1.31, 0.03),
                ][s]
            };
            zoom_blur(image, &numpy_arange(1.0, stop, step))
        }
        Corruption::Fog => {
            let (strength, decay) = if cifar {
                [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][s]
            } else {
                [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s]
            };
            let map_size = if cifar { 32 } else { 256 };
            fog(image, strength, decay, map_size, rng)
        }
        Corruption::Brightness => {
            let c = pick([0.05, 0.1, 0.15, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5]);
            map_hsv(image, |hsv| hsv[2] = (hsv[2] + c).clamp(0.0, 1.0))
        }
        Corruption::Contrast => {
            let c = pick([0.75, 0.5, 0.4, 0.3, 0.15], [0.4, 0.3, 0.2, 0.1, 0.05]);
            contrast(image, c)
        }
        Corruption::Saturate => {
            let (scale, shift) = if cifar {
                [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)][s]
            } else {
                [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)][s]
            };
            map_hsv(image, |hsv| {
                hsv[1] = (hsv[1] * scale + shift).clamp(0.0, 1.0)
            })
        }
        Corruption::Pixelate => {
            let c = pick([0.95, 0.9, 0.85, 0.75, 0.65], [0.6, 0.5, 0.4, 0.3, 0.25]);
            let (h, w) = (image.height, image.width);
            let small = resize_box(image, (w as f64 * c) as usize, (h as f64 * c) as usize);
            resize_box(&small, w, h)
        }
        Corruption::JpegCompression => {
            let q = pick(
                [80.0, 65.0, 58.0, 50.0, 40.0],
                [25.0, 18.0, 15.0, 10.0, 7.0],
            );
            crate::jpeg::jpeg_round_trip(image, q as u32)
        }
        Corruption::MotionBlur => {
            let (radius, sigma) = if cifar {
                [(6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5)][s]
            } else {
                [
                    (10.0, 3.0),
                    (15.0, 5.0),
                    (15.0, 8.0),
                    (15.0, 12.0),
                    (20.0, 15.0),
                ][s]
            };
            let angle = rng.random_range(-45.0..45.0);
            let pixels = motion_blur_u8(
                &image.pixels,
                image.height,
                image.width,
                3,
                radius,
                sigma,
                angle,
            );
            Image::new(image.height, image.width, pixels)
        }
        Corruption::Snow => {
            let c = if cifar {
                [
                    (0.1, 0.2, 1.0, 0.6, 8.0, 3.0, 0.95),
                    (0.1, 0.2, 1.0, 0.5, 10.0, 4.0, 0.9),
                    (0.15, 0.3, 1.75, 0.55, 10.0, 4.0, 0.9),
                    (0.25, 0.3, 2.25, 0.6, 12.0, 6.0, 0.85),
                    (0.3, 0.3, 1.25, 0.65, 14.0, 12.0, 0.8),
                ][s]
            } else {
                [
                    (0.1, 0.3, 3.0, 0.5, 10.0, 4.0, 0.8),
                    (0.2, 0.3, 2.0, 0.5, 12.0, 4.0, 0.7),
                    (0.55, 0.3, 4.0, 0.9, 12.0, 8.0, 0.7),
                    (0.55, 0.3, 4.5, 0.85, 12.0, 8.0, 0.65),
                    (0.55, 0.3, 2.5, 0.85, 12.0, 12.0, 0.55),
                ][s]
            };
            snow(image, c, rng)
        }
        Corruption::ElasticTransform => {
            // (alpha, sigma, affine jitter); the reference writes them as multiples of the
            // image size (32) or of 244 (its comment: "should have been 224").
            let (base, c) = if cifar {
                (
                    32.0,
                    [
                        (0.0, 0.0, 0.08),
                        (0.05, 0.2, 0.07),
                        (0.08, 0.06, 0.06),
                        (0.1, 0.04, 0.05),
                        (0.1, 0.03, 0.03),
                    ][s],
                )
            } else {
                (
                    244.0,
                    [
                        (2.0, 0.7, 0.1),
                        (2.0, 0.08, 0.2),
                        (0.05, 0.01, 0.02),
                        (0.07, 0.01, 0.02),
                        (0.12, 0.01, 0.02),
                    ][s],
                )
            };
            elastic(image, base * c.0, base * c.1, base * c.2, rng)
        }
        Corruption::Frost => frost_with(image, severity, table, FrostTextures::builtin(table), rng),
        Corruption::Spatter => {
            let c = if cifar {
                [
                    (0.62, 0.1, 0.7, 0.7, 0.5, false),
                    (0.65, 0.1, 0.8, 0.7, 0.5, false),
                    (0.65, 0.3, 1.0, 0.69, 0.5, false),
                    (0.65, 0.1, 0.7, 0.69, 0.6, true),
                    (0.65, 0.1, 0.5, 0.68, 0.6, true),
                ][s]
            } else {
                [
                    (0.65, 0.3, 4.0, 0.69, 0.6, false),
                    (0.65, 0.3, 3.0, 0.68, 0.6, false),
                    (0.65, 0.3, 2.0, 0.68, 0.5, false),
                    (0.65, 0.3, 1.0, 0.65, 1.5, true),
                    (0.67, 0.4, 1.0, 0.65, 1.5, true),
                ][s]
            };
            spatter(image, c, rng)
        }
    }
}

/// OpenCV's `Canny(image, low, high)` with a 3x3 Sobel (replicated border) and the L1
/// gradient: non-maximum suppression in four directions, then hysteresis (8-connected).
pub fn canny(img: &[u8], h: usize, w: usize, low: i32, high: i32) -> Vec<bool> {
    let at = |y: isize, x: isize| {
        img[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize] as i32
    };
    let mut dx = vec![0i32; h * w];
    let mut dy = vec![0i32; h * w];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            dx[i] = (at(y - 1, x + 1) + 2 * at(y, x + 1) + at(y + 1, x + 1))
                - (at(y - 1, x - 1) + 2 * at(y, x - 1) + at(y + 1, x - 1));
            dy[i] = (at(y + 1, x - 1) + 2 * at(y + 1, x) + at(y + 1, x + 1))
                - (at(y - 1, x - 1) + 2 * at(y - 1, x) + at(y - 1, x + 1));
        }
    }
    let mag: Vec<i32> = dx.iter().zip(&dy).map(|(a, b)| a.abs() + b.abs()).collect();
    let m = |y: isize, x: isize| {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    const SHIFT: i64 = 15;
    const TG22: i64 = 13573;
    // 0: not an edge, 1: candidate, 2: strong.
    let mut state = vec![0u8; h * w];
    let mut stack = Vec::new();
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            let v = mag[i];
            if v <= low {
                continue;
            }
            let (xs, ys) = (dx[i].abs() as i64, (dy[i].abs() as i64) << SHIFT);
            let tg22x = xs * TG22;
            let keep = if ys < tg22x {
                v > m(y, x - 1) && v >= m(y, x + 1)
            } else {
                let tg67x = tg22x + (xs << (SHIFT + 1));
                if ys > tg67x {
                    v > m(y - 1, x) && v >= m(y + 1, x)
                } else {
                    let s = if (dx[i] ^ dy[i]) < 0 { -1 } else { 1 };
                    v > m(y - 1, x - s) && v > m(y + 1, x + s)
                }
            };
            if keep {
                if v > high {
                    state[i] = 2;
                    stack.push(i);
                } else {
                    state[i] = 1;
                }
            }
        }
    }
    while let Some(i) = stack.pop() {
        let (y, x) = ((i / w) as isize, (i % w) as isize);
        for (ny, nx) in [
            (-1, -1),
            (-1, 0),
            (-1, 1),
            (0, -1),
            (0, 1),
            (1, -1),
            (1, 0),
            (1, 1),
        ] {
            let (yy, xx) = (y + ny, x + nx);
            if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                let j = yy as usize * w + xx as usize;
                if state[j] == 1 {
                    state[j] = 2;
                    stack.push(j);
                }
            }
        }
    }
    state.iter().map(|&s| s == 2).collect()
}

/// OpenCV's `distanceTransform(src, DIST_L2, 5)`: the 5x5 chamfer distance (1, 1.4, 2.1969
/// in 16.16 fixed point) from every pixel to the nearest `zero` pixel.
pub fn distance_transform(zero: &[bool], h: usize, w: usize) -> Vec<f32> {
    const INF: i64 = i64::MAX / 4;
    let (hv, diag, long) = (65536i64, 91750i64, 143976i64);
    let mut d: Vec<i64> = zero.iter().map(|&z| if z { 0 } else { INF }).collect();
    let get = |d: &[i64], y: isize, x: isize| {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            INF
        } else {
            d[y as usize * w + x as usize]
        }
    };
    let forward = [
        (-2, -1, long),
        (-2, 1, long),
        (-1, -2, long),
        (-1, -1, diag),
        (-1, 0, hv),
        (-1, 1, diag),
        (-1, 2, long),
        (0, -1, hv),
    ];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            for &(dy, dx, cost) in &forward {
                d[i] = d[i].min(get(&d, y + dy, x + dx).saturating_add(cost));
            }
        }
    }
    for y in (0..h as isize).rev() {
        for x in (0..w as isize).rev() {
            let i = y as usize * w + x as usize;
            for &(dy, dx, cost) in &forward {
                d[i] = d[i].min(get(&d, y - dy, x - dx).saturating_add(cost));
            }
        }
    }
    d.iter().map(|&v| (v as f64 / 65536.0) as f32).collect()
}

/// `cv2.blur(plane, (3, 3))` (reflect-101 border) on floats.
fn box3(plane: &[f64], h: usize, w: usize) -> Vec<f64> {
    let mut out = vec![0f64; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut sum = 0.0;
            for dy in -1..=1 {
                for dx in -1..=1 {
                    sum +=
                        plane[reflect101(y as isize + dy, h) * w + reflect101(x as isize + dx, w)];
                }
            }
            out[y * w + x] = sum / 9.0;
        }
    }
    out
}

/// OpenCV's `equalizeHist`.
pub fn equalize_hist(v: &mut [u8]) {
    let mut hist = [0usize; 256];
    for &p in v.iter() {
        hist[p as usize] += 1;
    }
    let first = (0..256).find(|&i| hist[i] > 0).unwrap_or(0);
    if hist[first] == v.len() {
        return;
    }
    let scale = 255.0f32 / (v.len() - hist[first]) as f32;
    let mut lut = [0u8; 256];
    let mut sum = 0usize;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = ((sum as f32 * scale).round_ties_even()).clamp(0.0, 255.0) as u8;
    }
    for p in v.iter_mut() {
        *p = lut[*p as usize];
    }
}

/// `spatter`: a smoothed, thresholded random liquid layer; water (bright turquoise rims from
/// Canny edges, a distance transform, equalisation and an emboss kernel) or mud (brown).
fn spatter<R: Rng + ?Sized>(
    image: &Image,
    c: (f64, f64, f64, f64, f64, bool),
    rng: &mut R,
) -> Image {
    let (h, w) = (image.height, image.width);
    let normal = Normal::new(c.0, c.1).expect("positive scale");
    let mut liquid: Vec<f64> = (0..h * w).map(|_| normal.sample(rng)).collect();
    gaussian_filter_hwc(&mut liquid, (h, w, 1), c.2, 4.0, Border::Nearest);
    for v in liquid.iter_mut() {
        if *v < c.3 {
            *v = 0.0;
        }
    }
    let x: Vec<f32> = image.pixels.iter().map(|&v| v as f32 / 255.0).collect();
    let mut pixels = Vec::with_capacity(x.len());
    if !c.5 {
        // NumPy's float -> uint8 cast wraps out-of-range values.
        let liquid_u8: Vec<u8> = liquid.iter().map(|&v| (v * 255.0) as i64 as u8).collect();
        let edges = canny(&liquid_u8, h, w, 50, 150);
        let dist: Vec<f64> = distance_transform(&edges, h, w)
            .iter()
            .map(|&d| d.min(20.0) as f64)
            .collect();
        let mut dist_u8: Vec<u8> = box3(&dist, h, w).iter().map(|&v| v as f32 as u8).collect();
        equalize_hist(&mut dist_u8);
        let kernel = [[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]];
        let mut embossed = vec![0f64; h * w];
        for y in 0..h {
            for xx in 0..w {
                let mut sum = 0.0f64;
                for (ky, row) in kernel.iter().enumerate() {
                    for (kx, k) in row.iter().enumerate() {
                        let sy = reflect101(y as isize + ky as isize - 1, h);
                        let sx = reflect101(xx as isize + kx as isize - 1, w);
                        sum += k * dist_u8[sy * w + sx] as f64;
                    }
                }
                embossed[y * w + xx] = sum.round_ties_even().clamp(0.0, 255.0);
            }
        }
        let smoothed: Vec<f32> = box3(&embossed, h, w)
            .iter()
            .map(|&v| v.round_ties_even().clamp(0.0, 255.0) as f32)
            .collect();
        let m: Vec<f32> = liquid_u8
            .iter()
            .zip(&smoothed)
            .map(|(&l, &d)| l as f32 * d)
            .collect();
        let max = m.iter().copied().fold(0.0f32, f32::max);
        let colour = [175.0f32 / 255.0, 238.0 / 255.0, 238.0 / 255.0];
        for (i, px) in x.chunks_exact(3).enumerate() {
            // An all-zero layer (no drops) leaves the image as it is.
            let mi = if max > 0.0 {
                m[i] / max * c.4 as f32
            } else {
                0.0
            };
            for k in 0..3 {
                pixels.push(((px[k] + mi * colour[k]).clamp(0.0, 1.0) * 255.0) as u8);
            }
        }
    } else {
        let mut mud: Vec<f64> = liquid
            .iter()
            .map(|&v| if v > c.3 { 1.0 } else { 0.0 })
            .collect();
        gaussian_filter_hwc(&mut mud, (h, w, 1), c.4, 4.0, Border::Nearest);
        let colour = [63.0f32 / 255.0, 42.0 / 255.0, 20.0 / 255.0];
        for (i, px) in x.chunks_exact(3).enumerate() {
            let m = mud[i] as f32;
            let m = if m < 0.8 { 0.0 } else { m };
            for k in 0..3 {
                pixels.push(((px[k] * (1.0 - m) + colour[k] * m).clamp(0.0, 1.0) * 255.0) as u8);
            }
        }
    }
    Image::new(h, w, pixels)
}

/// Solves the affine map taking three points `from` to `to` (`cv2.getAffineTransform`):
/// rows (a, b, c) with x' = a x + b y + c.
fn affine_from_points(from: [[f64; 2]; 3], to: [[f64; 2]; 3]) -> [[f64; 3]; 2] {
    let [[x0, y0], [x1, y1], [x2, y2]] = from;
    let det = x0 * (y1 - y2) - y0 * (x1 - x2) + (x1 * y2 - x2 * y1);
    let solve = |v: [f64; 3]| {
        let a = (v[0] * (y1 - y2) - y0 * (v[1] - v[2]) + (v[1] * y2 - v[2] * y1)) / det;
        let b = (x0 * (v[1] - v[2]) - v[0] * (x1 - x2) + (x1 * v[2] - x2 * v[1])) / det;
        let c = (x0 * (y1 * v[2] - y2 * v[1]) - y0 * (x1 * v[2] - x2 * v[1])
            + v[0] * (x1 * y2 - x2 * y1))
            / det;
        [a, b, c]
    };
    [
        solve([to[0][0], to[1][0], to[2][0]]),
        solve([to[0][1], to[1][1], to[2][1]]),
    ]
}

/// `elastic_transform`: warp by a random affine map of three points around the centre
/// (`cv2.warpAffine`, bilinear, reflect-101 border), then resample at positions displaced by
/// `alpha` times Gaussian-smoothed uniform noise (`map_coordinates`, linear, reflect).
fn elastic<R: Rng + ?Sized>(
    image: &Image,
    alpha: f64,
    sigma: f64,
    jitter: f64,
    rng: &mut R,
) -> Image {
    let (h, w) = (image.height, image.width);
    let centre = [(h / 2) as f64, (w / 2) as f64];
    let square = (h.min(w) / 3) as f64;
    let from = [
        [centre[0] + square, centre[1] + square],
        [centre[0] + square, centre[1] - square],
        [centre[0] - square, centre[1] - square],
    ];
    let mut to = from;
    for p in to.iter_mut() {
        for v in p.iter_mut() {
            *v += rng.random_range(-jitter..jitter) as f32 as f64;
        }
    }
    // M maps source to destination; sample the source at M^-1 (destination).
    let m = affine_from_points(from, to);
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let inv = [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ];
    let x: Vec<f64> = image.pixels.iter().map(|&v| v as f64 / 255.0).collect();
    let sample_bilinear =
        |data: &[f64], sx: f64, sy: f64, c: usize, border: fn(isize, usize) -> usize| {
            let (x0, y0) = (sx.floor(), sy.floor());
            let (tx, ty) = (sx - x0, sy - y0);
            let at = |yy: isize, xx: isize| data[(border(yy, h) * w + border(xx, w)) * 3 + c];
            let (xi, yi) = (x0 as isize, y0 as isize);
            (1.0 - ty) * ((1.0 - tx) * at(yi, xi) + tx * at(yi, xi + 1))
                + ty * ((1.0 - tx) * at(yi + 1, xi) + tx * at(yi + 1, xi + 1))
        };
    let mut warped = vec![0f64; x.len()];
    for y in 0..h {
        for xx in 0..w {
            let (dx, dy) = (xx as f64 - m[0][2], y as f64 - m[1][2]);
            let sx = inv[0][0] * dx + inv[0][1] * dy;
            let sy = inv[1][0] * dx + inv[1][1] * dy;
            for c in 0..3 {
                warped[(y * w + xx) * 3 + c] = sample_bilinear(&x, sx, sy, c, reflect101);
            }
        }
    }
    let field = |rng: &mut R| {
        let mut f: Vec<f64> = (0..h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
        gaussian_filter_hwc(&mut f, (h, w, 1), sigma, 3.0, Border::Reflect);
        f.iter()
            .map(|v| (v * alpha) as f32 as f64)
            .collect::<Vec<f64>>()
    };
    let (dx, dy) = (field(rng), field(rng));
    let mut pixels = Vec::with_capacity(x.len());
    for y in 0..h {
        for xx in 0..w {
            let i = y * w + xx;
            for c in 0..3 {
                let v =
                    sample_bilinear(&warped, xx as f64 + dx[i], y as f64 + dy[i], c, half_sample);
                pixels.push((v.clamp(0.0, 1.0) * 255.0) as u8);
            }
        }
    }
    Image::new(h, w, pixels)
}

/// `snow`: a thresholded, zoomed Gaussian layer, motion-blurred at a random steep angle,
/// added twice (once rotated by 180 degrees) over an image pulled towards its brightened grey.
fn snow<R: Rng + ?Sized>(
    image: &Image,
    c: (f64, f64, f64, f64, f64, f64, f64),
    rng: &mut R,
) -> Image {
    assert_eq!(image.height, image.width, "snow needs square images");
    let (side, n) = (image.height, image.height * image.width);
    let normal = Normal::new(c.0, c.1).expect("positive scale");
    let layer: Vec<f64> = (0..n).map(|_| normal.sample(rng)).collect();
    let mut layer = clipped_zoom(&layer, side, 1, c.2);
    for v in layer.iter_mut() {
        if *v < c.3 {
            *v = 0.0;
        }
    }
    let flakes: Vec<u8> = layer
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0) as u8)
        .collect();
    let angle = rng.random_range(-135.0..-45.0);
    let blurred = motion_blur_u8(&flakes, side, side, 1, c.4, c.5, angle);
    let snow_at = |i: usize| blurred[i] as f64 / 255.0;
    let mut pixels = Vec::with_capacity(n * 3);
    let w6 = c.6 as f32;
    for (i, px) in image.pixels.chunks_exact(3).enumerate() {
        let x = [0, 1, 2].map(|k| (px[k] as f64 / 255.0) as f32);
        // cv2.cvtColor(RGB2GRAY) on float32.
        let grey = 0.299f32 * x[0] + 0.587f32 * x[1] + 0.114f32 * x[2];
        let lifted = grey * 1.5 + 0.5;
        let s = snow_at(i) + snow_at(n - 1 - i);
        for v in x {
            let mixed = w6 * v + (1.0 - w6) * v.max(lifted);
            pixels.push(((mixed as f64 + s).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    Image::new(side, side, pixels)
}

/// One Poisson law per byte value v, of rate `v / 255 * c` (none for rate 0): shot noise
/// draws from these, built once per image (an image's values take 256 values).
pub(crate) fn poisson_laws(c: f64) -> Vec<Option<Poisson<f64>>> {
    (0..256)
        .map(|v| {
            let rate = v as f64 / 255.0 * c;
            (rate > 0.0).then(|| Poisson::new(rate).expect("positive rate"))
        })
        .collect()
}

/// Applies `f` to every value in [0, 1]; the result is clipped and truncated.
fn map_values(image: &Image, mut f: impl FnMut(f64) -> f64) -> Image {
    let mut x = Float::from_image(image);
    for v in x.data.iter_mut() {
        *v = f(*v);
    }
    x.to_image()
}

/// `np.arange(start, stop, step)`: `ceil((stop - start) / step)` values. NumPy fills them
/// as `start + i * (a[1] - a[0])` with `a[1] = start + step`, so `arange(1, 1.26, 0.01)`
/// ends at 1.2500000000000002, not 1.25 (which matters: `round(26 * 1.25)` is a tie).
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..n).map(|i| start + i as f64 * delta).collect()
}

/// `contrast`: `(x - mean) * c + mean` with per-channel means over the image.
fn contrast(image: &Image, c: f64) -> Image {
    let mut x = Float::from_image(image);
    let n = (x.height * x.width) as f64;
    let mut means = [0.0f64; 3];
    for px in x.data.chunks_exact(3) {
        for k in 0..3 {
            means[k] += px[k];
        }
    }
    // np.mean sums pairwise; the difference to a running sum is far below one grey level.
    let means = means.map(|m| m / n);
    for px in x.data.chunks_exact_mut(3) {
        for k in 0..3 {
            px[k] = (px[k] - means[k]) * c + means[k];
        }
    }
    x.to_image()
}

/// skimage's `rgb2hsv` for one pixel (later maxima win ties, as there).
fn rgb_to_hsv(rgb: [f64; 3]) -> [f64; 3] {
    let v = rgb[0].max(rgb[1]).max(rgb[2]);
    let delta = v - rgb[0].min(rgb[1]).min(rgb[2]);
    if delta == 0.0 {
        return [0.0, 0.0, v];
    }
    let s = delta / v;
    let mut h = 0.0;
    if rgb[0] == v {
        h = (rgb[1] - rgb[2]) / delta;
    }
    if rgb[1] == v {
        h = 2.0 + (rgb[2] - rgb[0]) / delta;
    }
    if rgb[2] == v {
        h = 4.0 + (rgb[0] - rgb[1]) / delta;
    }
    [(h / 6.0).rem_euclid(1.0), s, v]
}

/// skimage's `hsv2rgb` for one pixel.
fn hsv_to_rgb(hsv: [f64; 3]) -> [f64; 3] {
    let [h, s, v] = hsv;
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    match (hi as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Applies `f` to every pixel in HSV (scikit-image's conversions); clipped, truncated.
pub(crate) fn map_hsv(image: &Image, f: impl Fn(&mut [f64; 3])) -> Image {
    let mut x = Float::from_image(image);
    for px in x.data.chunks_exact_mut(3) {
        let mut hsv = rgb_to_hsv([px[0], px[1], px[2]]);
        f(&mut hsv);
        px.copy_from_slice(&hsv_to_rgb(hsv));
    }
    x.to_image()
}

/// scipy's `gaussian_filter` over rows then columns of every channel (skimage's
/// `gaussian(..., channel_axis=-1)`): truncate 4, mode "nearest".
fn gaussian_filter(x: &mut Float, sigma: f64) {
    let (h, w) = (x.height, x.width);
    gaussian_filter_hwc(&mut x.data, (h, w, 3), sigma, 4.0, Border::Nearest);
}

/// Mirror index repeating the edge (`c b a | a b c | c b a`; scipy's "reflect").
fn half_sample(i: isize, n: usize) -> usize {
    let n = n as isize;
    let m = i.rem_euclid(2 * n);
    (if m < n { m } else { 2 * n - 1 - m }) as usize
}

/// How scipy's filters extend a line past its ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Border {
    /// Repeat the edge value ("nearest").
    Nearest,
    /// Mirror including the edge value ("reflect", half-sample symmetric).
    Reflect,
}

/// scipy's `gaussian_filter` of `channels` interleaved planes (HWC `shape`) with `truncate`
/// and `border`; sigma 0 leaves the data as it is, as scipy skips such axes.
fn gaussian_filter_hwc(
    data: &mut [f64],
    (h, w, channels): (usize, usize, usize),
    sigma: f64,
    truncate: f64,
    border: Border,
) {
    if sigma <= 1e-15 {
        return;
    }
    let radius = (truncate * sigma + 0.5) as usize;
    let mut weights: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let d = i as f64 - radius as f64;
            (-0.5 / (sigma * sigma) * d * d).exp()
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    for w in weights.iter_mut() {
        *w /= sum;
    }
    let c = channels;
    // Axis 0 (down the columns), then axis 1 (along the rows).
    for (len, stride, lines, line_step) in [(h, w * c, w * c, 1), (w, c, h, w * c)] {
        let mut line = vec![0.0; len + 2 * radius];
        for l in 0..lines {
            // Line l of axis 0 is one (column, channel); of axis 1, one row (all channels
            // interleaved, filtered per channel below).
            let starts: Vec<usize> = if line_step == 1 {
                vec![l]
            } else {
                (0..c).map(|k| l * line_step + k).collect()
            };
            for start in starts {
                for (i, slot) in line.iter_mut().enumerate() {
                    let at = i as isize - radius as isize;
                    let n = len as isize;
                    let src = match border {
                        Border::Nearest => at.clamp(0, n - 1),
                        Border::Reflect => half_sample(at, len) as isize,
                    } as usize;
                    *slot = data[start + src * stride];
                }
                for i in 0..len {
                    let centre = i + radius;
                    // scipy's symmetric correlate1d: centre tap, then the pairs from the
                    // outermost inwards.
                    let mut acc = line[centre] * weights[radius];
                    for j in (1..=radius).rev() {
                        acc += (line[centre + j] + line[centre - j]) * weights[radius - j];
                    }
                    data[start + i * stride] = acc;
                }
            }
        }
    }
}

/// OpenCV's `getGaussianKernel(n, sigma, CV_32F)`.
fn opencv_gaussian_kernel(n: usize, sigma: f64) -> Vec<f32> {
    let scale = -0.5 / (sigma * sigma);
    let mut k: Vec<f32> = (0..n)
        .map(|i| {
            let x = i as f64 - (n as f64 - 1.0) * 0.5;
            (scale * x * x).exp() as f32
        })
        .collect();
    let sum = 1.0 / k.iter().map(|&v| v as f64).sum::<f64>();
    for v in k.iter_mut() {
        *v = (*v as f64 * sum) as f32;
    }
    k
}

/// The reference's `disk(radius, alias_blur)`: a normalised float32 disk on a 17x17 (or
/// (2r+1)^2) grid, smoothed with a 3x3 (or 5x5) Gaussian (`cv2.GaussianBlur`).
fn disk_kernel(radius: f64, alias_blur: f64) -> (usize, Vec<f64>) {
    let (half, ksize) = if radius <= 8.0 {
        (8usize, 3usize)
    } else {
        (radius as usize, 5usize)
    };
    let n = 2 * half + 1;
    let mut disk = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (dy, dx) = (y as f64 - half as f64, x as f64 - half as f64);
            if dx * dx + dy * dy <= radius * radius {
                disk[y * n + x] = 1.0;
            }
        }
    }
    let total: f32 = disk.iter().sum();
    for v in disk.iter_mut() {
        *v /= total;
    }
    let g = opencv_gaussian_kernel(ksize, alias_blur);
    let a = ksize as isize / 2;
    let mut rows = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let mut acc = 0f32;
            for (j, &gj) in g.iter().enumerate() {
                acc += gj * disk[y * n + reflect101(x as isize + j as isize - a, n)];
            }
            rows[y * n + x] = acc;
        }
    }
    let mut out = vec![0f64; n * n];
    for y in 0..n {
        for x in 0..n {
            let mut acc = 0f32;
            for (j, &gj) in g.iter().enumerate() {
                acc += gj * rows[reflect101(y as isize + j as isize - a, n) * n + x];
            }
            out[y * n + x] = acc as f64;
        }
    }
    (n, out)
}

/// `defocus_blur`: `cv2.filter2D` of every channel with the disk kernel (reflect-101 border).
/// Every output value sums its taps in kernel order, as before; the sums run over whole rows
/// of a reflect-padded copy, tap by tap, so the compiler vectorises them.
fn defocus(image: &Image, radius: f64, alias_blur: f64) -> Image {
    if image.height == 0 || image.width == 0 {
        return image.clone();
    }
    let (n, kernel) = disk_kernel(radius, alias_blur);
    let half = n / 2;
    let taps: Vec<(usize, usize, f64)> = (0..n * n)
        .filter(|&i| kernel[i] != 0.0)
        .map(|i| (i / n, i % n, kernel[i]))
        .collect();
    let x = Float::from_image(image);
    let (h, w) = (x.height, x.width);
    let (ph, pw) = (h + 2 * half, w + 2 * half);
    let mut padded = vec![0f64; ph * pw * 3];
    for (py, row) in padded.chunks_exact_mut(pw * 3).enumerate() {
        let sy = reflect101(py as isize - half as isize, h);
        for (px, v) in row.chunks_exact_mut(3).enumerate() {
            let sx = reflect101(px as isize - half as isize, w);
            v.copy_from_slice(&x.data[(sy * w + sx) * 3..(sy * w + sx) * 3 + 3]);
        }
    }
    let mut out = Float {
        height: h,
        width: w,
        data: vec![0f64; h * w * 3],
    };
    for (y, acc) in out.data.chunks_exact_mut(w * 3).enumerate() {
        for &(ty, tx, k) in &taps {
            let start = ((y + ty) * pw + tx) * 3;
            for (a, &v) in acc.iter_mut().zip(&padded[start..start + w * 3]) {
                *a += k * v;
            }
        }
    }
    out.to_image()
}

/// `glass_blur`: blur, truncate to u8, copy each interior pixel from a random neighbour
/// (the reference's tuple "swap" of NumPy views is a one-way copy), blur again.
fn glass<R: Rng + ?Sized>(
    image: &Image,
    sigma: f64,
    delta: usize,
    iterations: usize,
    rng: &mut R,
) -> Image {
    let mut x = Float::from_image(image);
    gaussian_filter(&mut x, sigma);
    let mut pixels: Vec<u8> = x.data.iter().map(|&v| (v * 255.0) as u8).collect();
    let (h, w) = (image.height, image.width);
    let d = delta as isize;
    for _ in 0..iterations {
        // for h in range(H - d, d, -1): for w in range(W - d, d, -1)
        let mut yy = h as isize - d;
        while yy > d {
            let mut xx = w as isize - d;
            while xx > d {
                // np.random.randint(-d, d, size=(2,)) -> dx, dy in [-d, d).
                let dx = rng.random_range(-(d as i64)..d as i64) as isize;
                let dy = rng.random_range(-(d as i64)..d as i64) as isize;
                let (sy, sx) = (yy + dy, xx + dx);
                if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                    let from = (sy as usize * w + sx as usize) * 3;
                    let to = (yy as usize * w + xx as usize) * 3;
                    let px = [pixels[from], pixels[from + 1], pixels[from + 2]];
                    pixels[to..to + 3].copy_from_slice(&px);
                }
                xx -= 1;
            }
            yy -= 1;
        }
    }
    let mut y = Float {
        height: h,
        width: w,
        data: pixels.iter().map(|&v| v as f64 / 255.0).collect(),
    };
    gaussian_filter(&mut y, sigma);
    y.to_image()
}

/// The reference's `clipped_zoom`: crop the centre `ceil(side / z)`, zoom by `z` (scipy's
/// `zoom(order=1)`), trim the centre `side` back out. Only the kept output samples are
/// computed.
pub(crate) fn clipped_zoom(data: &[f64], side: usize, channels: usize, z: f64) -> Vec<f64> {
    let ch = (side as f64 / z).ceil() as usize;
    let top = (side - ch) / 2;
    let out_side = (ch as f64 * z).round_ties_even() as usize;
    let scale = if out_side > 1 {
        (ch as f64 - 1.0) / (out_side as f64 - 1.0)
    } else {
        1.0
    };
    let trim = (out_side - side) / 2;
    // Output index i of the zoom samples crop coordinate i * scale, i.e. source top + that.
    let coords: Vec<(usize, usize, f64)> = (trim..trim + side)
        .map(|i| {
            let c = i as f64 * scale;
            let i0 = c.floor() as usize;
            (
                top + i0.min(ch - 1),
                top + (i0 + 1).min(ch - 1),
                c - i0 as f64,
            )
        })
        .collect();
    // The horizontal interpolation of each source row, computed once and shared by the
    // output rows that use it (same expression, so the same bits as computing it inline).
    let row_len = side * channels;
    let mut horizontal: Vec<Option<Vec<f64>>> = vec![None; side];
    let interpolate_row = |y: usize| -> Vec<f64> {
        let src = &data[y * row_len..(y + 1) * row_len];
        let mut out = Vec::with_capacity(row_len);
        for &(x0, x1, tx) in &coords {
            for c in 0..channels {
                out.push((1.0 - tx) * src[x0 * channels + c] + tx * src[x1 * channels + c]);
            }
        }
        out
    };
    for &(y0, y1, _) in &coords {
        for y in [y0, y1] {
            if horizontal[y].is_none() {
                horizontal[y] = Some(interpolate_row(y));
            }
        }
    }
    let mut out = vec![0f64; side * side * channels];
    for (oy, &(y0, y1, ty)) in coords.iter().enumerate() {
        let (h0, h1) = (
            horizontal[y0].as_ref().expect("computed"),
            horizontal[y1].as_ref().expect("computed"),
        );
        for (o, (a, b)) in out[oy * row_len..(oy + 1) * row_len]
            .iter_mut()
            .zip(h0.iter().zip(h1))
        {
            *o = (1.0 - ty) * a + ty * b;
        }
    }
    out
}

/// `zoom_blur`: the mean of the image and its centre zooms by each factor (float32 data
/// and sums, as the reference's arrays).
fn zoom_blur(image: &Image, factors: &[f64]) -> Image {
    assert_eq!(image.height, image.width, "zoom blur needs square images");
    let side = image.height;
    let x: Vec<f32> = image
        .pixels
        .iter()
        .map(|&v| (v as f64 / 255.0) as f32)
        .collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut acc = vec![0f32; x.len()];
    for &z in factors {
        for (a, v) in acc.iter_mut().zip(clipped_zoom(&x64, side, 3, z)) {
            // scipy returns the input's dtype: float32.
            *a += v as f32;
        }
    }
    let n = (factors.len() + 1) as f32;
    Image::new(
        side,
        side,
        x.iter()
            .zip(&acc)
            .map(|(&v, &a)| (((v + a) / n).clamp(0.0, 1.0) * 255.0) as u8)
            .collect(),
    )
}

/// ImageMagick 6's `MotionBlurImage(radius, sigma, angle)` on 8-bit channels (Q16, the
/// build Wand uses): a one-sided Gaussian of `2 ceil(radius) + 1` taps along the angle,
/// integer offsets `ceil(i cos a - 0.5)`, `ceil(i sin a - 0.5)`, edge pixels for points
/// outside, the Q16 sum scaled back to 8 bits. `channels` values per pixel.
pub fn motion_blur_u8(
    data: &[u8],
    height: usize,
    width: usize,
    channels: usize,
    radius: f64,
    sigma: f64,
    angle_degrees: f64,
) -> Vec<u8> {
    let taps = (2.0 * radius.ceil() + 1.0) as usize;
    let mut kernel: Vec<f64> = (0..taps)
        .map(|i| {
            let i = i as f64;
            (-(i * i) / (2.0 * sigma * sigma)).exp() / ((2.0 * std::f64::consts::PI).sqrt() * sigma)
        })
        .collect();
    let total: f64 = kernel.iter().sum();
    for k in kernel.iter_mut() {
        *k /= total;
    }
    let a = angle_degrees.to_radians();
    let (px, py) = (taps as f64 * a.sin(), taps as f64 * a.cos());
    let norm = px.hypot(py);
    let offsets: Vec<(isize, isize)> = (0..taps)
        .map(|i| {
            let i = i as f64;
            (
                (i * py / norm - 0.5).ceil() as isize,
                (i * px / norm - 0.5).ceil() as isize,
            )
        })
        .collect();
    let mut out = vec![0u8; data.len()];
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                let mut sum = 0.0;
                for (&k, &(dx, dy)) in kernel.iter().zip(&offsets) {
                    let sx = (x as isize + dx).clamp(0, width as isize - 1) as usize;
                    let sy = (y as isize + dy).clamp(0, height as isize - 1) as usize;
                    sum += k * (data[(sy * width + sx) * channels + c] as f64 * 257.0);
                }
                // ImageMagick 6.9 (Q16) rounds the sum to a 16-bit quantum, and its 8-bit
                // output truncates quantum / 257 (bit-identical to `convert -motion-blur` on
                // the 40 golden cases).
                let quantum = (sum.clamp(0.0, 65535.0) + 0.5).floor();
                out[(y * width + x) * channels + c] = (quantum / 257.0) as u8;
            }
        }
    }
    out
}

/// The reference's diamond-square `plasma_fractal(mapsize, wibbledecay)`, in [0, 1].
fn plasma_fractal<R: Rng + ?Sized>(map_size: usize, decay: f64, rng: &mut R) -> Vec<f64> {
    assert!(map_size.is_power_of_two());
    let n = map_size;
    let mut map = vec![0f64; n * n];
    let mut step = n;
    let mut wibble = 100.0f64;
    let at = |y: usize, x: usize| y * n + x;
    while step >= 2 {
        let half = step / 2;
        let cells = n / step;
        let noise = |rng: &mut R, wibble: f64| wibble * rng.random_range(-wibble..wibble);
        // Squares: each centre gets the mean of its four corners (wrapping) plus noise.
        for i in 0..cells {
            for j in 0..cells {
                let (y0, x0) = (i * step, j * step);
                let (y1, x1) = (((i + 1) % cells) * step, ((j + 1) % cells) * step);
                let sum = map[at(y0, x0)] + map[at(y1, x0)] + map[at(y0, x1)] + map[at(y1, x1)];
                map[at(y0 + half, x0 + half)] = sum / 4.0 + noise(rng, wibble);
            }
        }
        // Diamonds on the rows of the corners, then on the rows of the centres.
        for i in 0..cells {
            for j in 0..cells {
                let (y0, x) = (i * step, j * step);
                let up = ((i + cells - 1) % cells) * step + half;
                let sum = map[at(y0 + half, x + half)]
                    + map[at(up, x + half)]
                    + map[at(y0, x)]
                    + map[at(y0, ((j + 1) % cells) * step)];
                map[at(y0, x + half)] = sum / 4.0 + noise(rng, wibble);
            }
        }
        for i in 0..cells {
            for j in 0..cells {
                let (y, x0) = (i * step, j * step);
                let left = ((j + cells - 1) % cells) * step + half;
                let sum = map[at(y + half, x0 + half)]
                    + map[at(y + half, left)]
                    + map[at(y, x0)]
                    + map[at(((i + 1) % cells) * step, x0)];
                map[at(y + half, x0)] = sum / 4.0 + noise(rng, wibble);
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = map.iter().copied().fold(f64::INFINITY, f64::min);
    for v in map.iter_mut() {
        *v -= min;
    }
    let max = map.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        for v in map.iter_mut() {
            *v /= max;
        }
    }
    map
}

/// `fog`: add a plasma haze, then rescale by max / (max + strength).
fn fog<R: Rng + ?Sized>(
    image: &Image,
    strength: f64,
    decay: f64,
    map_size: usize,
    rng: &mut R,
) -> Image {
    let mut x = Float::from_image(image);
    let max = x.data.iter().copied().fold(0.0, f64::max);
    let size = map_size.max(image.height.max(image.width).next_power_of_two());
    let plasma = plasma_fractal(size, decay, rng);
    for y in 0..x.height {
        for xx in 0..x.width {
            let p = strength * plasma[y * size + xx];
            for c in 0..3 {
                let v = &mut x.data[(y * x.width + xx) * 3 + c];
                *v = (*v + p) * max / (max + strength);
            }
        }
    }
    x.to_image()
}

/// Pillow's resampling filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BOX` (support 0.5).
    Box,
    /// `Image.BILINEAR` (triangle, support 1; antialiased when shrinking).
    Bilinear,
}

/// Pillow's `resize(size, Image.BOX)` for RGB.
pub fn resize_box(image: &Image, width: usize, height: usize) -> Image {
    resize_pil(image, width, height, PilFilter::Box)
}

/// Pillow's `resize(size, filter)` for RGB (its precomputed coefficients in 22-bit fixed
/// point, horizontal pass, then vertical pass).
pub fn resize_pil(image: &Image, width: usize, height: usize, filter: PilFilter) -> Image {
    resize_pil_with(image, width, height, filter, true)
}

/// [`resize_pil`], with the AVX2 build of the passes where the CPU has it and `vector`.
fn resize_pil_with(
    image: &Image,
    width: usize,
    height: usize,
    filter: PilFilter,
    vector: bool,
) -> Image {
    const PRECISION_BITS: u32 = PIL_PRECISION_BITS;
    let coefficients =
        |in_size: usize, out_size: usize| -> (usize, Vec<(usize, usize)>, Vec<i32>) {
            let (base_support, kernel): (f64, fn(f64) -> f64) = match filter {
                PilFilter::Box => (0.5, |t| if t > -0.5 && t <= 0.5 { 1.0 } else { 0.0 }),
                PilFilter::Bilinear => (1.0, |t: f64| {
                    let t = t.abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                }),
            };
            let scale = in_size as f64 / out_size as f64;
            let filterscale = scale.max(1.0);
            let support = base_support * filterscale;
            let ksize = support.ceil() as usize * 2 + 1;
            let mut bounds = Vec::with_capacity(out_size);
            let mut kk = vec![0i32; out_size * ksize];
            for xx in 0..out_size {
                let center = (xx as f64 + 0.5) * scale;
                let ss = 1.0 / filterscale;
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
                let weights: Vec<f64> = (0..xmax)
                    .map(|x| kernel((x as f64 + xmin as f64 - center + 0.5) * ss))
                    .collect();
                let total: f64 = weights.iter().sum();
                for (x, w) in weights.iter().enumerate() {
                    let w = if total != 0.0 { w / total } else { *w };
                    kk[xx * ksize + x] = if w < 0.0 {
                        (-0.5 + w * (1u64 << PRECISION_BITS) as f64) as i32
                    } else {
                        (0.5 + w * (1u64 << PRECISION_BITS) as f64) as i32
                    };
                }
                bounds.push((xmin, xmax));
            }
            (ksize, bounds, kk)
        };
    let (in_h, in_w) = (image.height, image.width);
    if [in_h, in_w, width, height].contains(&0) {
        return Image::new(height, width, vec![0; height * width * 3]);
    }
    let (kx, bx, kkx) = coefficients(in_w, width);
    let (ky, by, kky) = coefficients(in_h, height);
    // Horizontal pass over the rows the vertical pass uses.
    let first = by[0].0;
    let last = by[height - 1].0 + by[height - 1].1;
    let rows = last - first;
    let src_rows = &image.pixels[first * in_w * 3..last * in_w * 3];
    let passes = Passes {
        in_w,
        width,
        first,
        rows,
        taps: padded_taps(in_w, kx, &bx, &kkx),
        kx,
        by: &by,
        ky,
        kky: &kky,
    };
    #[cfg(target_arch = "x86_64")]
    if vector && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        let out = unsafe { passes.run_avx2(src_rows) };
        return Image::new(height, width, out);
    }
    let out = passes.run(src_rows);
    Image::new(height, width, out)
}

/// Fractional bits of Pillow's fixed-point resampling weights.
const PIL_PRECISION_BITS: u32 = 22;

/// The rounding offset every sum starts from (one half in fixed point).
const PIL_HALF: i32 = 1 << (PIL_PRECISION_BITS - 1);

/// Pillow's fixed-point rounding and clipping of an accumulated sum.
fn pil_clip(v: i32) -> u8 {
    (v >> PIL_PRECISION_BITS).clamp(0, 255) as u8
}

/// The two passes of Pillow's resampling, with their precomputed weights.
struct Passes<'a> {
    in_w: usize,
    width: usize,
    first: usize,
    rows: usize,
    taps: Vec<(usize, Vec<i32>)>,
    kx: usize,
    by: &'a [(usize, usize)],
    ky: usize,
    kky: &'a [i32],
}

impl Passes<'_> {
    /// [`Passes::run`] compiled for AVX2 (the same arithmetic, wider vectors).
    ///
    /// # Safety
    /// The CPU must support AVX2 (`is_x86_feature_detected!("avx2")`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, src_rows: &[u8]) -> Vec<u8> {
        self.run(src_rows)
    }

    /// The horizontal pass over the source rows the vertical pass uses, then the vertical
    /// pass; returns the output pixels.
    #[inline(always)]
    fn run(&self, src_rows: &[u8]) -> Vec<u8> {
        let (in_w, width, taps) = (self.in_w, self.width, &self.taps);
        let mut temp = vec![0u8; self.rows * width * 3];
        match self.kx {
            3 => horizontal_pass::<3>(src_rows, in_w, taps, &mut temp),
            5 => horizontal_pass::<5>(src_rows, in_w, taps, &mut temp),
            7 => horizontal_pass::<7>(src_rows, in_w, taps, &mut temp),
            9 => horizontal_pass::<9>(src_rows, in_w, taps, &mut temp),
            _ => horizontal_pass_any(src_rows, in_w, taps, &mut temp),
        }
        // Vertical pass: whole rows at a time, so the compiler vectorises the accumulation.
        let mut out = vec![0u8; self.by.len() * width * 3];
        let mut acc = vec![0i32; width * 3];
        let rows = out.chunks_exact_mut(width * 3).zip(self.by);
        for ((dst, &(ymin, ymax)), k) in rows.zip(self.kky.chunks(self.ky)) {
            acc.fill(PIL_HALF);
            for (y, &kv) in k[..ymax].iter().enumerate() {
                let at = (y + ymin - self.first) * width * 3;
                for (a, &v) in acc.iter_mut().zip(&temp[at..at + width * 3]) {
                    *a += v as i32 * kv;
                }
            }
            for (o, &a) in dst.iter_mut().zip(&acc) {
                *o = pil_clip(a);
            }
        }
        out
    }
}

/// Each output pixel's taps as (first source pixel, `ksize` weights): Pillow's (xmin,
/// weights) padded with zero weights, the window shifted left where it would run past the
/// row end. Zero weights add nothing, so the sums stay Pillow's exactly, and every pixel
/// has the same number of taps (a fixed-length loop the compiler unrolls).
fn padded_taps(
    in_size: usize,
    ksize: usize,
    bounds: &[(usize, usize)],
    kk: &[i32],
) -> Vec<(usize, Vec<i32>)> {
    bounds
        .iter()
        .enumerate()
        .map(|(o, &(xmin, xmax))| {
            let k = &kk[o * ksize..o * ksize + xmax];
            let start = xmin.min(in_size.saturating_sub(ksize));
            let mut weights = vec![0i32; ksize];
            weights[xmin - start..xmin - start + xmax].copy_from_slice(k);
            // Rows narrower than the kernel: keep the window inside the row.
            weights.truncate(in_size - start);
            (start, weights)
        })
        .collect()
}

/// The horizontal pass of Pillow's resampling for `K` taps per output pixel.
#[inline(always)]
fn horizontal_pass<const K: usize>(
    src_rows: &[u8],
    in_w: usize,
    taps: &[(usize, Vec<i32>)],
    temp: &mut [u8],
) {
    let width = taps.len();
    if taps.iter().any(|(_, k)| k.len() != K) {
        // A row narrower than the kernel: the loop for any number of taps handles it.
        return horizontal_pass_any(src_rows, in_w, taps, temp);
    }
    let fixed: Vec<(usize, [i32; K])> = taps
        .iter()
        .map(|(start, k)| (start * 3, k.as_slice().try_into().expect("K taps")))
        .collect();
    for (dst, src) in temp
        .chunks_exact_mut(width * 3)
        .zip(src_rows.chunks_exact(in_w * 3))
    {
        for (px, (start, k)) in dst.chunks_exact_mut(3).zip(&fixed) {
            let window = &src[*start..*start + 3 * K];
            let mut ss = [PIL_HALF; 3];
            for (p, &kv) in window.chunks_exact(3).zip(k) {
                ss[0] += p[0] as i32 * kv;
                ss[1] += p[1] as i32 * kv;
                ss[2] += p[2] as i32 * kv;
            }
            px.copy_from_slice(&[pil_clip(ss[0]), pil_clip(ss[1]), pil_clip(ss[2])]);
        }
    }
}

/// The horizontal pass for any number of taps per output pixel.
#[inline(always)]
fn horizontal_pass_any(src_rows: &[u8], in_w: usize, taps: &[(usize, Vec<i32>)], temp: &mut [u8]) {
    let width = taps.len();
    for (dst, src) in temp
        .chunks_exact_mut(width * 3)
        .zip(src_rows.chunks_exact(in_w * 3))
    {
        for (px, (start, k)) in dst.chunks_exact_mut(3).zip(taps) {
            let mut ss = [PIL_HALF; 3];
            for (p, &kv) in src[start * 3..].chunks_exact(3).zip(k) {
                ss[0] += p[0] as i32 * kv;
                ss[1] += p[1] as i32 * kv;
                ss[2] += p[2] as i32 * kv;
            }
            px.copy_from_slice(&[pil_clip(ss[0]), pil_clip(ss[1]), pil_clip(ss[2])]);
        }
    }
}

/// The cells of a sheet for a human to check the corruptions: one row per corruption, the
/// clean image then severities 1-5 (frost with `frost` where given, else the procedural
/// stand-in). Each cell draws from its own seeded generator.
pub fn preview_tiles(
    image: &Image,
    corruptions: &[Corruption],
    table: Table,
    seed: u64,
    frost: Option<&FrostTextures>,
) -> Vec<Vec<Image>> {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    corruptions
        .iter()
        .enumerate()
        .map(|(r, &c)| {
            let mut row = vec![image.clone()];
            for severity in 1..=5u8 {
                let cell_seed = seed ^ ((r as u64) << 8) ^ u64::from(severity);
                let mut rng = StdRng::seed_from_u64(cell_seed);
                row.push(corrupt_with(image, c, severity, table, frost, &mut rng));
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both builds of the resampling passes (plain and AVX2) give the same bytes, so the
    /// golden tests, which run whichever this CPU picks, cover both.
    #[test]
    fn resampling_passes_agree_with_and_without_avx2() {
        let (h, w) = (37, 53);
        let pixels = (0..h * w * 3).map(|i| (i * 7919 % 251) as u8).collect();
        let image = Image::new(h, w, pixels);
        for (out_w, out_h) in [(20, 11), (53, 80), (7, 37)] {
            let plain = resize_pil_with(&image, out_w, out_h, PilFilter::Bilinear, false);
            let fast = resize_pil(&image, out_w, out_h, PilFilter::Bilinear);
            assert_eq!(plain, fast, "{out_w}x{out_h}");
        }
        assert_eq!(
            resize_pil(&image, 0, 4, PilFilter::Bilinear).pixels.len(),
            0
        );
    }
}
