//! Deterministic corruptions against the reference generators' formulas (golden files from
//! `tests/golden/make_corrupt_golden.py`: NumPy, SciPy, scikit-image, OpenCV, Pillow), and
//! the random ones against their distributions.

use std::collections::BTreeMap;
use std::io::Read;

use ews_augment::Image;
use ews_augment::corrupt::{Corruption, Table, corrupt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/");

fn load(name: &str) -> (Value, Vec<u8>) {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{GOLDEN}{name}.json")).unwrap())
            .unwrap();
    let mut blob = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(format!("{GOLDEN}{name}.bin.gz")).unwrap())
        .read_to_end(&mut blob)
        .unwrap();
    (manifest, blob)
}

fn inputs() -> BTreeMap<String, Image> {
    let (manifest, blob) = load("ops_golden");
    let mut out = BTreeMap::new();
    for e in manifest["entries"].as_array().unwrap() {
        if e["kind"] == "input" {
            let (h, w, at) = (
                e["height"].as_u64().unwrap() as usize,
                e["width"].as_u64().unwrap() as usize,
                e["offset"].as_u64().unwrap() as usize,
            );
            out.insert(
                e["image"].as_str().unwrap().to_string(),
                Image::new(h, w, blob[at..at + h * w * 3].to_vec()),
            );
        }
    }
    out
}

fn crop(img: &Image, top: usize, left: usize, h: usize, w: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(h * w * 3);
    for y in top..top + h {
        out.extend_from_slice(
            &img.pixels[(y * img.width + left) * 3..(y * img.width + left + w) * 3],
        );
    }
    out
}

#[test]
fn deterministic_corruptions_match_the_reference_formulas() {
    let images = inputs();
    let (manifest, blob) = load("corrupt_golden");
    // corruption -> (values, exact, within one, max diff)
    let mut tally: BTreeMap<String, (usize, usize, usize, u8)> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(0);
    for e in manifest["entries"].as_array().unwrap() {
        let name = e["corruption"].as_str().unwrap();
        let corruption = Corruption::from_name(name).unwrap();
        let table = if e["table"] == "cifar" {
            Table::Cifar
        } else {
            Table::Imagenet
        };
        let severity = e["severity"].as_u64().unwrap() as u8;
        let input = &images[e["image"].as_str().unwrap()];
        let got = corrupt(input, corruption, severity, table, &mut rng);
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
        let expected = &blob[at..at + h * w * 3];
        let t = tally
            .entry(format!("{name} ({})", e["table"].as_str().unwrap()))
            .or_default();
        for (a, b) in got.iter().zip(expected) {
            let d = a.abs_diff(*b);
            t.0 += 1;
            t.1 += (d == 0) as usize;
            t.2 += (d <= 1) as usize;
            t.3 = t.3.max(d);
        }
    }
    for (name, (n, exact, one, max)) in &tally {
        println!(
            "{name:28} exact {:7.3}%  |diff|<=1 {:7.3}%  max {max}",
            100.0 * *exact as f64 / *n as f64,
            100.0 * *one as f64 / *n as f64
        );
    }
    for (name, (n, _, one, _)) in &tally {
        let within = *one as f64 / *n as f64;
        assert!(
            within >= 0.99,
            "{name}: only {:.3}% within 1",
            100.0 * within
        );
    }
}
