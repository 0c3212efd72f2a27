//! Frost on the reference texture photographs against the reference formula (golden file
//! from `tests/golden/make_frost_golden.py`, OpenCV decoding and resizing).

use std::io::Read;

use ews_augment::Image;
use ews_augment::corrupt::{Table, frost_at};
use ews_data::cifar_c::load_frost;
use ews_data::download::FROST_TEXTURES;

mod fixtures;

/// The golden script's test image: value `(7 y + 3 x + 50 c) mod 256`.
fn test_image(size: usize) -> Image {
    let pixels = (0..size * size * 3)
        .map(|i| {
            let (y, x, c) = (i / (size * 3), i / 3 % size, i % 3);
            ((7 * y + 3 * x + 50 * c) % 256) as u8
        })
        .collect();
    Image::new(size, size, pixels)
}

#[test]
fn frost_matches_the_reference_on_the_real_textures() {
    let test = "frost_matches_the_reference_on_the_real_textures";
    let Some(dir) = fixtures::shared("datasets/frost", test) else {
        return;
    };
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("frost_golden.json")).unwrap())
            .unwrap();
    let mut blob = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(golden.join("frost_golden.bin.gz")).unwrap())
        .read_to_end(&mut blob)
        .unwrap();
    let cifar = load_frost(&dir, Table::Cifar).unwrap();
    let imagenet = load_frost(&dir, Table::Imagenet).unwrap();
    let names = FROST_TEXTURES.map(|(name, _)| name);
    let mut worst_jpeg = 0u8;
    for case in index["cases"].as_array().unwrap() {
        let (table, textures, size) = match case["table"].as_str().unwrap() {
            "cifar" => (Table::Cifar, &cifar, 32),
            _ => (Table::Imagenet, &imagenet, 224),
        };
        let name = case["texture"].as_str().unwrap();
        let k = names.iter().position(|n| *n == name).unwrap();
        let texture = &textures.images[k];
        let shape: Vec<usize> = serde_json::from_value(case["texture_shape"].clone()).unwrap();
        assert_eq!(
            (texture.height, texture.width),
            (shape[0], shape[1]),
            "{name} {table:?}: the texture's size after the reference's resize"
        );
        let at = |key: &str| case[key].as_u64().unwrap() as usize;
        let out = frost_at(
            &test_image(size),
            at("severity") as u8,
            table,
            texture,
            at("y0"),
            at("x0"),
        );
        let step = at("step");
        let got: Vec<u8> = (0..size)
            .step_by(step)
            .flat_map(|y| (0..size).step_by(step).map(move |x| (y, x)))
            .flat_map(|(y, x)| out.get(y, x))
            .collect();
        let expected = &blob[at("offset")..at("offset") + got.len()];
        let worst = got
            .iter()
            .zip(expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        if name.ends_with(".png") {
            assert_eq!(worst, 0, "{case}");
        } else {
            worst_jpeg = worst_jpeg.max(worst);
        }
    }
    println!("JPEG textures: largest difference {worst_jpeg}");
    // JPEG decoders differ by a few levels (the image crate's against OpenCV's libjpeg).
    assert!(
        worst_jpeg <= 2,
        "JPEG textures differ by up to {worst_jpeg}"
    );
}
