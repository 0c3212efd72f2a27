//! ImageNet-P's deterministic sequences against the reference formulas (golden file from
//! `tests/golden/make_perturb_golden.py`: ImageMagick, scikit-image, Pillow's affine
//! transform as torchvision 0.2 called it, OpenCV's warpPerspective), and the random ones'
//! invariants (lengths, clean first frame, seeding).

#[path = "golden/files.rs"]
mod files;

use ews_augment::Image;
use ews_augment::perturb::{Perturbation, center_crop, sequence, snow_frames};
use files::{image_of, load};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The golden script's input: `(y + 2 x + 60 c + (x y) div 50) mod 256`, 256 x 300.
fn pattern() -> Image {
    let (h, w) = (256, 300);
    let pixels = (0..h * w * 3)
        .map(|i| {
            let (y, x, c) = (i / (w * 3), i / 3 % w, i % 3);
            ((y + 2 * x + 60 * c + x * y / 50) % 256) as u8
        })
        .collect();
    Image::new(h, w, pixels)
}

fn window(frame: &Image, part: &str) -> Image {
    let (top, side) = if part == "centre" { (88, 48) } else { (0, 32) };
    ews_augment::standard::crop(frame, top, top, side, side)
}

#[test]
fn deterministic_sequences_equal_the_reference() {
    let (manifest, blob) = load("perturb_golden");
    let input = pattern();
    let mut rng = StdRng::seed_from_u64(0);
    let mut sequences = std::collections::BTreeMap::new();
    let mut checked = 0;
    for entry in manifest["entries"].as_array().unwrap() {
        let name = entry["perturbation"].as_str().unwrap();
        let p = Perturbation::from_name(name).unwrap();
        let frames = sequences
            .entry(name)
            .or_insert_with(|| sequence(&input, p, 1, &mut rng).unwrap());
        let frame = &frames[entry["frame"].as_u64().unwrap() as usize];
        let got = window(frame, entry["part"].as_str().unwrap());
        let want = image_of(entry, &blob);
        let diff = got
            .pixels
            .iter()
            .zip(&want.pixels)
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert_eq!(diff, 0, "{entry}");
        checked += 1;
    }
    assert_eq!(checked, 40);
}

/// Snow with a fixed layer instead of the normal draw (`golden/make_snow_golden.py`): the
/// zoom, threshold, motion blur and blend are the reference's, pixel for pixel.
#[test]
fn snow_frames_from_a_fixed_layer_equal_the_reference() {
    let (manifest, blob) = load("snow_golden");
    let layer: Vec<f64> = (0..224 * 224)
        .map(|i| {
            let (y, x) = (i / 224, i % 224);
            ((7 * x + 13 * y + (x * y) % 11) % 97) as f64 / 97.0 * 0.9 - 0.3
        })
        .collect();
    let frames = snow_frames(&center_crop(&pattern(), 224), &layer);
    assert_eq!(frames.len(), 31);
    let entries = manifest["entries"].as_array().unwrap();
    for entry in entries {
        let frame = &frames[entry["frame"].as_u64().unwrap() as usize];
        let (top, side) = match entry["part"].as_str().unwrap() {
            "centre" => (64, 96),
            _ => (0, 32),
        };
        let got = ews_augment::standard::crop(frame, top, top, side, side);
        assert!(got.pixels == image_of(entry, &blob).pixels, "{entry}");
    }
    assert_eq!(entries.len(), 6);
}

#[test]
fn sequences_have_the_reference_lengths_and_noise_starts_clean() {
    let input = pattern();
    let clean = center_crop(&input, 224);
    for p in Perturbation::ALL {
        for difficulty in [1u8, 2, 3] {
            let mut rng = StdRng::seed_from_u64(5);
            let frames = match sequence(&input, p, difficulty, &mut rng) {
                Ok(f) => f,
                Err(e) => {
                    assert!(!p.has_difficulties() && difficulty > 1, "{e}");
                    continue;
                }
            };
            assert_eq!(frames.len(), p.frames(), "{p:?}");
            assert!(frames.iter().all(|f| (f.height, f.width) == (224, 224)));
            let again = sequence(&input, p, difficulty, &mut StdRng::seed_from_u64(5)).unwrap();
            assert_eq!(frames, again, "{p:?}: seeded");
            if p.has_difficulties() {
                assert_eq!(frames[0], clean, "{p:?}: the first frame is the clean crop");
                assert_ne!(frames[1], frames[2], "{p:?}: noise redrawn per frame");
            }
        }
    }
    // Harder noise moves pixels further from the clean crop.
    let spread = |d: u8| {
        let f = sequence(
            &input,
            Perturbation::GaussianNoise,
            d,
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
        let sum: u64 = f[1]
            .pixels
            .iter()
            .zip(&clean.pixels)
            .map(|(&a, &b)| a.abs_diff(b) as u64)
            .sum();
        sum as f64 / clean.pixels.len() as f64
    };
    assert!(spread(1) < spread(2) && spread(2) < spread(3));
    assert_eq!(Perturbation::ShotNoise.folder(3), "shot_noise_3");
    assert_eq!(Perturbation::Rotate.folder(1), "rotate");
    let small = Image::new(100, 100, vec![0; 100 * 100 * 3]);
    assert!(
        sequence(
            &small,
            Perturbation::Rotate,
            1,
            &mut StdRng::seed_from_u64(0)
        )
        .is_err()
    );
}
