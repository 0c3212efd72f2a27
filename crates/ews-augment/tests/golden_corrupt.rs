//! Deterministic corruptions against the reference generators' formulas (golden files from
//! `tests/golden/make_corrupt_golden.py`: NumPy, SciPy, scikit-image, OpenCV, Pillow,
//! ImageMagick 6), and the random ones against their distributions.

#[path = "golden/files.rs"]
mod files;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ews_augment::Image;
use ews_augment::corrupt::{Corruption, Table, corrupt};
use files::{inputs, load};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn crop(img: &Image, top: usize, left: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(h * w * 3);
    for y in top..top + h {
        out.extend_from_slice(
            &img.pixels[(y * img.width + left) * 3..(y * img.width + left + w) * 3],
        );
    }
    out
}

/// The golden bytes an entry points to, checked to lie inside the blob.
fn golden_bytes<'a>(blob: &'a [u8], at: usize, len: usize, what: &str) -> &'a [u8] {
    blob.get(at..at + len)
        .unwrap_or_else(|| panic!("{what}: golden bytes {at}..{} past the blob", at + len))
}

/// Value-by-value comparison of equally long outputs: (values, values differing, max |diff|).
fn compare(got: &[u8], expected: &[u8], what: &str) -> (usize, usize, u8) {
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}: {} values, the golden file has {}",
        got.len(),
        expected.len()
    );
    let mut differ = 0;
    let mut max = 0u8;
    for (a, b) in got.iter().zip(expected) {
        let d = a.abs_diff(*b);
        differ += (d != 0) as usize;
        max = max.max(d);
    }
    (got.len(), differ, max)
}

/// The deterministic corruptions of the golden file; the README claims max |diff| 0 for each.
const BIT_IDENTICAL: [&str; 8] = [
    "contrast",
    "brightness",
    "saturate",
    "gaussian_blur",
    "defocus_blur",
    "zoom_blur",
    "pixelate",
    "jpeg_compression",
];

/// (corruption, table, severity).
type Case = (String, String, u8);
/// (images, values, values differing, max |diff|).
type Tally = (usize, usize, usize, u8);

#[test]
fn deterministic_corruptions_are_bit_identical_to_the_reference_formulas() {
    let images = inputs();
    let (manifest, blob) = load("corrupt_golden");
    let mut tally: BTreeMap<Case, Tally> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(0);
    for e in manifest["entries"].as_array().unwrap() {
        let name = e["corruption"].as_str().unwrap();
        if name == "resize_bilinear" || name == "motion_blur_raw" {
            continue;
        }
        let corruption = Corruption::from_name(name).unwrap();
        let table_name = e["table"].as_str().unwrap();
        let table = match table_name {
            "cifar" => Table::Cifar,
            "imagenet" => Table::Imagenet,
            other => panic!("{name}: unknown table {other}"),
        };
        let severity = e["severity"].as_u64().unwrap() as u8;
        let image = e["image"].as_str().unwrap();
        let input = &images[image];
        let got = corrupt(input, corruption, severity, table, &mut rng);
        let what = format!("{name} ({table_name}) severity {severity} on {image}");
        assert_eq!(
            (got.height, got.width, got.pixels.len()),
            (input.height, input.width, input.pixels.len()),
            "{what}: output size"
        );
        let (h, w, at) = (
            e["height"].as_u64().unwrap() as usize,
            e["width"].as_u64().unwrap() as usize,
            e["offset"].as_u64().unwrap() as usize,
        );
        let got = match e["crop"].as_array() {
            Some(c) => crop(
                &got,
                c[0].as_u64().unwrap() as usize,
                c[1].as_u64().unwrap() as usize,
                h,
                w,
            ),
            None => got.pixels,
        };
        let expected = golden_bytes(&blob, at, h * w * 3, &what);
        let (n, differ, max) = compare(&got, expected, &what);
        let t = tally
            .entry((name.to_string(), table_name.to_string(), severity))
            .or_default();
        t.0 += 1;
        t.1 += n;
        t.2 += differ;
        t.3 = t.3.max(max);
    }
    let mut report =
        String::from("corruption        table     severity  images  differing  max |diff|\n");
    for ((name, table, severity), (cases, n, differ, max)) in &tally {
        writeln!(
            report,
            "{name:17} {table:9} {severity:8}  {cases:6}  {:8.4}%  {max}",
            100.0 * *differ as f64 / *n as f64
        )
        .unwrap();
    }
    println!("{report}");
    // Every corruption at every severity, on the 3 CIFAR images and the 224 px photo.
    let mut missing = Vec::new();
    for name in BIT_IDENTICAL {
        for (table, images) in [("cifar", 3), ("imagenet", 1)] {
            for severity in 1..=5u8 {
                let cases = tally
                    .get(&(name.to_string(), table.to_string(), severity))
                    .map_or(0, |t| t.0);
                if cases != images {
                    missing.push(format!(
                        "{name} ({table}) severity {severity}: {cases} images"
                    ));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "golden cases missing: {missing:?}\n{report}"
    );
    assert_eq!(
        tally.len(),
        BIT_IDENTICAL.len() * 2 * 5,
        "unexpected cases\n{report}"
    );
    let off: Vec<String> = tally
        .iter()
        .filter(|(_, t)| t.3 != 0)
        .map(|((name, table, severity), t)| {
            format!("{name} ({table}) severity {severity}: max |diff| {}", t.3)
        })
        .collect();
    assert!(
        off.is_empty(),
        "not bit-identical to the reference: {off:?}\n{report}"
    );
}

fn flat(v: u8, side: usize) -> Image {
    Image::new(side, side, vec![v; side * side * 3])
}

fn moments(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}

#[test]
fn noise_corruptions_have_the_reference_distributions() {
    let mut rng = StdRng::seed_from_u64(1);
    let grey = flat(128, 224);
    let x = 128.0 / 255.0;
    for (severity, c) in [(1u8, 0.08), (3, 0.18)] {
        // Additive N(0, c) on x in [0, 1], then truncation to u8 (-0.5 grey levels on average).
        let out = corrupt(
            &grey,
            Corruption::GaussianNoise,
            severity,
            Table::Imagenet,
            &mut rng,
        );
        let (mean, sd) = moments(out.pixels.iter().map(|&v| v as f64));
        assert!((mean - (128.0 - 0.5)).abs() < 0.5, "gaussian mean {mean}");
        assert!((sd / (c * 255.0) - 1.0).abs() < 0.03, "gaussian sd {sd}");
    }
    // Poisson(x * c) / c: mean x, sd sqrt(x / c).
    let c: f64 = 25.0;
    let out = corrupt(&grey, Corruption::ShotNoise, 2, Table::Imagenet, &mut rng);
    let (mean, sd) = moments(out.pixels.iter().map(|&v| v as f64 / 255.0));
    let expected_sd = (x / c).sqrt();
    assert!((mean - x).abs() < 0.01, "shot mean {mean}");
    assert!(
        (sd / expected_sd - 1.0).abs() < 0.05,
        "shot sd {sd} vs {expected_sd}"
    );
    // Salt and pepper: a fraction `amount` of values flips, half to 255, half to 0.
    let out = corrupt(
        &grey,
        Corruption::ImpulseNoise,
        4,
        Table::Imagenet,
        &mut rng,
    );
    let n = out.pixels.len() as f64;
    let salt = out.pixels.iter().filter(|&&v| v == 255).count() as f64 / n;
    let pepper = out.pixels.iter().filter(|&&v| v == 0).count() as f64 / n;
    assert!(
        (salt + pepper - 0.17).abs() < 0.005,
        "impulse fraction {}",
        salt + pepper
    );
    assert!((salt - pepper).abs() < 0.01);
    assert!(out.pixels.iter().all(|&v| v == 0 || v == 255 || v == 128));
    // Speckle: x + x * N(0, c).
    let out = corrupt(
        &grey,
        Corruption::SpeckleNoise,
        1,
        Table::Imagenet,
        &mut rng,
    );
    let (_, sd) = moments(out.pixels.iter().map(|&v| v as f64 / 255.0));
    assert!((sd / (x * 0.15) - 1.0).abs() < 0.04, "speckle sd {sd}");
}

#[test]
fn random_corruptions_are_seeded_and_change_images_as_expected() {
    let images = inputs();
    let photo = &images["astronaut224"];
    let cifar = images.values().find(|i| i.height == 32).unwrap();
    for corruption in Corruption::ALL {
        for (img, table) in [(cifar, Table::Cifar), (photo, Table::Imagenet)] {
            for severity in [1u8, 5] {
                let a = corrupt(
                    img,
                    corruption,
                    severity,
                    table,
                    &mut StdRng::seed_from_u64(3),
                );
                let b = corrupt(
                    img,
                    corruption,
                    severity,
                    table,
                    &mut StdRng::seed_from_u64(3),
                );
                assert_eq!(a, b, "{corruption:?} is seeded");
                assert_eq!((a.height, a.width), (img.height, img.width));
                assert_ne!(
                    &a, img,
                    "{corruption:?} severity {severity} changes the image"
                );
            }
        }
    }
    // Glass blur copies neighbours: more severe = further from the input on average.
    let diff = |severity| {
        let out = corrupt(
            photo,
            Corruption::GlassBlur,
            severity,
            Table::Imagenet,
            &mut StdRng::seed_from_u64(4),
        );
        out.pixels
            .iter()
            .zip(&photo.pixels)
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
    };
    assert!(diff(5) > diff(1));
    // Fog adds haze: a black image gets brighter, more with severity.
    let black = flat(0, 32);
    let fogged = |severity| {
        let out = corrupt(
            &black,
            Corruption::Fog,
            severity,
            Table::Cifar,
            &mut StdRng::seed_from_u64(5),
        );
        out.pixels.iter().map(|&v| v as f64).sum::<f64>()
    };
    // max(x) = 0 for a black image, so the reference rescale x * max / (max + c) is 0.
    assert_eq!(
        fogged(3),
        0.0,
        "the reference's rescale keeps a black image black"
    );
    let grey = flat(100, 32);
    let out = corrupt(
        &grey,
        Corruption::Fog,
        3,
        Table::Cifar,
        &mut StdRng::seed_from_u64(6),
    );
    let (mean, sd) = moments(out.pixels.iter().map(|&v| v as f64));
    assert!(sd > 5.0, "fog varies across the image (sd {sd})");
    assert!(mean > 0.0);
}

#[test]
fn motion_blur_is_a_one_sided_normalised_line_kernel() {
    use ews_augment::corrupt::motion_blur_u8;
    let (h, w) = (21, 21);
    let mut dot = vec![0u8; h * w];
    dot[10 * w + 10] = 255;
    // ImageMagick samples (x + i cos a, y + i sin a): a dot smears towards -x at angle 0.
    let out = motion_blur_u8(&dot, h, w, 1, 3.0, 2.0, 0.0);
    let lit: Vec<(usize, usize)> = (0..h * w)
        .filter(|&i| out[i] > 0)
        .map(|i| (i / w, i % w))
        .collect();
    assert!(
        lit.iter().all(|&(y, x)| y == 10 && (4..=10).contains(&x)),
        "{lit:?}"
    );
    // 2 ceil(radius) + 1 = 7 taps; the farthest carries a weight that truncates to 0.
    assert!((6..=7).contains(&lit.len()), "{lit:?}");
    // The nearest tap weighs most (a one-sided Gaussian from the pixel itself).
    assert!(out[10 * w + 10] > out[10 * w + 7] && out[10 * w + 7] > out[10 * w + 4]);
    let total: u32 = out.iter().map(|&v| v as u32).sum();
    assert!(
        (total as i32 - 255).abs() <= 7,
        "normalised kernel keeps the energy: {total}"
    );
    let vertical = motion_blur_u8(&dot, h, w, 1, 3.0, 2.0, 90.0);
    assert!(
        (0..h * w)
            .filter(|&i| vertical[i] > 0)
            .all(|i| i % w == 10 && i / w <= 10)
    );
    // A flat image stays flat (edge pixels extend it).
    let flat = vec![77u8; h * w * 3];
    assert_eq!(motion_blur_u8(&flat, h, w, 3, 9.0, 2.5, 33.0), flat);
}

#[test]
fn snow_whitens_more_with_severity() {
    let images = inputs();
    let img = images.values().find(|i| i.height == 32).unwrap();
    let brightness = |severity| {
        (0..8)
            .map(|seed| {
                corrupt(
                    img,
                    Corruption::Snow,
                    severity,
                    Table::Cifar,
                    &mut StdRng::seed_from_u64(seed),
                )
                .pixels
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
            })
            .sum::<f64>()
    };
    let clean = img.pixels.iter().map(|&v| v as f64).sum::<f64>() * 8.0;
    let (s1, s5) = (brightness(1), brightness(5));
    assert!(
        s1 > clean && s5 > s1,
        "clean {clean}, severity 1 {s1}, severity 5 {s5}"
    );
}

#[test]
fn elastic_transform_moves_pixels_but_keeps_the_picture() {
    let images = inputs();
    let photo = &images["astronaut224"];
    let mean =
        |img: &Image| img.pixels.iter().map(|&v| v as f64).sum::<f64>() / img.pixels.len() as f64;
    for severity in 1..=5u8 {
        let out = corrupt(
            photo,
            Corruption::ElasticTransform,
            severity,
            Table::Imagenet,
            &mut StdRng::seed_from_u64(7),
        );
        assert!(
            (mean(&out) / mean(photo) - 1.0).abs() < 0.1,
            "severity {severity}"
        );
        let moved = out
            .pixels
            .iter()
            .zip(&photo.pixels)
            .filter(|(a, b)| a.abs_diff(**b) > 8)
            .count();
        assert!(
            moved > photo.pixels.len() / 50,
            "severity {severity} moves pixels ({moved})"
        );
    }
}

#[test]
fn frost_blends_a_texture_crop_with_the_reference_weights() {
    use ews_augment::corrupt::{FrostTextures, frost_with};
    // A flat texture makes the blend checkable: a * x + b * 200.
    let texture = Image::new(80, 90, vec![200; 80 * 90 * 3]);
    let textures = FrostTextures::from_images(vec![texture], Table::Imagenet).unwrap();
    let img = flat(100, 32);
    for (severity, (a, b)) in [(1u8, (1.0, 0.4)), (5, (0.6, 0.75))] {
        let out = frost_with(
            &img,
            severity,
            Table::Imagenet,
            &textures,
            &mut StdRng::seed_from_u64(1),
        );
        let want = (a * 100.0 + b * 200.0_f64).min(255.0) as u8;
        assert!(
            out.pixels.iter().all(|&v| v == want),
            "severity {severity}: {} vs {want}",
            out.pixels[0]
        );
    }
    // The built-in stand-in is labelled and looks like frost: bright needles on a darker base.
    let builtin = FrostTextures::builtin(Table::Cifar);
    assert!(builtin.procedural && builtin.images.len() == 5);
    let t = &builtin.images[0];
    let mean = t.pixels.iter().map(|&v| v as f64).sum::<f64>() / t.pixels.len() as f64;
    let max = *t.pixels.iter().max().unwrap();
    assert!(
        (60.0..180.0).contains(&mean) && max > 200,
        "mean {mean}, max {max}"
    );
}

#[test]
fn pillow_bilinear_resize_matches_up_and_down() {
    use ews_augment::corrupt::{PilFilter, resize_pil};
    let images = inputs();
    let (manifest, blob) = load("corrupt_golden");
    let mut cases = 0;
    for e in manifest["entries"].as_array().unwrap() {
        if e["corruption"] != "resize_bilinear" {
            continue;
        }
        let (h, w, at) = (
            e["height"].as_u64().unwrap() as usize,
            e["width"].as_u64().unwrap() as usize,
            e["offset"].as_u64().unwrap() as usize,
        );
        let got = resize_pil(
            &images[e["image"].as_str().unwrap()],
            w,
            h,
            PilFilter::Bilinear,
        );
        assert_eq!(
            got.pixels,
            &blob[at..at + h * w * 3],
            "{} to {h}x{w}",
            e["image"]
        );
        cases += 1;
    }
    assert_eq!(cases, 8);
}

#[test]
fn spatter_building_blocks_match_opencv() {
    use ews_augment::corrupt::{canny, distance_transform, equalize_hist};
    let (manifest, blob) = load("corrupt_golden");
    let block = |name: &str| -> &[u8] {
        let e = &manifest["opencv_blocks"][name];
        let at = e["offset"].as_u64().unwrap() as usize;
        let n: usize = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .product();
        let size = if e["dtype"] == "float32" { 4 } else { 1 };
        &blob[at..at + n * size]
    };
    let (h, w) = (64, 64);
    let liquid = block("liquid_u8");
    let edges = canny(liquid, h, w, 50, 150);
    let expected: Vec<bool> = block("canny").iter().map(|&v| v == 255).collect();
    assert_eq!(edges.len(), expected.len(), "Canny output size");
    let differ = edges.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        expected.iter().filter(|&&e| e).count() > 50,
        "the case has edges"
    );
    assert_eq!(differ, 0, "Canny edge pixels differ from OpenCV's");
    let dist = distance_transform(&expected, h, w);
    let cv: Vec<f32> = block("distance_f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(dist.len(), cv.len(), "distance transform output size");
    // Not bit-identical: the golden file's OpenCV (5.0) sums the weights 1, 1.4f, 2.1969f in
    // float32 (1115 of the 4096 values differ, max |diff| 4.4e-5), `distance_transform` in
    // 16.16 fixed point as OpenCV 4 does, with weights 65536, 91750, 143977 (OpenCV 4's
    // cvRound(2.1969f * 65536) is 143976; no difference on this case). Both take the minimum
    // over the same chamfer paths, so they differ by at most the largest relative weight error,
    // |143977 / 65536 - 2.1969f| / 2.1969f = 6.73e-6, plus float32 rounding of the sums: at
    // most 8e-6 of the distance.
    let mut worst = (0.0f32, 0.0f32);
    for (a, b) in dist.iter().zip(&cv) {
        if (a - b).abs() > worst.0 {
            worst = ((a - b).abs(), *b);
        }
    }
    let off = dist
        .iter()
        .zip(&cv)
        .filter(|(a, b)| (*a - *b).abs() > 8e-6 * **b)
        .count();
    // What spatter keeps of it, min(d, 20) truncated, differs where OpenCV 5's float sum is
    // integral and the fixed-point sum just below (5 x 91750 / 65536 = 6.99997 vs 7.0).
    let truncated = dist
        .iter()
        .zip(&cv)
        .filter(|(a, b)| a.min(20.0) as u8 != b.min(20.0) as u8)
        .count();
    assert_eq!(
        off, 0,
        "distance transform: {off} values beyond 8e-6 relative; max |diff| {} at {}; {truncated} \
         truncated values differ",
        worst.0, worst.1
    );
    let mut eq: Vec<u8> = cv.iter().map(|&d| (d.min(20.0) as u8) * 12).collect();
    equalize_hist(&mut eq);
    assert_eq!(eq, block("equalized"));
}

#[test]
fn motion_blur_matches_imagemagick() {
    use ews_augment::corrupt::motion_blur_u8;
    let images = inputs();
    let (manifest, blob) = load("corrupt_golden");
    let mut report = String::new();
    let mut per_image: BTreeMap<String, usize> = BTreeMap::new();
    let (mut values, mut lower, mut higher, mut worst) = (0usize, 0usize, 0usize, 0u8);
    for e in manifest["entries"].as_array().unwrap() {
        if e["corruption"] != "motion_blur_raw" {
            continue;
        }
        let image = e["image"].as_str().unwrap();
        let input = &images[image];
        let channels = e["channels"].as_u64().unwrap() as usize;
        let data: Vec<u8> = if channels == 3 {
            input.pixels.clone()
        } else {
            input
                .pixels
                .chunks_exact(3)
                .map(|p| ews_augment::ops::luma(p[0], p[1], p[2]))
                .collect()
        };
        let (radius, sigma, angle) = (
            e["radius"].as_f64().unwrap(),
            e["sigma"].as_f64().unwrap(),
            e["angle"].as_f64().unwrap(),
        );
        let got = motion_blur_u8(
            &data,
            input.height,
            input.width,
            channels,
            radius,
            sigma,
            angle,
        );
        let what = format!("{image} x{channels} {radius}x{sigma}+{angle}");
        let (h, w) = (
            e["height"].as_u64().unwrap() as usize,
            e["width"].as_u64().unwrap() as usize,
        );
        assert_eq!((h, w), (input.height, input.width), "{what}: golden size");
        let at = e["offset"].as_u64().unwrap() as usize;
        let expected = golden_bytes(&blob, at, h * w * channels, &what);
        let (n, differ, max) = compare(&got, expected, &what);
        let below = got.iter().zip(expected).filter(|(a, b)| a < b).count();
        writeln!(
            report,
            "{what:36} {differ:4} of {n:6} differ ({below} lower), max |diff| {max}"
        )
        .unwrap();
        values += n;
        lower += below;
        higher += differ - below;
        worst = worst.max(max);
        *per_image.entry(image.to_string()).or_default() += 1;
    }
    println!("{report}");
    // 4 images x (RGB, greyscale) x 5 (radius, sigma, angle).
    assert_eq!(per_image.values().sum::<usize>(), 40, "{per_image:?}");
    assert!(per_image.values().all(|&c| c == 10), "{per_image:?}");
    // ImageMagick 6 (Q16) rounds the weighted sum to an integer quantum before scaling it
    // to 8 bits; truncating sum / 257 directly put 2,537 of the 1,064,960 values one lower.
    assert!(
        worst == 0,
        "motion blur vs ImageMagick: max |diff| {worst} (bound 0), {higher} values higher, \
         {lower} of {values} lower\n{report}"
    );
}
