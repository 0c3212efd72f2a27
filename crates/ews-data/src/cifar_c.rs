//! Generating a CIFAR-C folder from a test split: `OUT/<corruption>.npy` (uint8,
//! `(severities x n, 32, 32, 3)`, severity-major), `OUT/labels.npy` (uint8) and
//! `OUT/meta.json` (corruptions, severities, seed, image count).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use ews_augment::corrupt::{Corruption, FrostTextures, Table, corrupt, frost_with};
use ews_models::persist::write_atomically;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::loader::mix;
use ews_augment::Image;
use image::ImageEncoder;

use crate::{DataError, ImageSource, Split, io_error, npy};

/// What a generated folder holds (`meta.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CifarCMeta {
    /// Corruption file stems.
    pub corruptions: Vec<String>,
    /// Severities, in file order.
    pub severities: Vec<u8>,
    /// Test images per severity.
    pub images: usize,
    /// Seed of the random corruptions.
    pub seed: u64,
    /// Parameter table.
    pub table: Table,
    /// Frost textures: "reference" or "procedural fallback (not comparable to published
    /// numbers)"; absent without frost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frost_textures: Option<String>,
}

/// Reads the reference frost textures (`frost1.png`, `frost2.png`, `frost3.png`,
/// `frost4.jpg`, `frost5.jpg`, `frost6.jpg` of hendrycks/robustness) from `dir`.
pub fn load_frost(dir: &Path, table: Table) -> Result<FrostTextures, DataError> {
    let names = [
        "frost1.png",
        "frost2.png",
        "frost3.png",
        "frost4.jpg",
        "frost5.jpg",
        "frost6.jpg",
    ];
    let mut images = Vec::new();
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(DataError::Missing {
                path: path.display().to_string(),
                hint: "the frost textures of hendrycks/robustness (ImageNet-C/create_c/frost*)"
                    .into(),
            });
        }
        images.push(crate::folder::decode(&path)?);
    }
    FrostTextures::from_images(images, table).map_err(DataError::Invalid)
}

/// What [`generate`] produces.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Corruptions, one file each.
    pub corruptions: &'a [Corruption],
    /// Severities, in file order.
    pub severities: &'a [u8],
    /// Seed of the random corruptions.
    pub seed: u64,
    /// Worker threads.
    pub workers: usize,
    /// Reference frost textures (`None`: the procedural stand-in).
    pub frost: Option<&'a FrostTextures>,
}

impl Job<'_> {
    /// Corruption `ci` of the job at `severity` on image `index`, with randomness derived
    /// from (seed, corruption, severity, index) and the job's frost textures.
    fn apply(&self, image: &Image, ci: usize, severity: u8, index: usize, table: Table) -> Image {
        let key = mix(
            mix(self.seed, ci as u64 + 1),
            severity as u64 * 1_000_003 + index as u64,
        );
        let mut rng = StdRng::seed_from_u64(key);
        match (self.corruptions[ci], self.frost) {
            (Corruption::Frost, Some(textures)) => {
                frost_with(image, severity, table, textures, &mut rng)
            }
            (corruption, _) => corrupt(image, corruption, severity, table, &mut rng),
        }
    }
}

/// Corrupts every image of `split` with each corruption at each severity on worker threads
/// and writes the CIFAR-C layout into `out`. Every image's randomness derives from (seed,
/// corruption, severity, index), so the output does not depend on the number of workers.
/// `progress` receives the number of images finished so far.
pub fn generate(
    split: &Split,
    out: &Path,
    job: &Job,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<CifarCMeta, DataError> {
    let Job {
        corruptions,
        severities,
        seed,
        workers,
        frost,
    } = *job;
    if let Some(s) = severities.iter().find(|s| !(1..=5).contains(*s)) {
        return Err(DataError::Invalid(format!("severity {s} is not in 1..=5")));
    }
    if split.is_empty() || severities.is_empty() || corruptions.is_empty() {
        return Err(DataError::Invalid(
            "nothing to generate (no images, corruptions or severities)".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    let n = split.len();
    let first = split.image(0)?;
    let (h, w) = (first.height, first.width);
    let table = if h.max(w) > 64 {
        Table::Imagenet
    } else {
        Table::Cifar
    };
    let plane = h * w * 3;
    let done = AtomicUsize::new(0);
    for (ci, &corruption) in corruptions.iter().enumerate() {
        let mut data = vec![0u8; severities.len() * n * plane];
        let chunk = n.div_ceil(workers.max(1));
        // Each worker owns a contiguous slice of every severity block.
        let mut per_worker: Vec<Vec<(u8, usize, &mut [u8])>> =
            (0..workers.max(1)).map(|_| Vec::new()).collect();
        for (block, &severity) in data.chunks_mut(n * plane).zip(severities) {
            for (wi, part) in block.chunks_mut(chunk * plane).enumerate() {
                per_worker[wi].push((severity, wi * chunk, part));
            }
        }
        std::thread::scope(|scope| -> Result<(), DataError> {
            let mut handles = Vec::new();
            for work in per_worker {
                let done = &done;
                handles.push(scope.spawn(move || -> Result<(), DataError> {
                    for (severity, start, part) in work {
                        for (k, dst) in part.chunks_mut(plane).enumerate() {
                            let i = start + k;
                            let image = split.image(i)?;
                            if (image.height, image.width) != (h, w) {
                                return Err(DataError::Invalid(format!(
                                    "image {i} is {}x{}, not {h}x{w}",
                                    image.height, image.width
                                )));
                            }
                            let out = job.apply(&image, ci, severity, i, table);
                            dst.copy_from_slice(&out.pixels);
                            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                        }
                    }
                    Ok(())
                }));
            }
            for h in handles {
                h.join().expect("corruption worker panicked")?;
            }
            Ok(())
        })?;
        let path = out.join(format!("{}.npy", corruption.name()));
        write_atomically(
            &path,
            &npy::encode_u8(&[severities.len() * n, h, w, 3], &data),
        )
        .map_err(io_error(&path))?;
    }
    let labels: Vec<u8> = severities
        .iter()
        .flat_map(|_| split.labels.iter().map(|&l| l as u8))
        .collect();
    if split.labels.iter().any(|&l| l > 255) {
        return Err(DataError::Invalid(
            "labels above 255 do not fit uint8".into(),
        ));
    }
    let path = out.join("labels.npy");
    write_atomically(&path, &npy::encode_u8(&[labels.len()], &labels)).map_err(io_error(&path))?;
    let meta = CifarCMeta {
        corruptions: corruptions.iter().map(|c| c.name().to_string()).collect(),
        severities: severities.to_vec(),
        images: n,
        seed,
        table,
        frost_textures: corruptions
            .contains(&Corruption::Frost)
            .then(|| match frost {
                Some(t) if !t.procedural => "reference".to_string(),
                _ => "procedural fallback (not comparable to published numbers)".to_string(),
            }),
    };
    let path = out.join("meta.json");
    write_atomically(
        &path,
        serde_json::to_string_pretty(&meta)
            .expect("meta serialises")
            .as_bytes(),
    )
    .map_err(io_error(&path))?;
    Ok(meta)
}

/// torchvision's `Resize(256)` then `CenterCrop(224)` on a PIL image (Pillow's antialiased
/// bilinear resize, crop offsets rounded), the preprocessing of `make_imagenet_c.py`.
pub fn resize_center_crop_pil(image: &Image, resize: usize, crop: usize) -> Image {
    use ews_augment::corrupt::{PilFilter, resize_pil};
    let (h, w) = (image.height, image.width);
    let (nh, nw) = if h <= w {
        (resize, (resize as f64 * w as f64 / h as f64) as usize)
    } else {
        ((resize as f64 * h as f64 / w as f64) as usize, resize)
    };
    let resized = resize_pil(image, nw, nh, PilFilter::Bilinear);
    let top = ((nh as f64 - crop as f64) / 2.0).round_ties_even().max(0.0) as usize;
    let left = ((nw as f64 - crop as f64) / 2.0).round_ties_even().max(0.0) as usize;
    ews_augment::standard::crop(&resized, top, left, crop.min(nh), crop.min(nw))
}

/// Corrupts an image folder (`src/<class>/<image>`) into the ImageNet-C layout
/// `out/<corruption>/<severity>/<class>/<image>` (JPEG at quality 85 as the reference saves
/// ImageNet's .JPEG files; PNG sources stay PNG, as PIL's save would) after Resize(256) + CenterCrop(224). Files that exist already are kept, so a killed
/// run resumes; each file is written atomically. Returns the number of files written.
pub fn generate_folder(
    src: &Path,
    out: &Path,
    job: &Job,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<usize, DataError> {
    if let Some(s) = job.severities.iter().find(|s| !(1..=5).contains(*s)) {
        return Err(DataError::Invalid(format!("severity {s} is not in 1..=5")));
    }
    let classes: Vec<String> = crate::folder::sorted_entries(src)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if classes.is_empty() {
        return Err(DataError::Missing {
            path: src.display().to_string(),
            hint: "an image folder with one subfolder per class".into(),
        });
    }
    let split = crate::folder::read_split(src, &classes)?;
    let ImageSource::Files(paths) = &split.images else {
        unreachable!("folders are read as files")
    };
    let tasks: Vec<(usize, u8, usize)> = job
        .corruptions
        .iter()
        .enumerate()
        .flat_map(|(ci, _)| {
            job.severities
                .iter()
                .flat_map(move |&s| (0..paths.len()).map(move |i| (ci, s, i)))
        })
        .collect();
    let written = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let workers = job.workers.max(1);
    std::thread::scope(|scope| -> Result<(), DataError> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<(), DataError> {
                    loop {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(ci, severity, i)) = tasks.get(t) else {
                            return Ok(());
                        };
                        let corruption = job.corruptions[ci];
                        let class = &classes[split.labels[i] as usize];
                        let name = paths[i].file_name().expect("image files have names");
                        let dir = out
                            .join(corruption.name())
                            .join(severity.to_string())
                            .join(class);
                        let target = dir.join(name);
                        if !target.is_file() {
                            let image = resize_center_crop_pil(&split.image(i)?, 256, 224);
                            let corrupted = job.apply(&image, ci, severity, i, Table::Imagenet);
                            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                            // As PIL's save does: the format follows the file name, JPEG at
                            // quality 85 (ImageNet's .JPEG files), PNG for .png sources.
                            let png = target
                                .extension()
                                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
                            let mut bytes = Vec::new();
                            let (w, h) = (corrupted.width as u32, corrupted.height as u32);
                            let encoded = if png {
                                image::codecs::png::PngEncoder::new(&mut bytes).write_image(
                                    &corrupted.pixels,
                                    w,
                                    h,
                                    image::ExtendedColorType::Rgb8,
                                )
                            } else {
                                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
                                    .encode(&corrupted.pixels, w, h, image::ExtendedColorType::Rgb8)
                            };
                            encoded.map_err(|e| {
                                DataError::Invalid(format!("{}: {e}", target.display()))
                            })?;
                            write_atomically(&target, &bytes).map_err(io_error(&target))?;
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("corruption worker panicked")?;
        }
        Ok(())
    })?;
    Ok(written.into_inner())
}
