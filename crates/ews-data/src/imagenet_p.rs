//! ImageNet-P generation: an image folder (`<class>/<image>`, e.g. ImageNet val) into
//! `OUT/<perturbation>/<class>/<image stem>.npy` sequences (uint8 frames x 224 x 224 x 3,
//! lossless; `ews eval --imagenet-p` reads them as it reads the official `.mp4` files).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ews_augment::perturb::{Perturbation, sequence};
use ews_augment::standard::resize_shorter_side;
use ews_models::persist::write_atomically;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::loader::mix;
use crate::{DataError, ImageSource, Split, io_error, npy};

/// What [`generate`] produces.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Perturbations, one folder each.
    pub perturbations: &'a [Perturbation],
    /// 1, or 2 and 3 for the noise sequences (`NAME_2`, `NAME_3` folders).
    pub difficulty: u8,
    /// Seed of the random sequences (with the perturbation, the difficulty and the image's
    /// path, so a resumed run or another subset writes the same files).
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
    let classes = crate::folder::class_folders(src)?;
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
    if paths.is_empty() {
        return Err(DataError::Missing {
            path: src.display().to_string(),
            hint: "no .jpg/.jpeg/.png images in its class folders".into(),
        });
    }
    check_distinct_stems(paths)?;
    let tasks: Vec<(usize, usize)> = (0..job.perturbations.len())
        .flat_map(|p| (0..paths.len()).map(move |i| (p, i)))
        .collect();
    let (next, done, written) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<(), DataError> {
        let handles: Vec<_> = (0..job.workers.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), DataError> {
                    while let Some(&(p, i)) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let class = &classes[split.labels[i] as usize];
                        let task = Task {
                            src,
                            out,
                            job,
                            class,
                            path: &paths[i],
                        };
                        match task.write(job.perturbations[p], &split, i) {
                            Ok(true) => _ = written.fetch_add(1, Ordering::Relaxed),
                            Ok(false) => {}
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
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

/// One image's sequence of one perturbation.
struct Task<'a> {
    src: &'a Path,
    out: &'a Path,
    job: &'a Job<'a>,
    class: &'a str,
    path: &'a Path,
}

impl Task<'_> {
    /// Writes the sequence unless its file exists; whether it wrote one. The seed follows
    /// from the perturbation, the difficulty and the image's path under the source folder,
    /// so a sequence is the same whichever perturbations, subset or order a run covers.
    fn write(
        &self,
        perturbation: Perturbation,
        split: &Split,
        i: usize,
    ) -> Result<bool, DataError> {
        let dir = self
            .out
            .join(perturbation.folder(self.job.difficulty))
            .join(self.class);
        let stem = self.path.file_stem().expect("image files have names");
        let target = dir.join(format!("{}.npy", stem.to_string_lossy()));
        if target.is_file() {
            return Ok(false);
        }
        let resized = resize_shorter_side(&split.image(i)?, 256);
        let rank = Perturbation::ALL
            .iter()
            .position(|&p| p == perturbation)
            .unwrap_or(0);
        let relative = self.path.strip_prefix(self.src).unwrap_or(self.path);
        let seed = mix(
            mix(
                self.job.seed,
                ((rank as u64) << 8) | u64::from(self.job.difficulty),
            ),
            fnv1a(relative.to_string_lossy().as_bytes()),
        );
        let mut rng = StdRng::seed_from_u64(seed);
        let frames =
            sequence(&resized, perturbation, self.job.difficulty, &mut rng).map_err(|e| {
                DataError::BadFile {
                    path: self.path.display().to_string(),
                    message: e,
                }
            })?;
        let pixels: Vec<u8> = frames
            .iter()
            .flat_map(|f| f.pixels.iter().copied())
            .collect();
        let npy = npy::encode_u8(&[frames.len(), 224, 224, 3], &pixels);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        write_atomically(&target, &npy).map_err(io_error(&target))?;
        Ok(true)
    }
}

/// The 64-bit FNV-1a hash (a stable seed from a path).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Two images of one class folder with the same name but another extension would write the
/// same sequence file.
fn check_distinct_stems(paths: &[std::path::PathBuf]) -> Result<(), DataError> {
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        if !seen.insert(path.with_extension("")) {
            return Err(DataError::BadFile {
                path: path.display().to_string(),
                message: "another image of its folder has the same name: their sequences would share one file".into(),
            });
        }
    }
    Ok(())
}
