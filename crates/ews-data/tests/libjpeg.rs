//! The `libjpeg-turbo` feature: JPEG files decode to Pillow's pixels, a decoded window
//! equals the same window of the full decode, and the loader's RandomResizedCrop is
//! unchanged by decoding only the window. Fixtures: `tests/fixtures/jpeg/make_jpegs.py`.
//!
//! ```sh
//! cargo test --workspace --features ews-data/libjpeg-turbo --test libjpeg
//! ```
#![cfg(feature = "libjpeg-turbo")]

use std::path::{Path, PathBuf};

use ews_augment::Image;
use ews_augment::standard::{
    crop, random_resized_crop, random_resized_crop_window, resized_crop_and_flip,
};
use ews_data::{DataError, folder, libjpeg::Jpeg};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LAYOUTS: [&str; 5] = ["yuv420", "yuv422", "yuv444", "progressive", "gray"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jpeg")
        .join(name)
}

fn pillow(name: &str) -> Image {
    let png = fixture(&format!("{name}.pillow.png"));
    let rgb = image::open(&png).unwrap().into_rgb8();
    let (w, h) = rgb.dimensions();
    Image::new(h as usize, w as usize, rgb.into_raw())
}

#[test]
fn every_layout_decodes_to_pillows_pixels() {
    for name in LAYOUTS {
        let decoded = folder::decode(&fixture(&format!("{name}.jpg"))).unwrap();
        let expected = pillow(name);
        assert_eq!((decoded.height, decoded.width), (157, 203), "{name}");
        assert!(
            decoded.pixels == expected.pixels,
            "{name}: pixels differ from Pillow's"
        );
    }
}

#[test]
fn cmyk_files_fall_back_to_the_image_crate() {
    let path = fixture("cmyk.jpg");
    assert!(Jpeg::open(&path).unwrap().is_none());
    let decoded = folder::decode(&path).unwrap();
    assert_eq!((decoded.height, decoded.width), (157, 203));
}

#[test]
fn a_decoded_window_equals_that_window_of_the_full_decode() {
    let mut rng = StdRng::seed_from_u64(7);
    for name in LAYOUTS {
        let path = fixture(&format!("{name}.jpg"));
        let jpeg = Jpeg::open(&path).unwrap().unwrap();
        let full = jpeg.decode().unwrap();
        let mut windows = vec![(0, 0, 157, 203), (156, 202, 1, 1), (40, 70, 1, 100)];
        for _ in 0..60 {
            let (h, w) = (rng.random_range(1..=157), rng.random_range(1..=203));
            windows.push((
                rng.random_range(0..=157 - h),
                rng.random_range(0..=203 - w),
                h,
                w,
            ));
        }
        for window in windows {
            let part = jpeg.decode_window(window).unwrap();
            assert_eq!((part.height, part.width), (window.2, window.3));
            let (top, left, h, w) = window;
            let expected = crop(&full, top, left, h, w);
            assert!(part.pixels == expected.pixels, "{name} {window:?}");
        }
    }
}

#[test]
fn the_loaders_crop_is_unchanged_by_window_decoding() {
    let path = fixture("yuv420.jpg");
    let full = folder::decode(&path).unwrap();
    for seed in 0..40 {
        let expected = random_resized_crop(&full, 64, &mut StdRng::seed_from_u64(seed));
        let mut rng = StdRng::seed_from_u64(seed);
        let pick = |h, w| random_resized_crop_window(h, w, &mut rng);
        let (image, window) = folder::decode_window(&path, pick).unwrap();
        assert_eq!(
            (image.height, image.width),
            (window.2, window.3),
            "only the window"
        );
        let got = resized_crop_and_flip(&image, window, 64, &mut rng);
        assert!(got.pixels == expected.pixels, "seed {seed}");
    }
}

#[test]
fn truncated_and_foreign_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("yuv420.jpg")).unwrap();
    let cases = [
        ("truncated.jpg", bytes[..bytes.len() / 2].to_vec()),
        ("header-only.jpg", bytes[..200].to_vec()),
        (
            "png-named.jpg",
            std::fs::read(fixture("gray.pillow.png")).unwrap(),
        ),
        ("empty.jpg", Vec::new()),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = folder::decode(&path).unwrap_err();
        assert!(matches!(err, DataError::BadFile { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    let missing = folder::decode(&dir.path().join("missing.jpg")).unwrap_err();
    assert!(missing.to_string().contains("missing.jpg"), "{missing}");
}
