//! `ews eval --imagenet-p DIR`: flip probability, flip rate and top-5 distance of a run on
//! ImageNet-P sequences.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ews_models::Classifier;
use ews_train::imagenet_p::{
    ImagenetPReport, Normalizers, TEST_PERTURBATIONS, VALIDATION_PERTURBATIONS,
    evaluate_imagenet_p, folder_of,
};

use crate::figures::{progress_bar, write_outputs};
use crate::{WhichWeights, backend, load_run};

/// What `ews eval --imagenet-p` reads.
pub struct ImagenetPArgs {
    /// The ImageNet-P folder.
    pub dir: PathBuf,
    /// Frames this far apart are compared (non-noise perturbations).
    pub difficulty: usize,
    /// AlexNet's flip probabilities (JSON), for the flip rates and the mFR.
    pub alexnet: Option<PathBuf>,
    /// Only these perturbations (default: the ten test perturbations).
    pub perturbations: Vec<String>,
}

/// Evaluates the run on ImageNet-P; writes RUN/imagenet_p.json and RUN/imagenet_p.md.
pub fn run_eval_imagenet_p(run: &Path, weights: WhichWeights, args: &ImagenetPArgs) -> Result<()> {
    let normalizers = args.alexnet.as_deref().map(Normalizers::read).transpose()?;
    let perturbations = requested(args)?;
    let (_, model) = load_run(run, weights)?;
    let report = evaluate(&model, args, &perturbations, normalizers.as_ref())?;
    write_outputs(run, "imagenet_p", &report, &report.markdown())
}

/// The perturbations `args` asks for, checked.
pub(crate) fn requested(args: &ImagenetPArgs) -> Result<Vec<String>> {
    if !(1..=3).contains(&args.difficulty) {
        bail!(
            "--difficulty {}: ImageNet-P has difficulties 1, 2 and 3",
            args.difficulty
        );
    }
    match args.perturbations.is_empty() {
        true => Ok(TEST_PERTURBATIONS.iter().map(|p| p.to_string()).collect()),
        false => checked_names(&args.dir, &args.perturbations, args.difficulty),
    }
}

/// `model` on the `perturbations` of `args.dir`, with a progress bar.
pub(crate) fn evaluate<M: Classifier<backend::Backend>>(
    model: &M,
    args: &ImagenetPArgs,
    perturbations: &[String],
    normalizers: Option<&Normalizers>,
) -> Result<ImagenetPReport> {
    let bar = progress_bar("ImageNet-P");
    let start = std::time::Instant::now();
    let report = evaluate_imagenet_p(
        model,
        &args.dir,
        perturbations,
        args.difficulty,
        normalizers,
        &backend::device(),
        |name, done, total| {
            bar.set_message(format!("ImageNet-P {name}"));
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    if report.perturbations.is_empty() {
        bail!(
            "{}: none of {} found (ImageNet-P is DIR/<perturbation>/<class>/<video>.mp4|.npy)",
            args.dir.display(),
            perturbations.join(", ")
        );
    }
    let videos: usize = report.perturbations.iter().map(|p| p.videos).sum();
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{videos} sequences in {seconds:.1} s ({:.2} sequences/s).",
        videos as f64 / seconds
    );
    Ok(report)
}

/// The requested perturbations, each a known ImageNet-P name whose folder exists in `dir`.
fn checked_names(dir: &Path, names: &[String], difficulty: usize) -> Result<Vec<String>> {
    let known = || TEST_PERTURBATIONS.iter().chain(&VALIDATION_PERTURBATIONS);
    for name in names {
        if !known().any(|k| k == name) {
            let all: Vec<&str> = known().copied().collect();
            bail!(
                "unknown perturbation `{name}` (ImageNet-P: {})",
                all.join(", ")
            );
        }
        let folder = dir.join(folder_of(name, difficulty));
        if !folder.is_dir() {
            bail!(
                "{}: not found (ImageNet-P is DIR/<perturbation>/<class>/<video>)",
                folder.display()
            );
        }
    }
    Ok(names.to_vec())
}
