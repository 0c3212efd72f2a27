//! Every operation against Pillow's output (golden files from `tests/golden/make_ops_golden.py`,
//! Pillow version recorded in the manifest) on three CIFAR-10 test images and a 224 px photo.

#[path = "golden/files.rs"]
mod files;

use std::collections::BTreeMap;

use ews_augment::Image;
use ews_augment::ops::{self, Interpolation};
use ews_augment::policy::{Op, apply_torchvision_op};
use files::{image_of, inputs, load};
use serde_json::Value;

fn tv_op(name: &str) -> Op {
    match name {
        "ShearX" => Op::ShearX,
        "ShearY" => Op::ShearY,
        "TranslateX" => Op::TranslateX,
        "TranslateY" => Op::TranslateY,
        "Rotate" => Op::Rotate,
        other => panic!("no golden case for {other}"),
    }
}

fn run(entry: &Value, input: &Image) -> Image {
    let op = entry["op"].as_str().unwrap();
    let arg = &entry["arg"];
    let interp = match entry["interpolation"].as_str().unwrap() {
        "nearest" => Interpolation::Nearest,
        _ => Interpolation::Bilinear,
    };
    let f = entry["fill"].as_array().unwrap();
    let fill = [0, 1, 2].map(|i| f[i].as_u64().unwrap() as u8);
    if entry["kind"] == "tv" {
        return apply_torchvision_op(input, tv_op(op), arg.as_f64().unwrap(), interp, fill);
    }
    let x = || arg.as_f64().unwrap();
    match op {
        "autocontrast" => ops::autocontrast(input),
        "equalize" => ops::equalize(input),
        "invert" => ops::invert(input),
        "posterize" => ops::posterize(input, x() as u8),
        "solarize" => ops::solarize(input, x()),
        "color" => ops::enhance_color(input, x()),
        "contrast" => ops::enhance_contrast(input, x()),
        "brightness" => ops::enhance_brightness(input, x()),
        "sharpness" => ops::enhance_sharpness(input, x()),
        "rotate" => ops::rotate(input, x(), interp, fill),
        "affine" => {
            let m = arg.as_array().unwrap();
            let m: [f64; 6] = std::array::from_fn(|i| m[i].as_f64().unwrap());
            ops::affine(input, m, interp, fill)
        }
        other => panic!("unknown golden op {other}"),
    }
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    values: usize,
    exact: usize,
    within_one: usize,
    max_diff: u8,
}

#[test]
fn every_operation_matches_pillow() {
    let (manifest, blob) = load("ops_golden");
    let entries = manifest["entries"].as_array().unwrap();
    let inputs = inputs();
    assert_eq!(inputs.len(), 4, "three CIFAR images and one 224 px image");
    assert!(inputs.values().any(|i| i.height == 224));
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut worst = Vec::new();
    for e in entries.iter().filter(|e| e["kind"] != "input") {
        let input = &inputs[e["image"].as_str().unwrap()];
        let expected = image_of(e, &blob);
        let got = run(e, input);
        let key = format!(
            "{}:{}",
            e["kind"].as_str().unwrap(),
            e["op"].as_str().unwrap()
        );
        let t = tally.entry(key).or_default();
        t.cases += 1;
        let mut case_max = 0u8;
        for (a, b) in got.pixels.iter().zip(&expected.pixels) {
            let d = a.abs_diff(*b);
            t.values += 1;
            t.exact += (d == 0) as usize;
            t.within_one += (d <= 1) as usize;
            case_max = case_max.max(d);
        }
        t.max_diff = t.max_diff.max(case_max);
        if case_max > 0 {
            worst.push(format!(
                "{} {} {} arg={} {} fill={}: max diff {case_max}",
                e["image"], e["kind"], e["op"], e["arg"], e["interpolation"], e["fill"]
            ));
        }
    }
    for (op, t) in &tally {
        println!(
            "{op:22} {:4} cases  exact {:.4}%  max |diff| {}",
            t.cases,
            100.0 * t.exact as f64 / t.values as f64,
            t.max_diff
        );
    }
    for line in worst.iter().take(30) {
        println!("{line}");
    }
    for (op, t) in &tally {
        assert_eq!(t.max_diff, 0, "{op} differs from Pillow: {t:?}");
    }
}

#[test]
#[should_panic(expected = "enhance factor must be finite")]
fn a_nan_enhance_factor_is_refused() {
    let img = Image::new(2, 2, vec![7; 12]);
    ops::enhance_color(&img, f64::NAN);
}

#[test]
fn whole_pixel_shifts_match_the_general_resampling_paths() {
    // The row-copy fast path for integer translations must equal what the general
    // bilinear and nearest code computes (also outside the golden cases).
    let img = Image::new(
        6,
        11,
        (0..6 * 11 * 3).map(|i| (i * 37 % 256) as u8).collect(),
    );
    for tx in -12..=12 {
        for ty in -7..=7 {
            for interp in [Interpolation::Nearest, Interpolation::Bilinear] {
                let fast = ops::affine(
                    &img,
                    [1.0, 0.0, tx as f64, 0.0, 1.0, ty as f64],
                    interp,
                    [9, 8, 7],
                );
                // A shear of 1e-300 is zero in every product but skips the fast path.
                let general = ops::affine(
                    &img,
                    [1.0, 1e-300, tx as f64, 0.0, 1.0, ty as f64],
                    interp,
                    [9, 8, 7],
                );
                assert_eq!(fast, general, "tx {tx} ty {ty} {interp:?}");
            }
        }
    }
}
