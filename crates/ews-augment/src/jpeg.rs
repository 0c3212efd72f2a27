//! A JPEG round trip (encode at a quality, decode) that reproduces what Pillow's
//! `save(format="JPEG", quality=q)` followed by `Image.open` gives with libjpeg-turbo's
//! defaults: YCbCr in 16-bit fixed point, 4:2:0 chroma (2x2 box with libjpeg's alternating
//! bias), the integer "islow" DCT and IDCT, the IJG tables scaled by quality (baseline,
//! clamped to 255), fancy (triangle) upsampling and fixed-point YCbCr -> RGB. Entropy coding
//! is lossless, so it is skipped: the round trip only needs the quantised coefficients.

use crate::Image;

const LUMINANCE: [u32; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

const CHROMINANCE: [u32; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// libjpeg's `jpeg_set_quality(q, force_baseline = TRUE)` applied to a basic table.
fn scaled_table(basic: &[u32; 64], quality: u32) -> [i32; 64] {
    let q = quality.clamp(1, 100);
    let scale = if q < 50 { 5000 / q } else { 200 - q * 2 };
    basic.map(|b| ((b * scale + 50) / 100).clamp(1, 255) as i32)
}

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// One pass of `jpeg_fdct_islow` over 8 values with stride `s` (rows: `last = false`).
fn fdct_1d(d: &mut [i64], at: usize, s: usize, last: bool) {
    let v = |i: usize| d[at + i * s];
    let (tmp0, tmp7) = (v(0) + v(7), v(0) - v(7));
    let (tmp1, tmp6) = (v(1) + v(6), v(1) - v(6));
    let (tmp2, tmp5) = (v(2) + v(5), v(2) - v(5));
    let (tmp3, tmp4) = (v(3) + v(4), v(3) - v(4));
    let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
    let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
    let shift = if last {
        CONST_BITS + PASS1_BITS
    } else {
        CONST_BITS - PASS1_BITS
    };
    let mut out = [0i64; 8];
    if last {
        out[0] = descale(tmp10 + tmp11, PASS1_BITS);
        out[4] = descale(tmp10 - tmp11, PASS1_BITS);
    } else {
        out[0] = (tmp10 + tmp11) << PASS1_BITS;
        out[4] = (tmp10 - tmp11) << PASS1_BITS;
    }
    let z1 = (tmp12 + tmp13) * FIX_0_541196100;
    out[2] = descale(z1 + tmp13 * FIX_0_765366865, shift);
    out[6] = descale(z1 - tmp12 * FIX_1_847759065, shift);
    let (z1, z2, z3, z4) = (tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7);
    let z5 = (z3 + z4) * FIX_1_175875602;
    let (t4, t5, t6, t7) = (
        tmp4 * FIX_0_298631336,
        tmp5 * FIX_2_053119869,
        tmp6 * FIX_3_072711026,
        tmp7 * FIX_1_501321110,
    );
    let z1 = -z1 * FIX_0_899976223;
    let z2 = -z2 * FIX_2_562915447;
    let z3 = -z3 * FIX_1_961570560 + z5;
    let z4 = -z4 * FIX_0_390180644 + z5;
    out[7] = descale(t4 + z1 + z3, shift);
    out[5] = descale(t5 + z2 + z4, shift);
    out[3] = descale(t6 + z2 + z3, shift);
    out[1] = descale(t7 + z1 + z4, shift);
    for (i, o) in out.into_iter().enumerate() {
        d[at + i * s] = o;
    }
}

/// One pass of `jpeg_idct_islow` over 8 values with stride `s`; the column pass
/// (`last = false`) keeps PASS1_BITS of extra precision, the row pass descales fully.
fn idct_1d(d: &mut [i64], at: usize, s: usize, last: bool) {
    let v = |i: usize| d[at + i * s];
    let (z2, z3) = (v(2), v(6));
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 - z3 * FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (v(0) + v(4)) << CONST_BITS;
    let tmp1 = (v(0) - v(4)) << CONST_BITS;
    let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
    let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
    let (t0, t1, t2, t3) = (v(7), v(5), v(3), v(1));
    let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
    let z5 = (z3 + z4) * FIX_1_175875602;
    let z1 = -z1 * FIX_0_899976223;
    let z2 = -z2 * FIX_2_562915447;
    let z3 = -z3 * FIX_1_961570560 + z5;
    let z4 = -z4 * FIX_0_390180644 + z5;
    let t0 = t0 * FIX_0_298631336 + z1 + z3;
    let t1 = t1 * FIX_2_053119869 + z2 + z4;
    let t2 = t2 * FIX_3_072711026 + z2 + z3;
    let t3 = t3 * FIX_1_501321110 + z1 + z4;
    let shift = if last {
        CONST_BITS + PASS1_BITS + 3
    } else {
        CONST_BITS - PASS1_BITS
    };
    let out = [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ];
    for (i, o) in out.into_iter().enumerate() {
        d[at + i * s] = descale(o, shift);
    }
}

/// Encodes and decodes one plane (`w x h`, both multiples of 8) block by block.
fn round_trip_plane(plane: &mut [i64], w: usize, h: usize, table: &[i32; 64]) {
    let mut block = [0i64; 64];
    for by in (0..h).step_by(8) {
        for bx in (0..w).step_by(8) {
            for y in 0..8 {
                for x in 0..8 {
                    block[y * 8 + x] = plane[(by + y) * w + bx + x] - 128;
                }
            }
            for r in 0..8 {
                fdct_1d(&mut block, r * 8, 1, false);
            }
            for c in 0..8 {
                fdct_1d(&mut block, c, 8, true);
            }
            // Quantise (rounded division by 8 q: the FDCT output is scaled by 8), dequantise.
            for (i, v) in block.iter_mut().enumerate() {
                let q = (table[i] as i64) << 3;
                let qv = if *v < 0 {
                    -((-*v + (q >> 1)) / q)
                } else {
                    (*v + (q >> 1)) / q
                };
                *v = qv * table[i] as i64;
            }
            for c in 0..8 {
                idct_1d(&mut block, c, 8, false);
            }
            for r in 0..8 {
                idct_1d(&mut block, r * 8, 1, true);
            }
            for y in 0..8 {
                for x in 0..8 {
                    plane[(by + y) * w + bx + x] = (block[y * 8 + x] + 128).clamp(0, 255);
                }
            }
        }
    }
}

/// libjpeg's `h2v2_fancy_upsample`: each output sample weighs its nearer input neighbours
/// 9:3:3:1 (edges replicated), with libjpeg's alternating rounding.
fn fancy_upsample(src: &[i64], w: usize, h: usize) -> Vec<i64> {
    let mut out = vec![0i64; 4 * w * h];
    let ow = 2 * w;
    for y in 0..h {
        for v in 0..2 {
            let other = if v == 0 {
                y.saturating_sub(1)
            } else {
                (y + 1).min(h - 1)
            };
            let colsum = |x: usize| src[y * w + x] * 3 + src[other * w + x];
            let row = &mut out[(2 * y + v) * ow..(2 * y + v + 1) * ow];
            if w == 1 {
                let s = colsum(0);
                row[0] = (s * 4 + 8) >> 4;
                row[1] = (s * 4 + 7) >> 4;
                continue;
            }
            for x in 0..w {
                let this = colsum(x);
                let last = if x == 0 { this } else { colsum(x - 1) };
                let next = if x + 1 == w { this } else { colsum(x + 1) };
                row[2 * x] = (this * 3 + last + 8) >> 4;
                row[2 * x + 1] = (this * 3 + next + 7) >> 4;
            }
        }
    }
    out
}

/// Pillow's JPEG save at `quality` followed by decoding (libjpeg-turbo defaults).
pub fn jpeg_round_trip(image: &Image, quality: u32) -> Image {
    const SCALE: u32 = 16;
    let fix = |x: f64| (x * (1u64 << SCALE) as f64 + 0.5) as i64;
    let one_half = 1i64 << (SCALE - 1);
    let cbcr_offset = 128i64 << SCALE;
    let (h, w) = (image.height, image.width);
    // Pad to whole 16 x 16 MCUs by replicating the last column and row.
    let (pw, ph) = (w.div_ceil(16) * 16, h.div_ceil(16) * 16);
    let mut y_plane = vec![0i64; pw * ph];
    let mut cb_full = vec![0i64; pw * ph];
    let mut cr_full = vec![0i64; pw * ph];
    for y in 0..ph {
        for x in 0..pw {
            let p = image.get(y.min(h - 1), x.min(w - 1));
            let (r, g, b) = (p[0] as i64, p[1] as i64, p[2] as i64);
            let i = y * pw + x;
            y_plane[i] = (fix(0.299) * r + fix(0.587) * g + fix(0.114) * b + one_half) >> SCALE;
            cb_full[i] =
                (-fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + cbcr_offset + one_half - 1)
                    >> SCALE;
            cr_full[i] =
                (fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + cbcr_offset + one_half - 1)
                    >> SCALE;
        }
    }
    // h2v2_downsample: 2x2 sums with a bias alternating 1, 2 along the row.
    let (cw, chh) = (pw / 2, ph / 2);
    let down = |full: &[i64]| {
        let mut out = vec![0i64; cw * chh];
        for y in 0..chh {
            let mut bias = 1;
            for x in 0..cw {
                let s = full[2 * y * pw + 2 * x]
                    + full[2 * y * pw + 2 * x + 1]
                    + full[(2 * y + 1) * pw + 2 * x]
                    + full[(2 * y + 1) * pw + 2 * x + 1];
                out[y * cw + x] = (s + bias) >> 2;
                bias ^= 3;
            }
        }
        out
    };
    let (mut cb, mut cr) = (down(&cb_full), down(&cr_full));
    round_trip_plane(&mut y_plane, pw, ph, &scaled_table(&LUMINANCE, quality));
    let chroma = scaled_table(&CHROMINANCE, quality);
    round_trip_plane(&mut cb, cw, chh, &chroma);
    round_trip_plane(&mut cr, cw, chh, &chroma);
    // The decoder upsamples the image's own chroma width/height (ceil(w / 2)).
    let (dw, dh) = (w.div_ceil(2), h.div_ceil(2));
    let crop = |plane: &[i64]| -> Vec<i64> {
        (0..dh)
            .flat_map(|y| plane[y * cw..y * cw + dw].to_vec())
            .collect()
    };
    let cb_up = fancy_upsample(&crop(&cb), dw, dh);
    let cr_up = fancy_upsample(&crop(&cr), dw, dh);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let yy = y_plane[y * pw + x];
            let cb = cb_up[y * 2 * dw + x] - 128;
            let cr = cr_up[y * 2 * dw + x] - 128;
            let r = yy + ((fix(1.402) * cr + one_half) >> SCALE);
            let g = yy + ((-fix(0.34414) * cb + one_half - fix(0.71414) * cr) >> SCALE);
            let b = yy + ((fix(1.772) * cb + one_half) >> SCALE);
            pixels.extend([r, g, b].map(|v| v.clamp(0, 255) as u8));
        }
    }
    Image::new(h, w, pixels)
}
