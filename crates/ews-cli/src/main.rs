//! `ews`: train and evaluate robust image classifiers with EWS.

mod alexnet_args;
mod analyze_args;
mod attack_args;
mod backend;
mod bench_args;
mod coordinator;
mod experiment;
mod figures;
mod imagenet_p_args;
mod plot_args;
mod report_args;
mod train_args;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use ews_data::cifar::Cifar;
use ews_models::persist::{export_safetensors, num_params, write_atomically};
use ews_models::{Architecture, Network, NetworkConfig};
use ews_train::config::{Method, TrainConfig};
use ews_train::trainer::RunWeights;
use ews_train::{RunFiles, TrainOptions, evaluate, load_eval_dataset, train};

use crate::attack_args::AttackArgs;
use crate::bench_args::BenchArgs;
use crate::train_args::TrainArgs;

/// Robust image classifiers with EWS (Enhancing Weak Subnets, ECCV 2022).
#[derive(Parser, Debug)]
#[command(name = "ews", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// CUDA builds: choose each convolution's cuDNN algorithm by timing the candidates once
    /// per shape (PyTorch's `cudnn.benchmark = True`) instead of by cuDNN's heuristic.
    #[arg(long, global = true)]
    cudnn_benchmark: bool,
}

/// Which CIFAR to download.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum DownloadArg {
    /// CIFAR-10 (binary version, 162 MiB).
    Cifar10,
    /// CIFAR-100 (binary version, 161 MiB).
    Cifar100,
    /// The reference frost textures of the corruption generators (2 MiB, into
    /// DATA_DIR/frost; `ews corrupt` looks in ./datasets/frost, the default DATA_DIR).
    Frost,
    /// torchvision's pretrained AlexNet (233 MiB, DATA_DIR/alexnet-owt-7be5be79.pth): the
    /// normaliser that `ews alexnet --imagenet-p` measures.
    Alexnet,
}

/// Which weights of a run.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum WhichWeights {
    /// The epoch with the best test accuracy (best_model.mpk).
    Best,
    /// The latest checkpoint (checkpoint.ews).
    Last,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (default: EWS on the built-in generated dataset, offline, in minutes).
    Train(Box<TrainArgs>),
    /// Clean test accuracy of a trained run, or its accuracy on CIFAR-10-C / CIFAR-100-C.
    Eval {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Which weights.
        #[arg(long, value_enum, default_value = "best")]
        weights: WhichWeights,
        /// A CIFAR-C folder (`labels.npy` and `<corruption>.npy`): accuracy per corruption
        /// and severity, corruption error; writes RUN/cifar_c.json and RUN/cifar_c.md.
        #[arg(long)]
        cifar_c: Option<PathBuf>,
        /// Only these corruptions (file stems; default: every known one present).
        #[arg(long = "corruption")]
        corruptions: Vec<String>,
        /// An ImageNet-C folder (`<corruption>/<severity>/<class>/<image>`): error per
        /// corruption and severity, AlexNet-normalised CE and mCE; writes
        /// RUN/imagenet_c.json and RUN/imagenet_c.md.
        #[arg(long, conflicts_with = "cifar_c")]
        imagenet_c: Option<PathBuf>,
        /// An ImageNet-P folder (`<perturbation>/<class>/<video>.mp4`, decoded by FFmpeg, or
        /// `.npy` frames): flip probability, flip rate and top-5 distance per perturbation;
        /// writes RUN/imagenet_p.json and RUN/imagenet_p.md.
        #[arg(long, conflicts_with_all = ["cifar_c", "imagenet_c"])]
        imagenet_p: Option<PathBuf>,
        /// ImageNet-P: compare frames this far apart (noise: read NAME_D folders).
        #[arg(long, default_value_t = 1, requires = "imagenet_p")]
        difficulty: usize,
        /// ImageNet-P: AlexNet's flip probabilities as JSON, as `ews alexnet --imagenet-p`
        /// writes them (`{"flip_probability": {"gaussian_noise": 0.x, ...}}`), for the flip
        /// rates and mFR.
        #[arg(long, requires = "imagenet_p")]
        alexnet_p: Option<PathBuf>,
        /// ImageNet-P: only these perturbations (default: the ten test perturbations).
        #[arg(long = "perturbation", requires = "imagenet_p")]
        perturbations: Vec<String>,
    },
    /// Robust accuracy under PGD or AutoAttack.
    Attack(AttackArgs),
    /// Corrupt a CIFAR test set into the CIFAR-10-C layout, an image folder into the
    /// ImageNet-C layout, or draw a preview sheet.
    Corrupt(CorruptArgs),
    /// torchvision's pretrained AlexNet, the benchmarks' normaliser: on ImageNet-P its flip
    /// probabilities and top-5 distances, written for `ews eval --imagenet-p --alexnet-p`
    /// (mFR); on ImageNet-C its errors, to check the built-in mCE normalisers.
    Alexnet(alexnet_args::AlexnetArgs),
    /// Download and unpack a dataset, or download any file with `--url --checksum --out`
    /// (md5- or SHA-256-checked, resumable: rerun after an interruption).
    Download {
        /// The dataset.
        #[arg(value_enum, required_unless_present = "url")]
        dataset: Option<DownloadArg>,
        /// Target folder.
        #[arg(long, default_value = "datasets")]
        data_dir: PathBuf,
        /// Download this address instead (a mirror's copy of an archive, say); needs
        /// `--checksum` and `--out`.
        #[arg(long, conflicts_with = "dataset", requires_all = ["checksum", "out"])]
        url: Option<String>,
        /// The checksum the file at `--url` must have: md5 (32 hex digits) or SHA-256 (64).
        #[arg(long, requires = "url")]
        checksum: Option<String>,
        /// Where the file from `--url` goes (the partial download is `OUT.part`).
        #[arg(long, requires = "url")]
        out: Option<PathBuf>,
    },
    /// Write a run's weights as safetensors with PyTorch names.
    Export {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// Which weights.
        #[arg(long, value_enum, default_value = "best")]
        weights: WhichWeights,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print one line per architecture: `<name> <parameters>`.
    Models {
        /// Number of output classes.
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Print only these architectures (any valid name, e.g. wrn-22-3).
        #[arg(long = "model", value_name = "NAME")]
        models: Vec<String>,
    },
    /// Join the machines of a data-parallel run (`ews train --nodes M`): serves until
    /// Ctrl-C; start a fresh one for every run.
    Coordinator {
        /// The port the nodes reach it on (their --coordinator HOST:PORT).
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// The paper's analyses of trained runs: subnet accuracy distributions (Fig. 1) and
    /// block vulnerability (Fig. 7).
    #[command(subcommand)]
    Analyze(analyze_args::AnalyzeCommand),
    /// Training curves of runs from their metrics.jsonl (test accuracy, CE, KL, subnet
    /// accuracy, controller reward and entropy, learning rate), several runs overlaid: PNG
    /// and SVG.
    Plot(plot_args::PlotArgs),
    /// One table of runs: clean error, corruption error, mCE, PGD-20 and AutoAttack error
    /// and training time, with the paper's numbers where `--experiment` gives them.
    Report(report_args::ReportArgs),
    /// A figure or table of the paper from its experiment file: trains every run (skipping
    /// finished ones, resuming killed ones), evaluates them, then analyses or reports.
    Experiment(experiment::ExperimentArgs),
    /// Time a training step of one model on this backend (see `cargo xtask bench`).
    Bench(Box<BenchArgs>),
    /// Print which backend this binary was built with and what runs its convolutions.
    Backend,
}

fn main() -> Result<()> {
    let process_start = std::time::Instant::now();
    backend::configure_runtime();
    let cli = Cli::parse();
    backend::set_cudnn_benchmark(cli.cudnn_benchmark);
    let coordinating = matches!(cli.command, Command::Coordinator { .. });
    init_logging(if coordinating { "info" } else { "warn" });
    match cli.command {
        Command::Bench(args) => bench_args::run_bench(&args, process_start),
        Command::Analyze(command) => analyze_args::run_analyze(&command),
        Command::Plot(args) => plot_args::run_plot(&args),
        Command::Report(args) => report_args::run_report(&args),
        Command::Experiment(args) => experiment::run_experiment(&args),
        Command::Train(args) => run_train(&args),
        Command::Eval {
            run,
            weights,
            imagenet_c: Some(dir),
            ..
        } => run_eval_imagenet_c(&run, weights, &dir),
        Command::Eval {
            run,
            weights,
            imagenet_p: Some(dir),
            difficulty,
            alexnet_p,
            perturbations,
            ..
        } => imagenet_p_args::run_eval_imagenet_p(
            &run,
            weights,
            &imagenet_p_args::ImagenetPArgs {
                dir,
                difficulty,
                alexnet: alexnet_p,
                perturbations,
            },
        ),
        Command::Eval {
            run,
            weights,
            cifar_c: None,
            corruptions,
            ..
        } => {
            if !corruptions.is_empty() {
                bail!("--corruption needs --cifar-c DIR");
            }
            run_eval(&run, weights)
        }
        Command::Eval {
            run,
            weights,
            cifar_c: Some(dir),
            corruptions,
            ..
        } => run_eval_cifar_c(&run, weights, &dir, &corruptions),
        Command::Download {
            url: Some(url),
            checksum: Some(checksum),
            out: Some(out),
            ..
        } => {
            ews_data::download::download(&url, &checksum, &out, true)?;
            println!("{} ready (checksum {checksum})", out.display());
            Ok(())
        }
        Command::Download {
            dataset, data_dir, ..
        } => {
            let kind = match dataset
                .context("name a dataset, or give --url, --checksum and --out")?
            {
                DownloadArg::Cifar10 => Cifar::Ten,
                DownloadArg::Cifar100 => Cifar::Hundred,
                DownloadArg::Alexnet => {
                    use ews_models::alexnet::{
                        TORCHVISION_FILE, TORCHVISION_SHA256, TORCHVISION_URL,
                    };
                    let file = data_dir.join(TORCHVISION_FILE);
                    ews_data::download::download(TORCHVISION_URL, TORCHVISION_SHA256, &file, true)?;
                    println!("AlexNet weights ready in {}", file.display());
                    return Ok(());
                }
                DownloadArg::Frost => {
                    let dir = data_dir.join("frost");
                    let base = ews_data::download::FROST_BASE_URL;
                    ews_data::download::fetch_frost(base, &dir, true)?;
                    println!("frost textures ready in {}", dir.display());
                    return Ok(());
                }
            };
            let dir = ews_data::download::fetch_cifar(kind, &data_dir, true)?;
            println!("{} ready in {}", kind.name(), dir.display());
            Ok(())
        }
        Command::Export { run, weights, out } => {
            let (_, model) = load_run(&run, weights)?;
            export_safetensors(&model, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Corrupt(args) => run_corrupt(args),
        Command::Alexnet(args) => alexnet_args::run_alexnet(&args),
        Command::Attack(args) => run_attack(&args),
        Command::Models { classes, models } => list_models(classes, &models),
        Command::Coordinator { port } => coordinator::serve(port),
        Command::Backend => {
            println!("{}", backend::NAME);
            let kernels = ews_models::conv::kernels_of::<backend::Backend>();
            println!("convolutions: {kernels}");
            let norm = ews_models::norm::kernels_of::<backend::Backend>();
            println!("batch norm: {norm}");
            Ok(())
        }
    }
}

/// Log lines of the libraries (burn-collective's connections) on standard error at `level`
/// and above, or as `RUST_LOG` says; installed before burn-communication installs its own
/// (every connection at info level).
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run_train(args: &TrainArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/default"));
    let saved = RunFiles { dir: out.clone() }.config();
    let base = match (&args.config, args.resume && saved.is_file()) {
        (Some(path), _) => TrainConfig::from_toml_file(path)?,
        (None, true) => TrainConfig::from_toml_file(&saved)?,
        (None, false) => TrainConfig::default(),
    };
    let (config, note) = ews_train::trainer::resolve_image_size(&args.apply(base), &out)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let device = backend::device();
    eprintln!(
        "ews train: {} on {} ({} method, {} epochs) with the {} backend -> {}",
        config.model,
        config.dataset,
        match config.method {
            Method::Vanilla => "vanilla",
            Method::Dropout => "dropout",
            Method::Ews => "EWS",
        },
        config.epochs,
        backend::NAME,
        out.display()
    );
    for folder in &config.extra_train_folders {
        eprintln!("  + training images of {}", folder.display());
    }
    let options = TrainOptions {
        resume: args.resume,
        progress: !args.quiet,
        stop_after: args.stop_after,
        node: args.node_link()?,
    };
    let summary = match args.checkpointing {
        true => train::<backend::CheckpointedTrainBackend>(&config, &out, &options, &device)?,
        false => train::<backend::TrainBackend>(&config, &out, &options, &device)?,
    };
    if let Some(node) = options.node.as_ref().filter(|node| node.rank > 0) {
        println!(
            "node {} done: {} epochs, {:.1} images/s on this node; node 0 holds the run's scores and files",
            node.rank, summary.epochs, summary.images_per_s
        );
        return Ok(());
    }
    let speed = if summary.images_per_s > 0.0 {
        format!("{:.1} images/s", summary.images_per_s)
    } else {
        "finished before: nothing left to train".to_string()
    };
    println!(
        "done: {} epochs, final test accuracy {:.2}%, best {:.2}% (epoch {}), {speed}",
        summary.epochs, summary.final_test_acc, summary.best_test_acc, summary.best_epoch,
    );
    Ok(())
}

/// The config and the chosen weights of a run folder.
pub(crate) fn load_run(
    run: &Path,
    weights: WhichWeights,
) -> Result<(TrainConfig, Network<backend::Backend>)> {
    let (config, _, model) = ews_train::trainer::load_run(run, weights.into(), &backend::device())?;
    Ok((config, model))
}

impl From<WhichWeights> for RunWeights {
    fn from(w: WhichWeights) -> Self {
        match w {
            WhichWeights::Best => RunWeights::Best,
            WhichWeights::Last => RunWeights::Last,
        }
    }
}

fn run_attack(args: &AttackArgs) -> Result<()> {
    let (norm, eps, attack) = args.resolve()?;
    let device = backend::device();
    let (config, dataset, model) = ews_train::trainer::load_run::<backend::TrainBackend>(
        &args.run,
        RunWeights::Best,
        &device,
    )?;
    let (_, mut loader) = ews_train::trainer::loader_configs(&config);
    if let Some(b) = args.batch_size {
        if b == 0 {
            bail!("--batch-size must be at least 1");
        }
        loader.batch_size = b;
    }
    let n = args.n.unwrap_or(dataset.test.len()).min(dataset.test.len());
    eprintln!(
        "ews attack: {} ({norm}, eps {eps:.6}) on {n} test images of {} with the {} backend",
        attack.name(),
        config.dataset,
        backend::NAME
    );
    let report = ews_train::adversarial::attack_split(
        &model,
        &dataset.test,
        &loader,
        n,
        attack,
        norm,
        eps,
        args.seed,
        &device,
        |line| eprintln!("  {line}"),
    )?;
    let stem = format!("attack_{}", report.attack);
    let json = args.run.join(format!("{stem}.json"));
    let md = args.run.join(format!("{stem}.md"));
    write_atomically(&json, serde_json::to_string_pretty(&report)?.as_bytes())?;
    let title = format!(
        "{} {} ({})",
        config.model,
        config.dataset,
        args.run.display()
    );
    write_atomically(&md, report.markdown(&title).as_bytes())?;
    println!(
        "clean {:.2}%, robust {:.2}% under {} ({}, {})",
        report.clean_accuracy,
        report.robust_accuracy,
        report.attack,
        json.display(),
        md.display()
    );
    // The sanity checks' warnings again at the end, where they are seen.
    for flag in &report.flags {
        println!("{}", flag.progress_line());
    }
    Ok(())
}

fn run_eval(run: &Path, weights: WhichWeights) -> Result<()> {
    let (config, model) = load_run(run, weights)?;
    let dataset = load_eval_dataset(&config)?;
    let (_, loader) = ews_train::trainer::loader_configs(&config);
    let acc = evaluate(&model, &dataset.test, &loader, &backend::device())?;
    let result = serde_json::json!({
        "dataset": config.dataset,
        "model": config.model,
        "weights": format!("{weights:?}").to_lowercase(),
        "test_images": dataset.test.len(),
        "clean_accuracy": acc,
    });
    let path = run.join("eval.json");
    write_atomically(&path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    println!(
        "clean accuracy {acc:.2}% on {} test images ({})",
        dataset.test.len(),
        path.display()
    );
    Ok(())
}

fn run_eval_imagenet_c(run: &Path, weights: WhichWeights, dir: &Path) -> Result<()> {
    let (config, model) = load_run(run, weights)?;
    let (_, loader) = ews_train::trainer::loader_configs(&config);
    // The relative mCE needs the clean error on the run's own test split.
    let clean_error = match load_eval_dataset(&config) {
        Ok(dataset) => {
            eprintln!("evaluating the clean test split");
            Some(100.0 - evaluate(&model, &dataset.test, &loader, &backend::device())?)
        }
        Err(e) => {
            eprintln!("note: no clean error ({e}); the relative mCE is left out");
            None
        }
    };
    let report = ews_train::imagenet_c::evaluate_imagenet_c(
        &model,
        dir,
        &loader,
        &backend::device(),
        clean_error,
        |name, severity| eprintln!("evaluating {name} severity {severity}"),
    )?;
    figures::write_outputs(run, "imagenet_c", &report, &report.markdown())
}

fn run_eval_cifar_c(
    run: &Path,
    weights: WhichWeights,
    dir: &Path,
    corruptions: &[String],
) -> Result<()> {
    let (config, model) = load_run(run, weights)?;
    let (_, loader) = ews_train::trainer::loader_configs(&config);
    let report = ews_train::cifar_c::evaluate_cifar_c(
        &model,
        dir,
        &loader,
        corruptions,
        &backend::device(),
        |name| eprintln!("evaluating {name}"),
    )?;
    figures::write_outputs(run, "cifar_c", &report, &report.markdown())
}

/// `ews corrupt` flags.
#[derive(clap::Args, Debug)]
struct CorruptArgs {
    /// CIFAR binary folder holding test_batch.bin (CIFAR-10) or test.bin (CIFAR-100).
    #[arg(long, conflicts_with = "folder")]
    cifar_dir: Option<PathBuf>,
    /// A folder of CIFAR-sized images (`<class>/<image>`, labels by sorted class name, e.g.
    /// the JPEG copy's `test/`) to corrupt into the CIFAR-C layout as --cifar-dir does.
    #[arg(long, conflicts_with_all = ["cifar_dir", "folder"])]
    cifar_folder: Option<PathBuf>,
    /// An image folder (`<class>/<image>`, e.g. ImageNet val) to corrupt into the
    /// ImageNet-C layout `OUT/<corruption>/<severity>/<class>/<image>` (Resize 256,
    /// CenterCrop 224, JPEG quality 85); existing files are kept (resume).
    #[arg(long)]
    folder: Option<PathBuf>,
    /// Output folder: <corruption>.npy, labels.npy, meta.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Corruptions to generate (default: every implemented one).
    #[arg(long = "corruption")]
    corruptions: Vec<String>,
    /// Severities (default: 1 to 5).
    #[arg(long = "severity")]
    severities: Vec<u8>,
    /// Seed of the random corruptions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only a seeded random subset of N test images.
    #[arg(long)]
    limit: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Write a PNG sheet (a row per corruption: clean, then severities 1-5) of one image
    /// (`--preview-image`, else a `--cifar-dir` test image, else a built-in generated one)
    /// instead.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Which test image the preview shows.
    #[arg(long, default_value_t = 0)]
    preview_index: usize,
    /// An image file (PNG or JPEG) the preview shows instead of a test image.
    #[arg(long, requires = "preview")]
    preview_image: Option<PathBuf>,
    /// With --folder: write ImageNet-P sequences instead, `OUT/<perturbation>/<class>/
    /// <image>.npy` (uint8 frames x 224 x 224 x 3, lossless; Resize 256, CenterCrop 224),
    /// for `ews eval --imagenet-p OUT`; existing files are kept (resume).
    #[arg(
        long,
        requires = "folder",
        conflicts_with_all = ["out", "preview", "corruptions", "severities", "frost_dir"]
    )]
    imagenet_p: Option<PathBuf>,
    /// ImageNet-P: perturbations to generate (default: the ten test perturbations).
    #[arg(long = "perturbation", requires = "imagenet_p")]
    perturbations: Vec<String>,
    /// ImageNet-P: 1, or 2 and 3 for the harder noise sequences (NAME_2, NAME_3 folders).
    #[arg(long, default_value_t = 1, requires = "imagenet_p")]
    difficulty: u8,
    /// Folder with the reference frost textures (frost1.png ... frost6.jpg of
    /// hendrycks/robustness; default: datasets/frost when `ews download frost` put them
    /// there); without them frost uses a procedural stand-in whose results are not
    /// comparable to published numbers.
    #[arg(long)]
    frost_dir: Option<PathBuf>,
}

/// `ews corrupt --folder SRC --imagenet-p OUT`: the ImageNet-P sequences of every image.
fn run_imagenet_p_generation(src: &Path, out: &Path, args: &CorruptArgs) -> Result<()> {
    use ews_augment::perturb::Perturbation;
    let perturbations = parse_names(
        &args.perturbations,
        &Perturbation::ALL,
        Perturbation::name,
        "perturbation",
        "ImageNet-P",
    )?;
    if args.difficulty > 1
        && let Some(p) = perturbations.iter().find(|p| !p.has_difficulties())
    {
        bail!(
            "--difficulty {}: only the noise sequences have harder versions, not {} (pass --perturbation gaussian_noise --perturbation shot_noise)",
            args.difficulty,
            p.name()
        );
    }
    let workers = worker_count(args);
    let bar = figures::progress_bar("ImageNet-P sequences");
    let started = std::time::Instant::now();
    let (written, total) = ews_data::imagenet_p::generate(
        src,
        out,
        &ews_data::imagenet_p::Job {
            perturbations: &perturbations,
            difficulty: args.difficulty,
            seed: args.seed,
            limit: args.limit,
            workers,
        },
        &figures::advance(&bar),
    )?;
    bar.finish_and_clear();
    println!(
        "wrote {written} of {total} sequences ({} kept from before) to {} in {:.1} s ({workers} workers)",
        total - written,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The items of `all` named by `names` (all of them when none is named); an unknown name is
/// an error listing the known ones.
fn parse_names<T: Copy>(
    names: &[String],
    all: &[T],
    name_of: fn(T) -> &'static str,
    what: &str,
    known_as: &str,
) -> Result<Vec<T>> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .copied()
                .find(|&item| name_of(item) == n)
                .with_context(|| {
                    let known: Vec<&str> = all.iter().map(|&item| name_of(item)).collect();
                    format!("unknown {what} `{n}` ({known_as}: {})", known.join(", "))
                })
        })
        .collect()
}

/// `--workers`, or every core.
fn worker_count(args: &CorruptArgs) -> usize {
    args.workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn run_corrupt(args: CorruptArgs) -> Result<()> {
    if let (Some(out), Some(src)) = (&args.imagenet_p, &args.folder) {
        return run_imagenet_p_generation(src, out, &args);
    }
    use ews_augment::corrupt::{Corruption, Table};
    let corruptions = parse_names(
        &args.corruptions,
        &Corruption::ALL,
        Corruption::name,
        "corruption",
        "implemented",
    )?;
    let split = match (&args.cifar_dir, &args.cifar_folder) {
        (Some(dir), _) => Some(ews_data::cifar::load_test(dir)?.1),
        (None, Some(dir)) => {
            let classes = ews_data::folder::class_folders(dir)?;
            Some(ews_data::folder::read_split(dir, &classes)?)
        }
        (None, None) => None,
    };
    if let Some(path) = &args.preview {
        let image = match (&args.preview_image, &split) {
            (Some(file), _) => ews_data::folder::decode(file)?,
            (None, Some(split)) => {
                split.image(args.preview_index.min(split.len().saturating_sub(1)))?
            }
            (None, None) => ews_data::synthetic::generate(ews_data::synthetic::SyntheticConfig {
                train: 2,
                test: 10,
                seed: 0,
            })
            .test
            .image(args.preview_index.min(9))?,
        };
        let table = Table::for_size(image.height, image.width);
        let frost = frost_textures(
            args.frost_dir.as_deref(),
            corruptions.contains(&Corruption::Frost),
            table,
        )?;
        let figure =
            figures::corruption_sheet(&image, &corruptions, table, args.seed, frost.as_ref());
        let rendered = ews_plot::render(&figure).context("drawing the preview sheet")?;
        write_atomically(path, &rendered.png)?;
        println!(
            "wrote {} ({} corruptions x clean + severities 1-5)",
            path.display(),
            corruptions.len()
        );
        return Ok(());
    }
    let Some(out) = args.out.clone() else {
        bail!("--out DIR is needed");
    };
    if let Some(src) = &args.folder {
        return run_corrupt_folder(src, &out, &corruptions, &args);
    }
    let Some(mut split) = split else {
        bail!(
            "--cifar-dir DIR, --cifar-folder DIR or --folder DIR is needed (or --preview OUT.png)"
        );
    };
    if let Some(n) = args.limit {
        split = split.subset(n, args.seed);
    }
    let first = split.image(0)?;
    let table = Table::for_size(first.height, first.width);
    let (severities, workers, frost) = corrupt_settings(&args, &corruptions, table)?;
    let total = corruptions.len() * severities.len() * split.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} images {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let meta = ews_data::cifar_c::generate(
        &split,
        &out,
        &ews_data::cifar_c::Job {
            corruptions: &corruptions,
            severities: &severities,
            seed: args.seed,
            workers,
            frost: frost.as_ref(),
        },
        &|done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "wrote {} corruptions x {} severities x {} images to {} in {:.1} s ({} workers)",
        meta.corruptions.len(),
        meta.severities.len(),
        meta.images,
        out.display(),
        started.elapsed().as_secs_f64(),
        workers
    );
    Ok(())
}

/// Severities (default 1-5), worker threads (default: all cores) and frost textures
/// (`--frost-dir`, else the procedural stand-in, with a note) of `ews corrupt`.
fn corrupt_settings(
    args: &CorruptArgs,
    corruptions: &[ews_augment::corrupt::Corruption],
    table: ews_augment::corrupt::Table,
) -> Result<(Vec<u8>, usize, Option<ews_augment::corrupt::FrostTextures>)> {
    let severities = if args.severities.is_empty() {
        vec![1, 2, 3, 4, 5]
    } else {
        args.severities.clone()
    };
    let workers = worker_count(args);
    let uses_frost = corruptions.contains(&ews_augment::corrupt::Corruption::Frost);
    let frost = frost_textures(args.frost_dir.as_deref(), uses_frost, table)?;
    Ok((severities, workers, frost))
}

/// The frost textures from `dir`, else from datasets/frost where `ews download frost` put
/// them, else `None` (the procedural stand-in, with a note where frost is `used`).
fn frost_textures(
    dir: Option<&Path>,
    used: bool,
    table: ews_augment::corrupt::Table,
) -> Result<Option<ews_augment::corrupt::FrostTextures>> {
    let downloaded = Path::new("datasets/frost");
    let frost_dir = dir.or_else(|| {
        let found = downloaded.join("frost1.png").is_file();
        found.then(|| {
            eprintln!("frost: the reference textures in {}", downloaded.display());
            downloaded
        })
    });
    match frost_dir {
        Some(dir) => Ok(Some(ews_data::cifar_c::load_frost(dir, table)?)),
        None => {
            if used {
                eprintln!(
                    "note: frost uses a procedural stand-in texture (`ews download frost` fetches \
                     the reference ones into datasets/frost, or pass --frost-dir); its results are \
                     not comparable to published numbers"
                );
            }
            Ok(None)
        }
    }
}

/// The frost textures an analysis needs (only where an input is frost), for images of
/// `image_size` pixels.
pub(crate) fn frost_for_analysis(
    inputs: &[ews_train::analysis::AnalysisInput],
    image_size: usize,
) -> Result<Option<ews_augment::corrupt::FrostTextures>> {
    use ews_train::analysis::AnalysisInput;
    let used = inputs
        .iter()
        .any(|i| matches!(i, AnalysisInput::Corruption { name, .. } if name == "frost"));
    if !used {
        return Ok(None);
    }
    let table = ews_augment::corrupt::Table::for_size(image_size, image_size);
    frost_textures(None, true, table)
}

fn run_corrupt_folder(
    src: &Path,
    out: &Path,
    corruptions: &[ews_augment::corrupt::Corruption],
    args: &CorruptArgs,
) -> Result<()> {
    let (severities, workers, frost) =
        corrupt_settings(args, corruptions, ews_augment::corrupt::Table::Imagenet)?;
    let bar = indicatif::ProgressBar::new_spinner();
    let started = std::time::Instant::now();
    let written = ews_data::cifar_c::generate_folder(
        src,
        out,
        &ews_data::cifar_c::Job {
            corruptions,
            severities: &severities,
            seed: args.seed,
            workers,
            frost: frost.as_ref(),
        },
        &|done| bar.set_message(format!("{done} images")),
    )?;
    bar.finish_and_clear();
    println!(
        "wrote {written} images to {} in {:.1} s ({workers} workers; existing files kept)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn list_models(classes: usize, names: &[String]) -> Result<()> {
    if classes == 0 {
        bail!("--classes must be at least 1");
    }
    let archs: Vec<Architecture> = if names.is_empty() {
        Architecture::standard()
    } else {
        names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?
    };
    let device = backend::device();
    for arch in archs {
        let model = NetworkConfig::new(arch)
            .with_num_classes(classes)
            .init::<backend::Backend>(&device)?;
        println!("{arch} {}", num_params(&model));
    }
    Ok(())
}
