//! ImageNet-P's perturbation sequences (Hendrycks & Dietterich, 2019; hendrycks/robustness
//! `ImageNet-P/create_p/make_imagenet_p.py`): from an image resized to 256 px on its shorter
//! side, 31 frames (41 for translate) of slowly changing perturbation, each cropped to its
//! centre 224 x 224. Noise sequences start with the clean crop; the others move a parameter
//! step by step (blur angle, zoom, brightness, shift, rotation, tilt, scale).
//!
//! Geometric sequences follow the torchvision of the reference's time: `affine` about the
//! centre `(w / 2 + 0.5, h / 2 + 0.5)` through Pillow's `Image.transform` (today's
//! torchvision uses `(w / 2, h / 2)`: half a pixel apart); tilt is OpenCV's
//! `warpPerspective` as OpenCV up to 4.10 computes it (bilinear in 1/32-pixel fixed point,
//! black border; 4.11 and later interpolate in float32). The deterministic sequences equal
//! the reference formulas pixel for pixel (`tests/golden_perturb.rs`), and so does snow
//! from a given layer ([`snow_frames`]); the noise sequences and snow's layer draw from our
//! generator, so they match the reference in distribution only.

use rand::Rng;
use rand_distr::{Distribution, Normal, StandardNormal};

use crate::Image;
use crate::corrupt::{clipped_zoom, map_hsv, motion_blur_u8, poisson_laws};
use crate::ops::{Interpolation, affine};
pub use crate::standard::center_crop;

/// The ten test perturbations of ImageNet-P.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perturbation {
    /// Additive Gaussian noise, redrawn per frame.
    GaussianNoise,
    /// Poisson noise, redrawn per frame.
    ShotNoise,
    /// ImageMagick motion blur turning by 4 degrees per frame.
    MotionBlur,
    /// The running mean of frames zoomed by 0.4% more each.
    ZoomBlur,
    /// One snow layer, motion-blurred at an angle turning by 4 degrees per frame.
    Snow,
    /// HSV value shifted from -0.3 to +0.3.
    Brightness,
    /// Horizontal shifts from -20 to +20 pixels.
    Translate,
    /// Rotations from -15 to +15 degrees.
    Rotate,
    /// Perspective tilts from -15 to +15 degrees about both axes.
    Tilt,
    /// Scales from 0.4 to 1.15.
    Scale,
}

impl Perturbation {
    /// Every test perturbation, in the paper's Table 3 order.
    pub const ALL: [Perturbation; 10] = [
        Perturbation::GaussianNoise,
        Perturbation::ShotNoise,
        Perturbation::MotionBlur,
        Perturbation::ZoomBlur,
        Perturbation::Snow,
        Perturbation::Brightness,
        Perturbation::Translate,
        Perturbation::Rotate,
        Perturbation::Tilt,
        Perturbation::Scale,
    ];

    /// The dataset's folder name (`gaussian_noise`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Perturbation::GaussianNoise => "gaussian_noise",
            Perturbation::ShotNoise => "shot_noise",
            Perturbation::MotionBlur => "motion_blur",
            Perturbation::ZoomBlur => "zoom_blur",
            Perturbation::Snow => "snow",
            Perturbation::Brightness => "brightness",
            Perturbation::Translate => "translate",
            Perturbation::Rotate => "rotate",
            Perturbation::Tilt => "tilt",
            Perturbation::Scale => "scale",
        }
    }

    /// The perturbation with this folder name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the dataset has harder versions (`NAME_2`, `NAME_3`): the noise sequences.
    pub fn has_difficulties(self) -> bool {
        matches!(self, Perturbation::GaussianNoise | Perturbation::ShotNoise)
    }

    /// Frames per sequence.
    pub fn frames(self) -> usize {
        match self {
            Perturbation::Translate => 41,
            _ => 31,
        }
    }

    /// The folder of this perturbation at `difficulty` (noise: `NAME_2`, `NAME_3`).
    pub fn folder(self, difficulty: u8) -> String {
        match (self.has_difficulties(), difficulty) {
            (true, 2 | 3) => format!("{}_{difficulty}", self.name()),
            _ => self.name().to_string(),
        }
    }
}

/// The frames of `perturbation` at `difficulty` (1, or 2 and 3 for the noise sequences)
/// for an image already resized to 256 px on its shorter side (`Resize(256)`).
pub fn sequence<R: Rng + ?Sized>(
    resized: &Image,
    perturbation: Perturbation,
    difficulty: u8,
    rng: &mut R,
) -> Result<Vec<Image>, String> {
    if resized.height.min(resized.width) < 224 {
        return Err(format!(
            "ImageNet-P sequences start from 256 px images, got {}x{}",
            resized.height, resized.width
        ));
    }
    let level = match (perturbation.has_difficulties(), difficulty) {
        (_, 1) => 0,
        (true, 2 | 3) => difficulty as usize - 1,
        _ => {
            return Err(format!(
                "{} has difficulty 1 only (noise: 1, 2, 3), got {difficulty}",
                perturbation.name()
            ));
        }
    };
    let x = center_crop(resized, 224);
    let frames = match perturbation {
        Perturbation::GaussianNoise => gaussian_noise(&x, [0.03, 0.05, 0.08][level], rng),
        Perturbation::ShotNoise => shot_noise(&x, [300.0, 120.0, 60.0][level], rng),
        Perturbation::MotionBlur => (0..31)
            .map(|i| {
                let angle = (i as f64 - 30.0) * 4.0;
                let pixels = motion_blur_u8(&x.pixels, 224, 224, 3, 10.0, 3.0, angle);
                Image::new(224, 224, pixels)
            })
            .collect(),
        Perturbation::ZoomBlur => zoom_blur(resized),
        Perturbation::Snow => snow(&x, rng),
        Perturbation::Brightness => (0..31)
            .map(|i| {
                let c = (i as f64 - 15.0) * 2.0 / 100.0;
                map_hsv(&x, |hsv| hsv[2] = (hsv[2] + c).clamp(0.0, 1.0))
            })
            .collect(),
        Perturbation::Translate => (0..41)
            .map(|i| {
                affine_crop(
                    resized,
                    0.0,
                    (i as f64 - 20.0, 0.0),
                    1.0,
                    Interpolation::Nearest,
                )
            })
            .collect(),
        Perturbation::Rotate => (0..31)
            .map(|i| {
                affine_crop(
                    resized,
                    i as f64 - 15.0,
                    (0.0, 0.0),
                    1.0,
                    Interpolation::Bilinear,
                )
            })
            .collect(),
        Perturbation::Scale => (0..31)
            .map(|i| {
                let s = (i as f64 * 2.5 + 40.0) / 100.0;
                affine_crop(resized, 0.0, (0.0, 0.0), s, Interpolation::Bilinear)
            })
            .collect(),
        Perturbation::Tilt => (0..31)
            .map(|i| {
                let angle = (i as f64 - 15.0).to_radians();
                center_crop(
                    &warp_perspective(resized, &tilt_matrix(resized, angle)),
                    224,
                )
            })
            .collect(),
    };
    Ok(frames)
}

/// The clean crop, then 30 frames of `noise` applied to every value anew.
fn noisy_frames<R: Rng + ?Sized>(
    x: &Image,
    rng: &mut R,
    mut noise: impl FnMut(u8, &mut R) -> u8,
) -> Vec<Image> {
    let mut frames = vec![x.clone()];
    for _ in 1..31 {
        let pixels = x.pixels.iter().map(|&v| noise(v, rng)).collect();
        frames.push(Image::new(x.height, x.width, pixels));
    }
    frames
}

/// `trn.ToPILImage()(torch.clamp(x + sigma * torch.randn_like(x), 0, 1))` per frame after
/// the clean one, in float32 as torch computes (`mul(255).byte()` truncates).
fn gaussian_noise<R: Rng + ?Sized>(x: &Image, sigma: f32, rng: &mut R) -> Vec<Image> {
    noisy_frames(x, rng, |v, rng| {
        let n: f32 = StandardNormal.sample(rng);
        ((v as f32 / 255.0 + sigma * n).clamp(0.0, 1.0) * 255.0) as u8
    })
}

/// `np.uint8(255 * np.clip(np.random.poisson(x / 255 * lam) / lam, 0, 1))` per frame after
/// the clean one.
fn shot_noise<R: Rng + ?Sized>(x: &Image, lam: f64, rng: &mut R) -> Vec<Image> {
    let laws = poisson_laws(lam);
    noisy_frames(x, rng, |v, rng| {
        let k = laws[v as usize].as_ref().map_or(0.0, |p| p.sample(rng));
        (255.0 * (k / lam).clamp(0.0, 1.0)) as u8
    })
}

/// The clean crop, then the running float32 mean of the crops of the image zoomed by
/// `1 + 0.004 i` (bilinear), each frame `ToPILImage(mean)` (truncating).
fn zoom_blur(resized: &Image) -> Vec<Image> {
    let first = center_crop(resized, 224);
    let mut sum: Vec<f32> = first.pixels.iter().map(|&v| v as f32 / 255.0).collect();
    let mut frames = vec![first];
    for i in 1..31 {
        let z = affine_crop(
            resized,
            0.0,
            (0.0, 0.0),
            1.0 + 0.004 * i as f64,
            Interpolation::Bilinear,
        );
        for (s, &v) in sum.iter_mut().zip(&z.pixels) {
            *s += v as f32 / 255.0;
        }
        let n = (i + 1) as f32;
        let pixels = sum.iter().map(|&s| (s / n * 255.0) as u8).collect();
        frames.push(Image::new(224, 224, pixels));
    }
    frames
}

/// One snow layer drawn from a normal law (mean 0.05, deviation 0.3), then [`snow_frames`].
fn snow<R: Rng + ?Sized>(x: &Image, rng: &mut R) -> Vec<Image> {
    let normal = Normal::new(0.05, 0.3).expect("positive scale");
    let layer: Vec<f64> = (0..224 * 224).map(|_| normal.sample(rng)).collect();
    snow_frames(x, &layer)
}

/// The 31 snow frames over `x` (224 x 224) from a drawn snow `layer` (224 x 224 values):
/// the layer zoomed 3x, below 0.5 cleared, motion-blurred with radius 14, sigma 4 at
/// `4 i - 150` degrees, added twice (once turned by 180 degrees) over
/// `0.85 x + 0.15 max(x, 1.5 grey + 0.5)`, in float64 as the reference (grey in float32).
pub fn snow_frames(x: &Image, layer: &[f64]) -> Vec<Image> {
    let n = 224 * 224;
    assert!(
        (x.height, x.width) == (224, 224) && layer.len() == n,
        "snow frames are 224 x 224"
    );
    let layer = clipped_zoom(layer, 224, 1, 3.0);
    let flakes: Vec<u8> = layer
        .iter()
        .map(|&v| {
            if v < 0.5 {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0) as u8
            }
        })
        .collect();
    let base: Vec<f64> = x
        .pixels
        .chunks_exact(3)
        .flat_map(|px| {
            let v = [0, 1, 2].map(|k| px[k] as f64 / 255.0);
            let f = v.map(|c| c as f32);
            let grey = 0.299f32 * f[0] + 0.587f32 * f[1] + 0.114f32 * f[2];
            let lifted = (grey * 1.5 + 0.5) as f64;
            v.map(|c| 0.85 * c + (1.0 - 0.85) * c.max(lifted))
        })
        .collect();
    (0..31)
        .map(|i| {
            let angle = i as f64 * 4.0 - 150.0;
            let blurred = motion_blur_u8(&flakes, 224, 224, 1, 14.0, 4.0, angle);
            let s = |p: usize| blurred[p] as f64 / 255.0;
            let pixels = base
                .iter()
                .enumerate()
                .map(|(k, &b)| {
                    let p = k / 3;
                    ((b + s(p) + s(n - 1 - p)).clamp(0.0, 1.0) * 255.0) as u8
                })
                .collect();
            Image::new(224, 224, pixels)
        })
        .collect()
}

/// The centre 224 x 224 of torchvision 0.2's `affine(resized, angle, translate, scale)` with
/// a black fill (`CenterCrop(224)(trn_F.affine(...))` of the reference).
fn affine_crop(
    resized: &Image,
    angle_degrees: f64,
    translate: (f64, f64),
    scale: f64,
    interpolation: Interpolation,
) -> Image {
    let m = torchvision_affine(resized, angle_degrees, translate, scale);
    center_crop(&affine(resized, m, interpolation, [0; 3]), 224)
}

/// The inverse affine matrix of torchvision 0.2's `affine(img, angle, translate, scale,
/// shear=0)` on a PIL image: about `(w / 2 + 0.5, h / 2 + 0.5)`, for `Image.transform`.
pub fn torchvision_affine(
    image: &Image,
    angle_degrees: f64,
    translate: (f64, f64),
    scale: f64,
) -> [f64; 6] {
    let (cx, cy) = (
        image.width as f64 * 0.5 + 0.5,
        image.height as f64 * 0.5 + 0.5,
    );
    let a = angle_degrees.to_radians();
    // torchvision 0.2 with shear 0: `scale = 1 / scale`, `d = cos^2 + sin^2` (not always
    // exactly 1 in floating point), every entry `scale / d * m`.
    let d = a.cos() * a.cos() + a.sin() * a.sin();
    let factor = (1.0 / scale) / d;
    let mut m = [a.cos(), a.sin(), 0.0, -a.sin(), a.cos(), 0.0].map(|v| factor * v);
    m[2] += m[0] * (-cx - translate.0) + m[1] * (-cy - translate.1);
    m[5] += m[3] * (-cx - translate.0) + m[4] * (-cy - translate.1);
    m[2] += cx;
    m[5] += cy;
    m
}

/// The reference's tilt homography for an image of this size, `phi = theta = angle`:
/// `P2 T RX RY P1` with focal length `sqrt(w^2 + h^2)`.
pub fn tilt_matrix(image: &Image, angle: f64) -> [f64; 9] {
    let (w, h) = (image.width as f64, image.height as f64);
    let f = w.hypot(h);
    let (c, s) = (angle.cos(), angle.sin());
    let p1 = [
        [1.0, 0.0, -w / 2.0],
        [0.0, 1.0, -h / 2.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
    ];
    let rx = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, c, -s, 0.0],
        [0.0, s, c, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let ry = [
        [c, 0.0, -s, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [s, 0.0, c, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let t = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, f],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let p2 = [
        [f, 0.0, w / 2.0, 0.0],
        [0.0, f, h / 2.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ];
    // NumPy evaluates `P2 @ T @ RX @ RY @ P1` left to right.
    let m = matmul(&matmul(&matmul(&matmul(&p2, &t), &rx), &ry), &p1);
    [
        m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2],
    ]
}

fn matmul<const N: usize, const K: usize, const M: usize>(
    a: &[[f64; K]; N],
    b: &[[f64; M]; K],
) -> [[f64; M]; N] {
    let mut out = [[0.0; M]; N];
    for i in 0..N {
        for j in 0..M {
            out[i][j] = (0..K).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// The inverse of a 3x3 matrix (cofactors over the determinant).
fn invert3(m: &[f64; 9]) -> [f64; 9] {
    let cof = [
        m[4] * m[8] - m[5] * m[7],
        m[2] * m[7] - m[1] * m[8],
        m[1] * m[5] - m[2] * m[4],
        m[5] * m[6] - m[3] * m[8],
        m[0] * m[8] - m[2] * m[6],
        m[2] * m[3] - m[0] * m[5],
        m[3] * m[7] - m[4] * m[6],
        m[1] * m[6] - m[0] * m[7],
        m[0] * m[4] - m[1] * m[3],
    ];
    let det = m[0] * cof[0] + m[1] * cof[3] + m[2] * cof[6];
    cof.map(|v| v / det)
}

/// OpenCV's `warpPerspective(src, M, (w, h))` with bilinear interpolation and a black
/// constant border on 8-bit RGB: each output pixel maps through `M^-1` to a source point
/// rounded to 1/32 pixel, and its four neighbours are weighted in 15-bit fixed point.
pub fn warp_perspective(image: &Image, m: &[f64; 9]) -> Image {
    const BITS: i64 = 5;
    const STEPS: i64 = 1 << BITS;
    let inv = invert3(m);
    let (h, w) = (image.height as i64, image.width as i64);
    let mut out = vec![0u8; image.pixels.len()];
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f64, y as f64);
            let wd = inv[6] * xf + inv[7] * yf + inv[8];
            let wd = if wd != 0.0 { STEPS as f64 / wd } else { 0.0 };
            let fx =
                ((inv[0] * xf + inv[1] * yf + inv[2]) * wd).clamp(i32::MIN as f64, i32::MAX as f64);
            let fy =
                ((inv[3] * xf + inv[4] * yf + inv[5]) * wd).clamp(i32::MIN as f64, i32::MAX as f64);
            let (sx, sy) = (fx.round_ties_even() as i64, fy.round_ties_even() as i64);
            let (x0, y0) = (sx >> BITS, sy >> BITS);
            let (ax, ay) = (sx & (STEPS - 1), sy & (STEPS - 1));
            let weights = [
                (STEPS - ax) * (STEPS - ay),
                ax * (STEPS - ay),
                (STEPS - ax) * ay,
                ax * ay,
            ]
            .map(|v| v * 32);
            let corners = [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)];
            for c in 0..3 {
                let mut sum = 0i64;
                for (&(cx, cy), &wt) in corners.iter().zip(&weights) {
                    if (0..w).contains(&cx) && (0..h).contains(&cy) {
                        sum += image.pixels[((cy * w + cx) * 3 + c) as usize] as i64 * wt;
                    }
                }
                out[((y * w + x) * 3 + c) as usize] = ((sum + (1 << 14)) >> 15).clamp(0, 255) as u8;
            }
        }
    }
    Image::new(image.height, image.width, out)
}
