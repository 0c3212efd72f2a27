//! `ews alexnet`: torchvision's pretrained AlexNet, the normaliser of the ImageNet-C and
//! ImageNet-P benchmarks, measured on the user's own benchmark files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ews_data::torch_pth::read_alexnet;
use ews_data::{Augmentation, LoaderConfig, Policy, Views, folder};
use ews_models::AlexNet;
use ews_models::persist::write_atomically;
use ews_train::imagenet_c::{ALEXNET_CLEAN_ERROR, evaluate_imagenet_c};
use ews_train::imagenet_p::Normalizers;

use crate::backend;
use crate::imagenet_p_args::{ImagenetPArgs, evaluate, requested};

/// What `ews alexnet` measures.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("benchmark").required(true).args(["imagenet_p", "imagenet_c"])))]
pub struct AlexnetArgs {
    /// An ImageNet-P folder (`<perturbation>/<class>/<video>.mp4` or `.npy`): writes
    /// AlexNet's flip probabilities and top-5 distances, the normalisers of `ews eval
    /// --imagenet-p --alexnet-p`.
    #[arg(long)]
    imagenet_p: Option<PathBuf>,
    /// An ImageNet-C folder (`<corruption>/<severity>/<class>/<image>`): AlexNet's errors,
    /// to check the built-in mCE normalisers on these files (every CE near 100%).
    #[arg(long)]
    imagenet_c: Option<PathBuf>,
    /// torchvision's AlexNet weights: `ews download alexnet` puts alexnet-owt-7be5be79.pth
    /// here; the older alexnet-owt-4df8aa71.pth that the reference test.py loads works too.
    #[arg(long, default_value = "datasets/alexnet-owt-7be5be79.pth")]
    weights: PathBuf,
    /// ImageNet-P: compare frames this far apart (noise: read NAME_D folders); the
    /// normalisers hold only for evaluations at the same difficulty.
    #[arg(long, default_value_t = 1, requires = "imagenet_p")]
    difficulty: usize,
    /// ImageNet-P: only these perturbations (default: the ten test perturbations).
    #[arg(long = "perturbation", requires = "imagenet_p")]
    perturbations: Vec<String>,
    /// The JSON file to write (default alexnet-p.json or alexnet-c.json); the report goes
    /// next to it with the extension .md.
    #[arg(long)]
    out: Option<PathBuf>,
    /// ImageNet-C: the clean validation folder (`<class>/<image>`, e.g. ImageNet val),
    /// evaluated as torchvision does (resize 256, centre crop 224), for AlexNet's clean error
    /// and the relative CEs and mCE.
    #[arg(long, requires = "imagenet_c")]
    clean: Option<PathBuf>,
    /// ImageNet-C: images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
}

/// Runs `ews alexnet`.
pub fn run_alexnet(args: &AlexnetArgs) -> Result<()> {
    if !args.weights.is_file() {
        bail!(
            "{}: not found; `ews download alexnet` fetches torchvision's AlexNet weights \
             (233 MiB) there, or pass --weights FILE",
            args.weights.display()
        );
    }
    let model = read_alexnet::<backend::Backend>(&args.weights, &backend::device())?;
    match (&args.imagenet_p, &args.imagenet_c) {
        (Some(dir), _) => imagenet_p(&model, dir, args),
        (None, Some(dir)) => imagenet_c(&model, dir, args),
        (None, None) => unreachable!("clap requires one benchmark"),
    }
}

/// AlexNet on ImageNet-P: the report, then the normaliser file.
fn imagenet_p(model: &AlexNet<backend::Backend>, dir: &Path, args: &AlexnetArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or("alexnet-p.json".into());
    let eval_args = ImagenetPArgs {
        dir: dir.to_path_buf(),
        difficulty: args.difficulty,
        alexnet: None,
        perturbations: args.perturbations.clone(),
    };
    let perturbations = requested(&eval_args)?;
    let report = evaluate(model, &eval_args, &perturbations, None)?;
    // The report first: it stays even where the scores cannot normalise.
    let md = write_report(&out, &report.markdown())?;
    let normalizers = Normalizers::from_report(&report)?;
    let json = serde_json::to_string_pretty(&normalizers)?;
    write_atomically(&out, json.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    if !report.missing.is_empty() {
        println!(
            "Not measured (no mFR with these normalisers): {}.",
            report.missing.join(", ")
        );
    }
    println!(
        "AlexNet's normalisers in {} (report {}): pass `--alexnet-p {}` to `ews eval \
         --imagenet-p` at difficulty {}.",
        out.display(),
        md.display(),
        out.display(),
        args.difficulty
    );
    Ok(())
}

/// AlexNet on ImageNet-C: its errors against the built-in normalisers.
fn imagenet_c(model: &AlexNet<backend::Backend>, dir: &Path, args: &AlexnetArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or("alexnet-c.json".into());
    let loader = LoaderConfig {
        batch_size: args.batch_size.max(1),
        image_size: 224,
        shuffle: false,
        drop_last: false,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        prefetch: 2,
        seed: 0,
        augmentation: Augmentation::None,
        policy: Policy::None,
        views: Views::Single,
    };
    let clean_error = match &args.clean {
        Some(clean) => Some(clean_error(model, clean, &loader)?),
        None => None,
    };
    let report = evaluate_imagenet_c(
        model,
        dir,
        &loader,
        &backend::device(),
        clean_error,
        |c, s| eprintln!("evaluating {c} severity {s}"),
    )?;
    let json = serde_json::to_string_pretty(&report)?;
    write_atomically(&out, json.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    let md = write_report(&out, &report.markdown())?;
    println!(
        "(AlexNet's errors in {} and {}: a CE of 100% means these files give AlexNet the \
         built-in normaliser's error.)",
        out.display(),
        md.display()
    );
    Ok(())
}

/// AlexNet's top-1 error (percent) on the clean folder `dir`, resized to 256 and centre
/// cropped to 224 as torchvision evaluates it.
fn clean_error(
    model: &AlexNet<backend::Backend>,
    dir: &Path,
    loader: &LoaderConfig,
) -> Result<f64> {
    let classes =
        folder::class_folders(dir).with_context(|| format!("reading {}", dir.display()))?;
    if classes.len() != model.num_classes() {
        bail!(
            "{}: {} class folders, but AlexNet has {} classes (pass the validation folder \
             whose classes the ImageNet-C folder has)",
            dir.display(),
            classes.len(),
            model.num_classes()
        );
    }
    let split = folder::read_split(dir, &classes)?;
    let loader = LoaderConfig {
        augmentation: Augmentation::CenterCrop,
        ..*loader
    };
    eprintln!("evaluating the clean images of {}", dir.display());
    let error = 100.0 - ews_train::evaluate(model, &split, &loader, &backend::device())?;
    println!(
        "AlexNet's clean error: {error:.2}% on {} images (torchvision publishes {:.2}% on \
         ImageNet val).",
        split.len(),
        100.0 * ALEXNET_CLEAN_ERROR
    );
    Ok(error)
}

/// Writes `markdown` as OUT with the extension .md and prints it; returns that path.
fn write_report(out: &Path, markdown: &str) -> Result<PathBuf> {
    let md = out.with_extension("md");
    write_atomically(&md, markdown.as_bytes())
        .with_context(|| format!("writing {}", md.display()))?;
    print!("{markdown}");
    Ok(md)
}
