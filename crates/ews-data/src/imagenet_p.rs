//! ImageNet-P generation: an image folder (`<class>/<image>`, e.g. ImageNet val) into
//! `OUT/<perturbation>/<class>/<image stem>.npy` sequences (uint8 frames x 224 x 224 x 3,
//! lossless; `ews eval --imagenet-p` reads them as it reads the official `.mp4` files).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use ews_augment::perturb::{Perturbation, sequence};
use ews_augment::standard::resize_shorter_side;
use ews_models::persist::write_atomically;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::loader::mix;
use crate::{DataError, ImageSource, io_error, npy};

/// What [`generate`] produces.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Perturbations, one folder each.
    pub perturbations: &'a [Perturbation],
    /// 1, or 2 and 3 for the noise sequences (`NAME_2`, `NAME_3` folders).
    pub difficulty: u8,
    /// Seed of the random sequences (per perturbation and image, so a resumed run writes
    /// the same files).
    pub seed: u64,
    /// Only a seeded random subset of this many images.
    pub limit: Option<usize>,
    /// Worker threads.
    pub workers: usize,
}

/// Generates every sequence of `job` for the images of `src`; files that exist are kept
/// (each is written atomically, so a killed run resumes). Returns (sequences written,
/// sequences in all); `progress(done, total)` after each.
pub fn generate(
    src: &Path,
    out: &Path,
    job: &Job,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(usize, usize), DataError> {
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
    let mut split = crate::folder::read_split(src, &classes)?;
    if let Some(n) = job.limit {
        split = split.subset(n, job.seed);
    }
    let ImageSource::Files(paths) = &split.images else {
        unreachable!("folders are read as files")
    };
    let tasks: Vec<(usize, usize)> = (0..job.perturbations.len())
        .flat_map(|p| (0..paths.len()).map(move |i| (p, i)))
        .collect();
    let (next, done, written) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|scope| -> Result<(), DataError> {
        let handles: Vec<_> = (0..job.workers.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), DataError> {
                    while let Some(&(p, i)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let perturbation = job.perturbations[p];
                        let dir = out
                            .join(perturbation.folder(job.difficulty))
                            .join(&classes[split.labels[i] as usize]);
                        let stem = paths[i].file_stem().expect("image files have names");
                        let target = dir.join(stem).with_extension("npy");
                        if !target.is_file() {
                            let resized = resize_shorter_side(&split.image(i)?, 256);
                            let seed = mix(mix(job.seed, p as u64 + 1), i as u64);
                            let mut rng = StdRng::seed_from_u64(seed);
                            let frames = sequence(&resized, perturbation, job.difficulty, &mut rng)
                                .map_err(|e| DataError::BadFile {
                                    path: paths[i].display().to_string(),
                                    message: e,
                                })?;
                            let pixels: Vec<u8> = frames
                                .iter()
                                .flat_map(|f| f.pixels.iter().copied())
                                .collect();
                            let npy = npy::encode_u8(&[frames.len(), 224, 224, 3], &pixels);
                            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                            write_atomically(&target, &npy).map_err(io_error(&target))?;
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1, tasks.len());
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("ImageNet-P worker panicked")?;
        }
        Ok(())
    })?;
    Ok((written.into_inner(), tasks.len()))
}
