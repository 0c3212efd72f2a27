//! Throughput of the ImageNet training input pipeline (images/s): JPEG decode, then
//! torchvision's `RandomResizedCrop(224)` + flip (+ AutoAugment) into the CHW float layout of
//! a batch; per core, then through the threaded loader. The Python side is
//! `benches/pillow_jpeg_pipeline.py` (Pillow + torchvision on the same files).
//!
//! ```sh
//! python3 crates/ews-data/benches/pillow_jpeg_pipeline.py --make /tmp/jpeg-bench
//! cargo bench -p ews-data --bench jpeg_pipeline -- --images /tmp/jpeg-bench [--seconds S] [--workers N]
//! ```
//!
//! `--images` takes any folder of JPEG files (ImageNet's `val/<class>/` works too).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ews_augment::policy::{AutoAugment, AutoAugmentPolicy, Policy};
use ews_augment::standard::{
    random_resized_crop, random_resized_crop_window, resized_crop_and_flip,
};
use ews_data::{Augmentation, BatchLoader, ImageSource, LoaderConfig, Split, Views, folder};
use rand::SeedableRng;
use rand::rngs::StdRng;

const SIZE: usize = 224;

struct Args {
    images: PathBuf,
    seconds: f64,
    workers: Vec<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        images: PathBuf::from("/tmp/jpeg-bench"),
        seconds: 3.0,
        workers: vec![1, 2],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--images" => args.images = PathBuf::from(value()),
            "--seconds" => args.seconds = value().parse().expect("--seconds S"),
            "--workers" => {
                args.workers = value()
                    .split(',')
                    .map(|w| w.parse().expect("--workers N[,N...]"))
                    .collect()
            }
            _ => {}
        }
    }
    args
}

/// The JPEG files under `dir` (one level of class folders at most), sorted.
fn jpeg_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in folder::sorted_entries(dir).unwrap_or_else(|e| panic!("{e} (make it first)")) {
        if entry.is_dir() {
            files.extend(jpeg_files(&entry));
        } else if entry
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        {
            files.push(entry);
        }
    }
    files
}

/// Runs `work` over the files for about `seconds` on this thread; images per second.
fn per_core(files: &[PathBuf], seconds: f64, mut work: impl FnMut(&Path)) -> f64 {
    for f in files.iter().take(4) {
        work(f);
    }
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        for f in files {
            work(f);
        }
        done += files.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Images per second of the threaded loader with `workers` threads over about `seconds`.
fn loader(files: &[PathBuf], workers: usize, policy: Policy, seconds: f64) -> f64 {
    // Enough batches per epoch for every worker.
    let repeated: Vec<PathBuf> = files
        .iter()
        .cycle()
        .take(files.len().max(1024))
        .cloned()
        .collect();
    let split = Split {
        labels: Arc::new(vec![0; repeated.len()]),
        images: ImageSource::Files(Arc::new(repeated)),
    };
    let config = LoaderConfig {
        batch_size: 32,
        image_size: SIZE,
        shuffle: true,
        drop_last: false,
        workers,
        prefetch: 2,
        seed: 0,
        augmentation: Augmentation::RandomResizedCrop,
        policy,
        views: Views::Single,
    };
    let start = Instant::now();
    let (mut images, mut epoch) = (0usize, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        for batch in BatchLoader::new(&split, &config, epoch) {
            images += batch.expect("a batch").labels.len();
        }
        epoch += 1;
    }
    images as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args = parse_args();
    let files = jpeg_files(&args.images);
    assert!(
        !files.is_empty(),
        "no JPEG files in {}",
        args.images.display()
    );
    let pixels: usize = files
        .iter()
        .map(|f| image::image_dimensions(f).map_or(0, |(w, h)| (w * h) as usize))
        .sum();
    println!(
        "{} JPEG files in {}, {:.0} kilopixels on average",
        files.len(),
        args.images.display(),
        pixels as f64 / files.len() as f64 / 1e3
    );
    let autoaugment = Policy::AutoAugment(AutoAugment::new(AutoAugmentPolicy::Imagenet));
    let mut out = vec![0f32; 3 * SIZE * SIZE];
    let mut rng = StdRng::seed_from_u64(0);
    let decode = per_core(&files, args.seconds, |f| {
        std::hint::black_box(folder::decode_with_image_crate(f).unwrap());
    });
    println!("decode (image crate: zune-jpeg)             {decode:>8.0} images/s per core");
    #[cfg(feature = "libjpeg-turbo")]
    {
        let decode = per_core(&files, args.seconds, |f| {
            std::hint::black_box(folder::decode(f).unwrap());
        });
        println!("decode (libjpeg-turbo)                      {decode:>8.0} images/s per core");
        let window = per_core(&files, args.seconds, |f| {
            let pick = |h, w| random_resized_crop_window(h, w, &mut rng);
            std::hint::black_box(folder::decode_window(f, pick).unwrap());
        });
        println!("decode a RandomResizedCrop window (libjpeg) {window:>8.0} images/s per core");
    }
    let decoded: Vec<_> = files.iter().map(|f| folder::decode(f).unwrap()).collect();
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < args.seconds {
        for img in &decoded {
            let img = random_resized_crop(img, SIZE, &mut rng);
            Policy::None.write_into(&img, &mut rng, &mut out);
        }
        done += decoded.len();
    }
    let transform = done as f64 / start.elapsed().as_secs_f64();
    println!("RandomResizedCrop + flip + tensor (decoded) {transform:>8.0} images/s per core");
    let mut pipeline = |policy: &Policy| {
        per_core(&files, args.seconds, |f| {
            // As the loader does: only the window is decoded where the decoder can.
            let pick = |h, w| random_resized_crop_window(h, w, &mut rng);
            let (image, window) = folder::decode_window(f, pick).unwrap();
            let img = resized_crop_and_flip(&image, window, SIZE, &mut rng);
            policy.write_into(&img, &mut rng, &mut out);
        })
    };
    let standard = pipeline(&Policy::None);
    println!("decode + RandomResizedCrop + flip + tensor  {standard:>8.0} images/s per core");
    let auto = pipeline(&autoaugment);
    println!("  + AutoAugment (ImageNet policy)           {auto:>8.0} images/s per core");
    for &w in &args.workers {
        let rate = loader(&files, w, Policy::None, args.seconds);
        println!("loader, {w} worker(s), standard              {rate:>8.0} images/s");
    }
}
