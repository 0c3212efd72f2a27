//! torchvision's ImageNet transforms on PIL images (`RandomResizedCrop`'s crop and resize,
//! `Resize + CenterCrop`) against Pillow (golden file from
//! `tests/golden/make_resize_golden.py`), and `RandomResizedCrop`'s window rules.

#[path = "golden/files.rs"]
mod files;

use ews_augment::Image;
use ews_augment::standard::{random_resized_crop_window, resize_center_crop, resized_crop};
use files::{image_of, load};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The golden script's input: value `(5 y + 3 x + 70 c + (x y) div 7) mod 256`.
fn pattern(h: usize, w: usize) -> Image {
    let pixels = (0..h * w * 3)
        .map(|i| {
            let (y, x, c) = (i / (w * 3), i / 3 % w, i % 3);
            ((5 * y + 3 * x + 70 * c + x * y / 7) % 256) as u8
        })
        .collect();
    Image::new(h, w, pixels)
}

#[test]
fn crops_and_resizes_equal_pillows() {
    let (manifest, blob) = load("resize_golden");
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 16);
    for entry in entries {
        let at = |key: &str| entry[key].as_u64().unwrap() as usize;
        let input = pattern(
            entry["image"][0].as_u64().unwrap() as usize,
            entry["image"][1].as_u64().unwrap() as usize,
        );
        let got = match entry["kind"].as_str().unwrap() {
            "resized_crop" => resized_crop(
                &input,
                (at("top"), at("left"), at("crop_height"), at("crop_width")),
                at("size"),
            ),
            _ => resize_center_crop(&input, at("resize"), at("crop")),
        };
        assert!(got == image_of(entry, &blob), "{entry}");
    }
}

#[test]
fn random_resized_crop_windows_follow_torchvision() {
    let mut rng = StdRng::seed_from_u64(3);
    // The mean area fraction of torchvision's rule for each shape, by a 200,000-draw Python
    // simulation of `get_params` (draws that do not fit are redrawn, so tall or wide
    // images get smaller windows than the uniform 0.54).
    for (h, w, expected) in [
        (224, 224, 0.480),
        (375, 500, 0.433),
        (500, 333, 0.388),
        (40, 41, 0.488),
    ] {
        let mut areas = Vec::new();
        for _ in 0..2000 {
            let (top, left, ch, cw) = random_resized_crop_window(h, w, &mut rng);
            assert!(top + ch <= h && left + cw <= w && ch > 0 && cw > 0);
            areas.push((ch * cw) as f64 / (h * w) as f64);
            let ratio = cw as f64 / ch as f64;
            // Rounded sides can leave the range a little on tiny windows only.
            assert!(ch < 8 || cw < 8 || (0.7..1.4).contains(&ratio), "{ch}x{cw}");
        }
        let mean = areas.iter().sum::<f64>() / areas.len() as f64;
        assert!(areas.iter().all(|&a| a >= 0.07), "{h}x{w}");
        assert!((mean - expected).abs() < 0.02, "{h}x{w}: mean {mean}");
    }
    // When ten draws do not fit (a strip far outside 3/4..4/3), torchvision's fallback: the
    // whole height, the width clamped to 4/3 of it, centred.
    let (top, left, ch, cw) = random_resized_crop_window(3, 900, &mut rng);
    assert_eq!((top, left, ch, cw), (0, 448, 3, 4));
    let (top, left, ch, cw) = random_resized_crop_window(900, 3, &mut rng);
    assert_eq!((top, left, ch, cw), (448, 0, 4, 3));
}
