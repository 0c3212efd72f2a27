//! Single-core time per 224 px image of every corruption with the ImageNet table (with the
//! reference frost textures), the Rust side of `benches/reference_imagenet_c.py`. Inputs
//! as the reference generator's: `Resize(256)` + `CenterCrop(224)` of the JPEG files of a
//! flat folder.
//!
//! ```sh
//! taskset -c 1 cargo bench -p ews-data --bench imagenet_c -- --images /tmp/jpeg-bench \
//!     --frost-dir ../shared/datasets/frost [--count 8]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use ews_augment::corrupt::{Corruption, Table, corrupt_with};
use ews_augment::standard::resize_center_crop;
use ews_data::cifar_c::load_frost;
use ews_data::folder;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn main() {
    let (mut images, mut frost_dir, mut count) = (PathBuf::from("/tmp/jpeg-bench"), None, 8);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--images" => images = PathBuf::from(value()),
            "--frost-dir" => frost_dir = Some(PathBuf::from(value())),
            "--count" => count = value().parse().expect("--count N"),
            _ => {}
        }
    }
    let inputs: Vec<_> = folder::sorted_entries(&images)
        .expect("the --images folder")
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        })
        .take(count)
        .map(|p| resize_center_crop(&folder::decode(&p).unwrap(), 256, 224))
        .collect();
    assert!(!inputs.is_empty(), "no JPEG files in {}", images.display());
    let frost = frost_dir.map(|d| load_frost(&d, Table::Imagenet).expect("the frost textures"));
    let mut rng = StdRng::seed_from_u64(0);
    let (mut total, mut benchmark) = (0.0, 0.0);
    println!("| corruption | ews ms/image (mean of severities 1-5) |");
    println!("|---|---|");
    for c in Corruption::ALL {
        let run = |rng: &mut StdRng| {
            for severity in 1..=5u8 {
                for img in &inputs {
                    let out = corrupt_with(img, c, severity, Table::Imagenet, frost.as_ref(), rng);
                    std::hint::black_box(out);
                }
            }
        };
        run(&mut rng); // warm-up
        let start = Instant::now();
        run(&mut rng);
        let per = start.elapsed().as_secs_f64() / (5 * inputs.len()) as f64;
        total += per;
        let extra = matches!(
            c,
            Corruption::SpeckleNoise
                | Corruption::GaussianBlur
                | Corruption::Saturate
                | Corruption::Spatter
        );
        if !extra {
            benchmark += per;
        }
        println!("| {} | {:.3} |", c.name(), per * 1e3);
    }
    println!("| all {} | {:.1} |", Corruption::ALL.len(), total * 1e3);
    println!("| the 15 benchmark ones | {:.1} |", benchmark * 1e3);
    println!(
        "ImageNet-C (the 15 x 5 severities x 50,000 validation images): {:.1} core-hours",
        benchmark * 5.0 * 50_000.0 / 3600.0
    );
}
