//! Standard training augmentation: pad, random crop, horizontal flip; and resizing.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Image;
use crate::corrupt::{PilFilter, resize_pil};

/// How the border is filled before a random crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Black border (torchvision `RandomCrop(padding=4)`).
    Zero,
    /// Mirror without repeating the edge (`padding_mode="reflect"`).
    Reflect,
}

/// Pad by `padding` pixels, crop back to the original size at a random offset, and flip
/// horizontally with probability 0.5 (the standard CIFAR augmentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandardTransform {
    /// Border added on every side before cropping.
    pub padding: usize,
    /// Border fill.
    pub fill: Padding,
    /// Whether to flip horizontally with probability 0.5.
    pub flip: bool,
}

impl Default for StandardTransform {
    fn default() -> Self {
        Self {
            padding: 4,
            fill: Padding::Zero,
            flip: true,
        }
    }
}

/// Mirror index without repeating the edge (`d c b | a b c d | c b a`; OpenCV's
/// BORDER_REFLECT_101, torchvision's "reflect" padding).
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

impl StandardTransform {
    /// Applies the transform with randomness from `rng`.
    pub fn apply<R: Rng + ?Sized>(&self, image: &Image, rng: &mut R) -> Image {
        let p = self.padding as isize;
        let dy = rng.random_range(0..=2 * self.padding) as isize - p;
        let dx = rng.random_range(0..=2 * self.padding) as isize - p;
        let flip = self.flip && rng.random::<bool>();
        self.crop_at(image, dy, dx, flip)
    }

    /// The crop whose top-left corner is at (dy, dx) relative to the original image, flipped
    /// or not: the deterministic core of [`StandardTransform::apply`].
    pub fn crop_at(&self, image: &Image, dy: isize, dx: isize, flip: bool) -> Image {
        let (h, w) = (image.height, image.width);
        let mut out = vec![0u8; h * w * 3];
        // Source column of every output column (None = zero fill), computed once.
        let columns: Vec<Option<usize>> = (0..w)
            .map(|x| {
                let sx = if flip { w - 1 - x } else { x };
                let ix = sx as isize + dx;
                match (ix >= 0 && (ix as usize) < w, self.fill) {
                    (true, _) => Some(ix as usize),
                    (false, Padding::Zero) => None,
                    (false, Padding::Reflect) => Some(reflect(ix, w)),
                }
            })
            .collect();
        let row_len = w * 3;
        for (y, dst) in out.chunks_exact_mut(row_len).enumerate() {
            let iy = y as isize + dy;
            let sy = match (iy >= 0 && (iy as usize) < h, self.fill) {
                (true, _) => iy as usize,
                (false, Padding::Zero) => continue,
                (false, Padding::Reflect) => reflect(iy, h),
            };
            let src = &image.pixels[sy * row_len..(sy + 1) * row_len];
            if self.fill == Padding::Zero {
                // The in-image columns form one run: a memcpy, or a reversed copy if flipped.
                let (lo, hi) = (dx.max(0), (w as isize + dx).min(w as isize));
                if lo >= hi {
                    continue;
                }
                let run = &src[lo as usize * 3..hi as usize * 3];
                if flip {
                    // Output column x reads w - 1 - x + dx: the run, mirrored, starts at
                    // output column w - hi + dx.
                    let start = (w as isize - hi + dx) as usize * 3;
                    let target = &mut dst[start..start + run.len()];
                    for (d, s) in target.chunks_exact_mut(3).zip(run.chunks_exact(3).rev()) {
                        d.copy_from_slice(s);
                    }
                } else {
                    let start = (lo - dx) as usize * 3;
                    dst[start..start + run.len()].copy_from_slice(run);
                }
                continue;
            }
            for (px, col) in dst.chunks_exact_mut(3).zip(&columns) {
                if let Some(sx) = col {
                    px.copy_from_slice(&src[sx * 3..sx * 3 + 3]);
                }
            }
        }
        Image::new(h, w, out)
    }
}

/// Bilinear resize (pixel centres aligned, as PIL/torchvision without antialiasing).
pub fn resize_bilinear(image: &Image, height: usize, width: usize) -> Image {
    if image.height == height && image.width == width {
        return image.clone();
    }
    let sy = image.height as f32 / height as f32;
    let sx = image.width as f32 / width as f32;
    resize_bilinear_scaled(image, height, width, sy, sx)
}

/// Bilinear resize to `height x width` sampling the source every `sy` rows and `sx`
/// columns (pixel centres aligned): OpenCV's `cv2.resize(img, (0, 0), fx=1/sx, fy=1/sy)`,
/// whose output size is rounded while the sampling keeps the exact factor.
pub fn resize_bilinear_scaled(
    image: &Image,
    height: usize,
    width: usize,
    sy: f32,
    sx: f32,
) -> Image {
    let mut out = vec![0u8; height * width * 3];
    for y in 0..height {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (image.height - 1) as f32);
        let (y0, wy) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(image.height - 1);
        for x in 0..width {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (image.width - 1) as f32);
            let (x0, wx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(image.width - 1);
            let (a, b, c, d) = (
                image.get(y0, x0),
                image.get(y0, x1),
                image.get(y1, x0),
                image.get(y1, x1),
            );
            for ch in 0..3 {
                let top = a[ch] as f32 * (1.0 - wx) + b[ch] as f32 * wx;
                let bottom = c[ch] as f32 * (1.0 - wx) + d[ch] as f32 * wx;
                out[(y * width + x) * 3 + ch] = (top * (1.0 - wy) + bottom * wy).round() as u8;
            }
        }
    }
    Image::new(height, width, out)
}

/// Crops the `height x width` window at (top, left).
pub fn crop(image: &Image, top: usize, left: usize, height: usize, width: usize) -> Image {
    assert!(
        top + height <= image.height && left + width <= image.width,
        "crop outside the image"
    );
    let mut out = Vec::with_capacity(height * width * 3);
    for y in top..top + height {
        let row = (y * image.width + left) * 3;
        out.extend_from_slice(&image.pixels[row..row + width * 3]);
    }
    Image::new(height, width, out)
}

/// torchvision's `Resize(size)` on a PIL image: the shorter side to `size`, the longer to
/// `int(size * long / short)`, with Pillow's bilinear filter (antialiased when shrinking).
pub fn resize_shorter_side(image: &Image, size: usize) -> Image {
    let (h, w) = (image.height, image.width);
    let (nh, nw) = if h <= w {
        (size, (size as f64 * w as f64 / h as f64) as usize)
    } else {
        ((size as f64 * h as f64 / w as f64) as usize, size)
    };
    resize_pil(image, nw, nh, PilFilter::Bilinear)
}

/// torchvision's `Resize(resize) + CenterCrop(size)` on a PIL image (ImageNet evaluation,
/// 256 -> 224): the shorter side to `resize`, the longer to `int(resize * long / short)`,
/// with Pillow's bilinear filter (antialiased when shrinking), then the central crop at
/// `int(round((h - size) / 2))` (Python's rounding, half to even).
pub fn resize_center_crop(image: &Image, resize: usize, size: usize) -> Image {
    center_crop(&resize_shorter_side(image, resize), size)
}

/// torchvision's `CenterCrop(size)` (of an image at least that large; smaller sides are
/// kept whole): the window at `int(round((h - size) / 2))`, Python's rounding.
pub fn center_crop(image: &Image, size: usize) -> Image {
    let (h, w) = (image.height, image.width);
    let top = ((h as f64 - size as f64) / 2.0).round_ties_even().max(0.0) as usize;
    let left = ((w as f64 - size as f64) / 2.0).round_ties_even().max(0.0) as usize;
    crop(image, top, left, size.min(h), size.min(w))
}

/// torchvision's `RandomResizedCrop.get_params` (scale 0.08-1, ratio 3/4-4/3): up to ten
/// draws of an area and a log-uniform aspect ratio, sides rounded half to even as Python
/// does; when none fits, the whole image clamped to the ratio range, centred. Returns
/// (top, left, height, width).
pub fn random_resized_crop_window<R: Rng + ?Sized>(
    height: usize,
    width: usize,
    rng: &mut R,
) -> (usize, usize, usize, usize) {
    let (min_ratio, max_ratio) = (3.0f64 / 4.0, 4.0f64 / 3.0);
    let area = (height * width) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let ratio = rng.random_range(min_ratio.ln()..=max_ratio.ln()).exp();
        let cw = (target * ratio).sqrt().round_ties_even() as usize;
        let ch = (target / ratio).sqrt().round_ties_even() as usize;
        if cw > 0 && ch > 0 && cw <= width && ch <= height {
            let top = rng.random_range(0..=height - ch);
            let left = rng.random_range(0..=width - cw);
            return (top, left, ch, cw);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (ch, cw) = if in_ratio < min_ratio {
        ((width as f64 / min_ratio).round_ties_even() as usize, width)
    } else if in_ratio > max_ratio {
        (
            height,
            (height as f64 * max_ratio).round_ties_even() as usize,
        )
    } else {
        (height, width)
    };
    ((height - ch) / 2, (width - cw) / 2, ch, cw)
}

/// torchvision's `resized_crop` on a PIL image: the window resized to `size x size` with
/// Pillow's bilinear filter (antialiased when shrinking).
pub fn resized_crop(
    image: &Image,
    (top, left, height, width): (usize, usize, usize, usize),
    size: usize,
) -> Image {
    if (top, left, height, width) == (0, 0, image.height, image.width) {
        return resize_pil(image, size, size, PilFilter::Bilinear);
    }
    resize_pil(
        &crop(image, top, left, height, width),
        size,
        size,
        PilFilter::Bilinear,
    )
}

/// torchvision's `RandomResizedCrop(size)` on a PIL image followed by a horizontal flip with
/// probability 0.5 (ImageNet training).
pub fn random_resized_crop<R: Rng + ?Sized>(image: &Image, size: usize, rng: &mut R) -> Image {
    let window = random_resized_crop_window(image.height, image.width, rng);
    resized_crop_and_flip(image, window, size, rng)
}

/// The part of [`random_resized_crop`] after the window is drawn: the window resized to
/// `size x size`, then flipped with probability 0.5.
pub fn resized_crop_and_flip<R: Rng + ?Sized>(
    image: &Image,
    window: (usize, usize, usize, usize),
    size: usize,
    rng: &mut R,
) -> Image {
    let cropped = resized_crop(image, window, size);
    if rng.random::<bool>() {
        flip_horizontal(&cropped)
    } else {
        cropped
    }
}

/// Mirrors the image left to right.
pub fn flip_horizontal(image: &Image) -> Image {
    let (h, w) = (image.height, image.width);
    if h == 0 || w == 0 {
        return image.clone();
    }
    let mut out = vec![0u8; h * w * 3];
    for (dst, src) in out
        .chunks_exact_mut(w * 3)
        .zip(image.pixels.chunks_exact(w * 3))
    {
        for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3).rev()) {
            d.copy_from_slice(s);
        }
    }
    Image::new(h, w, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ramp(h: usize, w: usize) -> Image {
        Image::new(h, w, (0..h * w * 3).map(|i| (i % 251) as u8).collect())
    }

    #[test]
    fn crop_at_zero_offset_is_identity_and_flip_mirrors() {
        let img = ramp(5, 7);
        let t = StandardTransform::default();
        assert_eq!(t.crop_at(&img, 0, 0, false), img);
        assert_eq!(t.crop_at(&img, 0, 0, true), flip_horizontal(&img));
        assert_eq!(flip_horizontal(&flip_horizontal(&img)), img);
    }

    #[test]
    fn shifted_crops_pad_with_zeros_or_reflection() {
        let img = ramp(4, 4);
        let zero = StandardTransform::default().crop_at(&img, -1, -2, false);
        assert_eq!(zero.get(0, 0), [0, 0, 0]);
        assert_eq!(zero.get(1, 2), img.get(0, 0));
        let t = StandardTransform {
            fill: Padding::Reflect,
            ..Default::default()
        };
        let refl = t.crop_at(&img, -1, -2, false);
        // Reflect without edge repeat: index -1 maps to 1, -2 to 2.
        assert_eq!(refl.get(0, 0), img.get(1, 2));
        assert_eq!(refl.get(1, 2), img.get(0, 0));
    }

    /// The definition: output (y, x) reads input (y + dy, x' + dx), x' = x or w - 1 - x.
    fn crop_by_definition(
        t: &StandardTransform,
        img: &Image,
        dy: isize,
        dx: isize,
        flip: bool,
    ) -> Image {
        let (h, w) = (img.height, img.width);
        let mut out = Image::new(h, w, vec![0; h * w * 3]);
        for y in 0..h {
            for x in 0..w {
                let sx = if flip { w - 1 - x } else { x } as isize + dx;
                let sy = y as isize + dy;
                let inside = sx >= 0 && sy >= 0 && (sx as usize) < w && (sy as usize) < h;
                let src = match (inside, t.fill) {
                    (true, _) => Some((sy as usize, sx as usize)),
                    (false, Padding::Zero) => None,
                    (false, Padding::Reflect) => Some((reflect(sy, h), reflect(sx, w))),
                };
                if let Some((sy, sx)) = src {
                    let o = (y * w + x) * 3;
                    out.pixels[o..o + 3].copy_from_slice(&img.get(sy, sx));
                }
            }
        }
        out
    }

    #[test]
    fn fast_crop_paths_equal_the_definition_for_every_offset() {
        let img = ramp(7, 9);
        for fill in [Padding::Zero, Padding::Reflect] {
            let t = StandardTransform {
                padding: 4,
                fill,
                flip: true,
            };
            for dy in -10..=10 {
                for dx in -11..=11 {
                    for flip in [false, true] {
                        assert_eq!(
                            t.crop_at(&img, dy, dx, flip),
                            crop_by_definition(&t, &img, dy, dx, flip),
                            "{fill:?} dy {dy} dx {dx} flip {flip}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn random_crops_are_seeded_and_stay_within_the_padding() {
        let img = ramp(32, 32);
        let t = StandardTransform::default();
        let a = t.apply(&img, &mut StdRng::seed_from_u64(1));
        let b = t.apply(&img, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        let mut rng = StdRng::seed_from_u64(2);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            let out = t.apply(&img, &mut rng);
            assert_eq!((out.height, out.width), (32, 32));
            distinct.insert(out.pixels);
        }
        assert!(distinct.len() > 50, "crops and flips must vary");
    }

    #[test]
    fn resizing_and_center_crop_shapes() {
        let img = ramp(40, 60);
        let r = resize_bilinear(&img, 20, 30);
        assert_eq!((r.height, r.width), (20, 30));
        let c = resize_center_crop(&img, 32, 28);
        assert_eq!((c.height, c.width), (28, 28));
        let solid = Image::new(10, 10, vec![77; 300]);
        assert!(
            resize_bilinear(&solid, 23, 7)
                .pixels
                .iter()
                .all(|&p| p == 77)
        );
        let rr = random_resized_crop(&img, 16, &mut StdRng::seed_from_u64(0));
        assert_eq!((rr.height, rr.width), (16, 16));
    }
}
