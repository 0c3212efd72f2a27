//! `ews eval --imagenet-p DIR`: flip probability, flip rate and top-5 distance of a run on
//! ImageNet-P sequences; `ews alexnet --imagenet-p DIR`: the same for torchvision's
//! pretrained AlexNet, written as the normalisers of the flip rates.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ews_models::persist::write_atomically;
use ews_models::{AlexNet, Classifier};
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

/// `ews alexnet`: torchvision's pretrained AlexNet on ImageNet-P, the normalisers of the mFR.
#[derive(clap::Args, Debug)]
pub struct AlexnetArgs {
    /// The ImageNet-P folder (`<perturbation>/<class>/<video>.mp4` or `.npy`).
    #[arg(long)]
    imagenet_p: PathBuf,
    /// torchvision's AlexNet weights: `ews download alexnet` puts alexnet-owt-7be5be79.pth
    /// here; the older alexnet-owt-4df8aa71.pth that the reference test.py loads works too.
    #[arg(long, default_value = "datasets/alexnet-owt-7be5be79.pth")]
    weights: PathBuf,
    /// Compare frames this far apart (noise: read NAME_D folders); the normalisers hold
    /// only for evaluations at the same difficulty.
    #[arg(long, default_value_t = 1)]
    difficulty: usize,
    /// Only these perturbations (default: the ten test perturbations).
    #[arg(long = "perturbation")]
    perturbations: Vec<String>,
    /// The normaliser file to write (`ews eval --alexnet-p OUT`); the report goes next to
    /// it as OUT with the extension .md.
    #[arg(long, default_value = "alexnet-p.json")]
    out: PathBuf,
}

/// Evaluates torchvision's AlexNet on ImageNet-P and writes its flip probabilities and top-5
/// distances as the normalisers of `ews eval --imagenet-p --alexnet-p`.
pub fn run_alexnet(args: &AlexnetArgs) -> Result<()> {
    if !args.weights.is_file() {
        bail!(
            "{}: not found; `ews download alexnet` fetches torchvision's AlexNet weights \
             (233 MiB) there, or pass --weights FILE",
            args.weights.display()
        );
    }
    let model = AlexNet::<backend::Backend>::from_torchvision(&args.weights, &backend::device())?;
    let eval_args = ImagenetPArgs {
        dir: args.imagenet_p.clone(),
        difficulty: args.difficulty,
        alexnet: None,
        perturbations: args.perturbations.clone(),
    };
    let perturbations = requested(&eval_args)?;
    let report = evaluate(&model, &eval_args, &perturbations, None)?;
    // The report first: it stays even where the scores cannot normalise.
    let md = args.out.with_extension("md");
    write_atomically(&md, report.markdown().as_bytes())
        .with_context(|| format!("writing {}", md.display()))?;
    print!("{}", report.markdown());
    let normalizers = Normalizers::from_report(&report)?;
    let json = serde_json::to_string_pretty(&normalizers)?;
    write_atomically(&args.out, json.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    if !report.missing.is_empty() {
        println!(
            "Not measured (no mFR with these normalisers): {}.",
            report.missing.join(", ")
        );
    }
    println!(
        "AlexNet's normalisers in {} (report {}): pass `--alexnet-p {}` to `ews eval \
         --imagenet-p` at difficulty {}.",
        args.out.display(),
        md.display(),
        args.out.display(),
        args.difficulty
    );
    Ok(())
}

/// The perturbations `args` asks for, checked.
fn requested(args: &ImagenetPArgs) -> Result<Vec<String>> {
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
fn evaluate<M: Classifier<backend::Backend>>(
    model: &M,
    args: &ImagenetPArgs,
    perturbations: &[String],
    normalizers: Option<&Normalizers>,
) -> Result<ImagenetPReport> {
    let bar = progress_bar("ImageNet-P");
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
