//! Image operations with the semantics of Pillow's `ImageOps`, `ImageEnhance` and
//! `Image.transform` / `Image.rotate`, which torchvision (on PIL images), AutoAugment and
//! AugMix call. The golden tests compare every operation with Pillow's output.

use crate::Image;

/// Resampling filter of geometric operations (Pillow `Resampling.NEAREST` / `BILINEAR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour (torchvision's AutoAugment default).
    Nearest,
    /// Bilinear on the 2x2 neighbourhood (AugMix's choice).
    Bilinear,
}

/// Applies a per-channel lookup table.
fn apply_lut(image: &Image, luts: &[[u8; 256]; 3]) -> Image {
    let mut out = image.clone();
    for px in out.pixels.chunks_exact_mut(3) {
        for c in 0..3 {
            px[c] = luts[c][px[c] as usize];
        }
    }
    out
}

fn histograms(image: &Image) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    for px in image.pixels.chunks_exact(3) {
        for c in 0..3 {
            h[c][px[c] as usize] += 1;
        }
    }
    h
}

fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// `ImageOps.autocontrast(image)` (cutoff 0): stretches each channel so its darkest value
/// becomes 0 and its brightest 255.
pub fn autocontrast(image: &Image) -> Image {
    let hist = histograms(image);
    let luts = std::array::from_fn(|c| {
        let h = &hist[c];
        let lo = (0..256).find(|&i| h[i] > 0).unwrap_or(255);
        let hi = (0..256).rev().find(|&i| h[i] > 0).unwrap_or(0);
        if hi <= lo {
            return identity_lut();
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        std::array::from_fn(|i| (i as f64 * scale + offset).clamp(0.0, 255.0) as u8)
    });
    apply_lut(image, &luts)
}

/// `ImageOps.equalize(image)`: per-channel histogram equalisation (Pillow >= 10 divides the
/// cumulative count by 255, as torchvision's tensor kernel does; older Pillow used 256).
pub fn equalize(image: &Image) -> Image {
    let hist = histograms(image);
    let luts = std::array::from_fn(|c| {
        let h = &hist[c];
        let used: Vec<u32> = h.iter().copied().filter(|&n| n > 0).collect();
        if used.len() <= 1 {
            return identity_lut();
        }
        let step = (used.iter().sum::<u32>() - used[used.len() - 1]) / 255;
        if step == 0 {
            return identity_lut();
        }
        let mut n = step / 2;
        std::array::from_fn(|i| {
            let v = (n / step).min(255) as u8;
            n += h[i];
            v
        })
    });
    apply_lut(image, &luts)
}

/// `ImageOps.invert`: 255 - v.
pub fn invert(image: &Image) -> Image {
    let lut = std::array::from_fn(|i| 255 - i as u8);
    apply_lut(image, &[lut; 3])
}

/// `ImageOps.posterize(image, bits)`: keeps the `bits` most significant bits (0..=8).
pub fn posterize(image: &Image, bits: u8) -> Image {
    let keep = bits.min(8) as u32;
    let mask = !((1u32 << (8 - keep)) - 1) as u8;
    let lut = std::array::from_fn(|i| i as u8 & mask);
    apply_lut(image, &[lut; 3])
}

/// `ImageOps.solarize(image, threshold)`: inverts every value at or above `threshold`.
pub fn solarize(image: &Image, threshold: f64) -> Image {
    let lut = std::array::from_fn(|i| {
        if (i as f64) < threshold {
            i as u8
        } else {
            255 - i as u8
        }
    });
    apply_lut(image, &[lut; 3])
}

/// Pillow's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point).
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, image, alpha)` for one value: `d + alpha * (v - d)` in single
/// precision, truncated. Pillow clamps to 0..=255 when extrapolating; Rust's saturating
/// float-to-int cast does the same (and never leaves the range when interpolating).
#[inline]
fn blend_value(d: u8, v: u8, alpha: f32) -> u8 {
    let t = d as i32 as f32 + alpha * (v as i32 - d as i32) as f32;
    // SAFETY: callers pass a finite alpha (checked once per image by `check_alpha`), so t
    // is never NaN, and after clamping it fits an i32.
    unsafe { t.clamp(0.0, 255.0).to_int_unchecked::<i32>() as u8 }
}

/// The blend factor in single precision; panics unless finite (a NaN or infinite factor
/// has no meaningful image and would make `blend_value` unsound).
fn check_alpha(factor: f64) -> f32 {
    let alpha = factor as f32;
    assert!(
        alpha.is_finite(),
        "enhance factor must be finite, got {factor}"
    );
    alpha
}

fn blend_into(degenerate: &[u8], image: &Image, alpha: f32) -> Image {
    let pixels = degenerate
        .iter()
        .zip(&image.pixels)
        .map(|(&d, &v)| blend_value(d, v, alpha))
        .collect();
    Image::new(image.height, image.width, pixels)
}

/// Blend with a flat degenerate image: one lookup table.
fn blend_flat(flat: u8, image: &Image, alpha: f32) -> Image {
    let lut: [u8; 256] = std::array::from_fn(|v| blend_value(flat, v as u8, alpha));
    apply_lut(image, &[lut; 3])
}

/// `ImageEnhance.Color(image).enhance(factor)`: 0 gives the grey image, 1 the original.
pub fn enhance_color(image: &Image, factor: f64) -> Image {
    let alpha = check_alpha(factor);
    let mut out = image.clone();
    for px in out.pixels.chunks_exact_mut(3) {
        let l = luma(px[0], px[1], px[2]);
        for v in px.iter_mut() {
            *v = blend_value(l, *v, alpha);
        }
    }
    out
}

/// `ImageEnhance.Contrast(image).enhance(factor)`: blends with a flat image of the rounded
/// mean luma.
pub fn enhance_contrast(image: &Image, factor: f64) -> Image {
    let mut sum = 0u64;
    for px in image.pixels.chunks_exact(3) {
        sum += luma(px[0], px[1], px[2]) as u64;
    }
    let count = (image.width * image.height).max(1) as f64;
    let mean = (sum as f64 / count + 0.5) as u8;
    blend_flat(mean, image, check_alpha(factor))
}

/// `ImageEnhance.Brightness(image).enhance(factor)`: blends with black.
pub fn enhance_brightness(image: &Image, factor: f64) -> Image {
    blend_flat(0, image, check_alpha(factor))
}

/// `ImageFilter.SMOOTH` (3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13 in single precision, rounded;
/// border pixels copied).
pub fn smooth(image: &Image) -> Image {
    let (h, w) = (image.height, image.width);
    let mut out = image.clone();
    if h < 3 || w < 3 {
        return out;
    }
    let edge = 1.0f32 / 13.0;
    let centre = 5.0f32 / 13.0;
    let row = w * 3;
    let p = &image.pixels;
    for y in 1..h - 1 {
        let (above, here, below) = (
            &p[(y - 1) * row..y * row],
            &p[y * row..(y + 1) * row],
            &p[(y + 1) * row..(y + 2) * row],
        );
        let dst = &mut out.pixels[y * row + 3..(y + 1) * row - 3];
        // Left, centre and right neighbours of every interior value, as equal-length slices
        // so that the loop has no bounds checks and vectorises.
        let n = row - 6;
        let (al, ac, ar) = (&above[..n], &above[3..3 + n], &above[6..6 + n]);
        let (hl, hc, hr) = (&here[..n], &here[3..3 + n], &here[6..6 + n]);
        let (bl, bc, br) = (&below[..n], &below[3..3 + n], &below[6..6 + n]);
        for i in 0..n {
            let line = |l: u8, c: u8, r: u8, k_mid: f32| {
                l as f32 * edge + c as f32 * k_mid + r as f32 * edge
            };
            // Pillow's order: the row below first (its kernel is flipped), and a start of
            // 0.5 so that truncation rounds.
            let mut ss = 0.5f32;
            ss += line(bl[i], bc[i], br[i], edge);
            ss += line(hl[i], hc[i], hr[i], centre);
            ss += line(al[i], ac[i], ar[i], edge);
            // SAFETY: the kernel sums to 1, so 0.5 <= ss < 256 and the conversion cannot
            // overflow (unlike `as`, it needs no saturation code and vectorises).
            dst[i] = unsafe { ss.to_int_unchecked::<i32>() } as u8;
        }
    }
    out
}

/// `ImageEnhance.Sharpness(image).enhance(factor)`: blends with the SMOOTH-filtered image;
/// factors above 1 sharpen.
pub fn enhance_sharpness(image: &Image, factor: f64) -> Image {
    let blurred = smooth(image);
    blend_into(&blurred.pixels, image, check_alpha(factor))
}

/// Pillow's `FLOOR` for doubles converted to int.
fn pil_floor(v: f64) -> i64 {
    if v < 0.0 { v.floor() as i64 } else { v as i64 }
}

/// `image.transform(size, Image.AFFINE, matrix, resample, fillcolor=fill)` with the output
/// the size of the input. `matrix = (a, b, c, d, e, f)` maps an output pixel centre (x, y)
/// to the input point (a x + b y + c, d x + e y + f); pixels that map outside get `fill`.
/// Nearest-neighbour follows Pillow's three code paths (pure scaling, 16.16 fixed point,
/// floating point), so outputs agree pixel for pixel.
pub fn affine(
    image: &Image,
    matrix: [f64; 6],
    interpolation: Interpolation,
    fill: [u8; 3],
) -> Image {
    let (h, w) = (image.height, image.width);
    let mut out = Image::new(h, w, fill.repeat(h * w));
    let a = matrix;
    let copy = |out: &mut Image, y: usize, x: usize, sy: usize, sx: usize| {
        let s = (sy * w + sx) * 3;
        let o = (y * w + x) * 3;
        out.pixels[o..o + 3].copy_from_slice(&image.pixels[s..s + 3]);
    };
    match interpolation {
        _ if a[0] == 1.0
            && a[1] == 0.0
            && a[3] == 0.0
            && a[4] == 1.0
            && a[2].fract() == 0.0
            && a[5].fract() == 0.0
            && a[2].abs() < 1e9
            && a[5].abs() < 1e9 =>
        {
            // A whole-pixel shift: every sample lands on a pixel centre, so Pillow's bilinear
            // filter (dx = dy = 0) and its nearest-neighbour scaling path both return that
            // pixel; copy rows instead.
            let (tx, ty) = (a[2] as i64, a[5] as i64);
            let row = w * 3;
            let x_lo = (-tx).clamp(0, w as i64) as usize;
            let x_hi = (w as i64 - tx).clamp(0, w as i64) as usize;
            if x_lo < x_hi {
                let src_x = (x_lo as i64 + tx) as usize;
                for y in 0..h {
                    let sy = y as i64 + ty;
                    if sy < 0 || sy >= h as i64 {
                        continue;
                    }
                    let src = &image.pixels[sy as usize * row..(sy as usize + 1) * row];
                    out.pixels[y * row + x_lo * 3..y * row + x_hi * 3]
                        .copy_from_slice(&src[src_x * 3..(src_x + x_hi - x_lo) * 3]);
                }
            }
        }
        Interpolation::Bilinear => {
            let table = f64_table();
            for y in 0..h {
                let yc = y as f64 + 0.5;
                let (bx, by) = (a[1] * yc, a[4] * yc);
                let dst = &mut out.pixels[y * w * 3..(y + 1) * w * 3];
                for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                    let xc = x as f64 + 0.5;
                    // Pillow's affine_transform: a0 x + a1 y + a2, in this order.
                    let xin = a[0] * xc + bx + a[2];
                    let yin = a[3] * xc + by + a[5];
                    bilinear_sample(image, table, xin, yin, px);
                }
            }
        }
        Interpolation::Nearest if a[1] == 0.0 && a[3] == 0.0 => {
            // ImagingScaleAffine.
            let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
            let mut xo = a[2] + a[0] * 0.5;
            let mut xin_table = vec![-1i64; w];
            for slot in xin_table.iter_mut() {
                let xin = coord(xo);
                if xin >= 0 && xin < w as i64 {
                    *slot = xin;
                }
                xo += a[0];
            }
            let mut yo = a[5] + a[4] * 0.5;
            for y in 0..h {
                let yi = coord(yo);
                if yi >= 0 && yi < h as i64 {
                    for (x, &xi) in xin_table.iter().enumerate() {
                        if xi >= 0 {
                            copy(&mut out, y, x, yi as usize, xi as usize);
                        }
                    }
                }
                yo += a[4];
            }
        }
        Interpolation::Nearest => {
            let check = |x: f64, y: f64| {
                (x * a[0] + y * a[1] + a[2]).abs() < 32768.0
                    && (x * a[3] + y * a[4] + a[5]).abs() < 32768.0
            };
            let (wf, hf) = (w as f64, h as f64);
            if check(0.0, 0.0) && check(wf, hf) && check(0.0, hf) && check(wf, 0.0) {
                // affine_fixed: 16.16 fixed point.
                let fix = |v: f64| pil_floor(v * 65536.0 + 0.5) as i32;
                let (a0, a1, a3, a4) = (fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4]));
                let mut a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
                let mut a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
                for y in 0..h {
                    let (mut xx, mut yy) = (a2, a5);
                    for x in 0..w {
                        let xin = xx >> 16;
                        if xin >= 0 && (xin as usize) < w {
                            let yin = yy >> 16;
                            if yin >= 0 && (yin as usize) < h {
                                copy(&mut out, y, x, yin as usize, xin as usize);
                            }
                        }
                        xx = xx.wrapping_add(a0);
                        yy = yy.wrapping_add(a3);
                    }
                    a2 = a2.wrapping_add(a1);
                    a5 = a5.wrapping_add(a4);
                }
            } else {
                let mut xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
                let mut yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
                for y in 0..h {
                    let (mut xx, mut yy) = (xo, yo);
                    for x in 0..w {
                        if xx >= 0.0 && xx < wf && yy >= 0.0 && yy < hf {
                            copy(&mut out, y, x, yy as usize, xx as usize);
                        }
                        xx += a[0];
                        yy += a[3];
                    }
                    xo += a[1];
                    yo += a[4];
                }
            }
        }
    }
    out
}

/// Pillow's bilinear filter for RGB, writing into `px`; points outside the image leave `px`
/// (the fill) untouched; neighbours beyond the edge are clamped.
#[inline]
fn bilinear_sample(image: &Image, f: &[f64; 256], xin: f64, yin: f64, px: &mut [u8]) {
    let (w, h) = (image.width as i64, image.height as i64);
    if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
        return;
    }
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    // Both are >= -0.5 here, so floor is -1 below zero and truncation otherwise (cheaper
    // than a libm floor call on baseline x86-64).
    let floor = |v: f64| if v < 0.0 { -1 } else { v as i64 };
    let (x, y) = (floor(xin), floor(yin));
    let (dx, dy) = (xin - x as f64, yin - y as f64);
    let row = image.width * 3;
    let p = &image.pixels;
    let lerp = |a: f64, b: f64, d: f64| a + (b - a) * d;
    if x >= 0 && x + 1 < w && y >= 0 && y + 1 < h {
        // Interior: the 2x2 neighbourhood as two 6-byte runs.
        let at = y as usize * row + x as usize * 3;
        let top: &[u8; 6] = p[at..at + 6].try_into().expect("in bounds");
        let bottom: &[u8; 6] = p[at + row..at + row + 6].try_into().expect("in bounds");
        // lerp(a, b, 0) == a exactly, so zero offsets (shears keep one of them zero) skip
        // work without changing a bit of the result.
        for c in 0..3 {
            let v1 = if dx == 0.0 {
                f[top[c] as usize]
            } else {
                lerp(f[top[c] as usize], f[top[c + 3] as usize], dx)
            };
            let v = if dy == 0.0 {
                v1
            } else {
                let v2 = if dx == 0.0 {
                    f[bottom[c] as usize]
                } else {
                    lerp(f[bottom[c] as usize], f[bottom[c + 3] as usize], dx)
                };
                lerp(v1, v2, dy)
            };
            debug_assert!((0.0..256.0).contains(&v));
            // SAFETY: a convex combination of byte values lies in [0, 255], so the
            // conversion cannot overflow (and skips the saturation checks of `as`).
            px[c] = unsafe { v.to_int_unchecked::<i32>() } as u8;
        }
        return;
    }
    let x0 = x.clamp(0, w - 1) as usize * 3;
    let x1 = (x + 1).clamp(0, w - 1) as usize * 3;
    let r0 = y.clamp(0, h - 1) as usize * row;
    let r1 = (y + 1 < h).then(|| (y + 1) as usize * row);
    for c in 0..3 {
        let v1 = lerp(p[r0 + x0 + c] as f64, p[r0 + x1 + c] as f64, dx);
        let v2 = match r1 {
            Some(r1) => lerp(p[r1 + x0 + c] as f64, p[r1 + x1 + c] as f64, dx),
            None => v1,
        };
        px[c] = lerp(v1, v2, dy) as u8;
    }
}

/// Byte values as doubles (a load instead of an int-to-float conversion).
fn f64_table() -> &'static [f64; 256] {
    static TABLE: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|v| v as f64))
}

/// Python's `round(v, 15)` (decimal rounding of the exact binary value, half to even).
fn round15(v: f64) -> f64 {
    format!("{v:.15}").parse().expect("formatted float parses")
}

/// `image.rotate(degrees, resample, fillcolor=fill)`: counter-clockwise about the centre,
/// same size; multiples of 90 degrees are exact transposes as in Pillow.
pub fn rotate(image: &Image, degrees: f64, interpolation: Interpolation, fill: [u8; 3]) -> Image {
    let angle = degrees.rem_euclid(360.0);
    let (h, w) = (image.height, image.width);
    if angle == 0.0 {
        return image.clone();
    }
    if angle == 180.0 || ((angle == 90.0 || angle == 270.0) && h == w) {
        let mut out = image.clone();
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = match angle as u32 {
                    180 => (h - 1 - y, w - 1 - x),
                    90 => (x, w - 1 - y),
                    _ => (h - 1 - x, y),
                };
                let s = (sy * w + sx) * 3;
                let o = (y * w + x) * 3;
                out.pixels[o..o + 3].copy_from_slice(&image.pixels[s..s + 3]);
            }
        }
        return out;
    }
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let rad = -angle.to_radians();
    let mut m = [
        round15(rad.cos()),
        round15(rad.sin()),
        0.0,
        round15(-rad.sin()),
        round15(rad.cos()),
        0.0,
    ];
    m[2] += m[0] * -cx + m[1] * -cy;
    m[5] += m[3] * -cx + m[4] * -cy;
    m[2] += cx;
    m[5] += cy;
    affine(image, m, interpolation, fill)
}

/// Fills the square of side `size` centred at (`cy`, `cx`), clipped to the image, with
/// `fill` (Cutout, DeVries & Taylor; AutoAugment's `Cutout` op).
pub fn cutout(image: &Image, cy: usize, cx: usize, size: usize, fill: [u8; 3]) -> Image {
    let mut out = image.clone();
    let half = size / 2;
    let (y0, x0) = (cy.saturating_sub(half), cx.saturating_sub(half));
    let (y1, x1) = (
        (cy + size - half).min(image.height),
        (cx + size - half).min(image.width),
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let o = (y * image.width + x) * 3;
            out.pixels[o..o + 3].copy_from_slice(&fill);
        }
    }
    out
}
