//! `ews analyze subnets|blocks`: the paper's Fig. 1 and Fig. 7 for any set of runs, as
//! JSON, a markdown summary and a figure (PNG + SVG).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use ews_models::{Network, Subnet, SubnetWidth, WidthRounding};
use ews_train::RunFiles;
use ews_train::TrainConfig;
use ews_train::analysis::{
    self, AnalysisInput, BlockReport, SubnetBn, SubnetReport, block_vulnerability, prepare_inputs,
    subnet_distributions,
};
use ews_train::trainer::{RunWeights, load_controller, load_run, loader_configs};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backend::{self, TrainBackend};
use crate::figures::{advance, progress_bar, write_figure, write_json, write_outputs};

/// Which analysis.
#[derive(clap::Subcommand, Debug)]
pub enum AnalyzeCommand {
    /// Fig. 1: accuracy of random subnets on clean, corrupted and PGD inputs, one histogram
    /// per input with one series per run; the weakest subnet an EWS run's controller finds
    /// is marked. Writes OUT/subnets.{json,md,png,svg}.
    Subnets(SubnetArgs),
    /// Fig. 7: per residual block, the test error of random subnets that keep `--keep` of
    /// that block alone; one bar per block and run with the spread. Writes
    /// OUT/blocks.{json,md,png,svg}.
    Blocks(BlockArgs),
}

/// Flags of both analyses.
#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// Run folders, one series each (`--run A B C` or `--run A --run B`).
    #[arg(long = "run", required_unless_present = "redraw", num_args = 1..)]
    runs: Vec<PathBuf>,
    /// Only redraw the figure from the JSON an earlier call wrote into `--out` (e.g. with
    /// other `--bins`), evaluating nothing.
    #[arg(long)]
    redraw: bool,
    /// Names of the runs in legends and tables, in `--run` order (default: folder names).
    #[arg(long = "label", num_args = 1..)]
    labels: Vec<String>,
    /// Which weights of every run.
    #[arg(long, value_enum, default_value = "best")]
    weights: crate::WhichWeights,
    /// Test images (a seeded random subset of the test split).
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Images per batch (default: the run's eval batch size); with `--bn batch` it sets how
    /// many images share batch statistics.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Batch-norm statistics of subnet passes: `batch` (each test batch's, as the release's
    /// controller measures subnets during training) or `running` (the full network's).
    #[arg(long, default_value = "batch")]
    bn: SubnetBn,
    /// Seed of the image subset, the subnets, the corruptions and the PGD starts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
}

/// `ews analyze subnets` flags.
#[derive(clap::Args, Debug)]
pub struct SubnetArgs {
    #[command(flatten)]
    runs: RunsArgs,
    /// Subnet width: the fraction of every block's paths and channels kept.
    #[arg(long, default_value_t = 0.7)]
    rho: f64,
    /// Random subnets per run (the same subnets for every run of one architecture).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Inputs, comma-separated: `clean`, `CORRUPTION:SEVERITY`, `pgd:EPS[:STEPS]`.
    #[arg(
        long,
        default_value = "clean,gaussian_noise:3,pgd:2/255",
        value_delimiter = ','
    )]
    inputs: Vec<AnalysisInput>,
    /// Subnets sampled from an EWS run's trained controller; the weakest is marked.
    #[arg(long, default_value_t = 100)]
    controller_samples: usize,
    /// Histogram bins.
    #[arg(long, default_value_t = 30)]
    bins: usize,
    /// How `rho * n` rounds to kept paths and channels, for every run alike: `release`
    /// (`ceil(n * (rho + 1e-6))`, the controller's default) or `exact` (`ceil(rho * n)`).
    #[arg(long, default_value = "release")]
    rounding: WidthRounding,
}

/// `ews analyze blocks` flags.
#[derive(clap::Args, Debug)]
pub struct BlockArgs {
    #[command(flatten)]
    runs: RunsArgs,
    /// Fraction of the one block's paths and channels that a subnet keeps.
    #[arg(long, default_value_t = 0.5)]
    keep: f64,
    /// Subnets per block.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// How `keep * n` rounds: `exact` (`ceil(keep * n)`: half of a block's two paths, the
    /// paper's "50% of paths/channels") or `release` (`ceil(n * (keep + 1e-6))`, which keeps
    /// both paths at 0.5).
    #[arg(long, default_value = "exact")]
    rounding: WidthRounding,
}

/// Runs an analysis.
pub fn run_analyze(command: &AnalyzeCommand) -> Result<()> {
    match command {
        AnalyzeCommand::Subnets(args) => analyze_subnets(args),
        AnalyzeCommand::Blocks(args) => analyze_blocks(args),
    }
}

/// A loaded run: its name, config, network and the test batches' split.
struct LoadedRun {
    label: String,
    dir: PathBuf,
    config: TrainConfig,
    model: Network<TrainBackend>,
    test: ews_data::Split,
    loader: ews_data::LoaderConfig,
}

/// The labels of runs: `labels` where given (one per run), else the folder names.
pub fn run_labels(runs: &[PathBuf], labels: &[String]) -> Result<Vec<String>> {
    if labels.is_empty() {
        return Ok(runs.iter().map(|dir| run_name(dir)).collect());
    }
    if labels.len() != runs.len() {
        bail!(
            "--label: {} names for {} runs (give one per --run, or none)",
            labels.len(),
            runs.len()
        );
    }
    Ok(labels.to_vec())
}

/// Batches of about `batch` images that split `n` evenly, so that no batch is much smaller
/// than the others (with batch statistics a tiny last batch would measure noise).
fn balanced_batch(n: usize, batch: usize) -> usize {
    n.div_ceil(n.div_ceil(batch.max(1)).max(1)).max(1)
}

impl RunsArgs {
    /// Loads every run before anything is evaluated, so that a bad folder fails at once.
    fn load_all(&self) -> Result<Vec<LoadedRun>> {
        if self.images == 0 || self.batch_size == Some(0) {
            bail!("--images and --batch-size must be at least 1");
        }
        let labels = run_labels(&self.runs, &self.labels)?;
        self.runs
            .iter()
            .zip(labels)
            .map(|(dir, label)| self.load(dir, label))
            .collect()
    }

    fn load(&self, dir: &Path, label: String) -> Result<LoadedRun> {
        let weights = RunWeights::from(self.weights);
        let (config, dataset, model) = load_run::<TrainBackend>(dir, weights, &backend::device())
            .with_context(|| format!("loading run {}", dir.display()))?;
        let test = dataset.test.subset(self.images, self.seed);
        if test.is_empty() {
            bail!("run {}: its test split is empty", dir.display());
        }
        let (_, mut loader) = loader_configs(&config);
        let batch = self.batch_size.unwrap_or(loader.batch_size);
        loader.batch_size = balanced_batch(test.len(), batch);
        Ok(LoadedRun {
            label,
            dir: dir.to_path_buf(),
            test,
            config,
            model,
            loader,
        })
    }
}

/// The reports an earlier analysis wrote to OUT/STEM.json.
fn read_reports<T: serde::de::DeserializeOwned>(out: &Path, stem: &str) -> Result<Vec<T>> {
    let path = out.join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--redraw reads {}: run the analysis first", path.display()))?;
    let reports: Vec<T> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not an analysis report", path.display()))?;
    if reports.is_empty() {
        bail!("{}: no runs to draw", path.display());
    }
    Ok(reports)
}

/// The last component of a run folder, as its default label.
fn run_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn analyze_subnets(args: &SubnetArgs) -> Result<()> {
    if args.runs.redraw {
        let reports: Vec<SubnetReport> = read_reports(&args.runs.out, "subnets")?;
        let figure = crate::figures::subnet_histograms(&reports, args.bins);
        return write_figure(&args.runs.out, "subnets", &figure);
    }
    ews_models::subnet::validate_rho(args.rho)?;
    if args.count == 0 || args.inputs.is_empty() || args.bins == 0 {
        bail!("--count, --inputs and --bins must not be empty");
    }
    let runs = args.runs.load_all()?;
    let out = &args.runs.out;
    let mut reports = Vec::new();
    for run in &runs {
        reports.push(subnets_of_run(args, run)?);
        // The runs finished so far, in case a later one fails.
        write_json(out, "subnets", &reports)?;
    }
    let md = analysis::subnets::markdown(&reports);
    write_outputs(out, "subnets", &reports, &md)?;
    let figure = crate::figures::subnet_histograms(&reports, args.bins);
    write_figure(out, "subnets", &figure)?;
    Ok(())
}

fn subnets_of_run(args: &SubnetArgs, run: &LoadedRun) -> Result<SubnetReport> {
    let device = backend::device();
    let config = &run.config;
    let space = run.model.subnet_space();
    let width = SubnetWidth::with_rounding(args.rho, args.rounding);
    let mut rng = StdRng::seed_from_u64(args.runs.seed);
    let subnets: Vec<Subnet> = (0..args.count)
        .map(|_| space.random(width, &mut rng))
        .collect();
    let found = controller_subnets(args, run)?;
    eprintln!(
        "{}: preparing {} test images for {} inputs",
        run.label,
        run.test.len(),
        args.inputs.len()
    );
    let frost = crate::frost_for_analysis(&args.inputs, run.loader.image_size)?;
    let batches = prepare_inputs(
        &run.model,
        &run.test,
        &run.loader,
        &args.inputs,
        args.runs.seed,
        frost.as_ref(),
        &device,
    )?;
    let bar = progress_bar(&format!("{} subnets", run.label));
    let inner = run.model.valid();
    let inputs = subnet_distributions(
        &inner,
        &batches,
        &subnets,
        &found,
        args.runs.bn,
        &mut advance(&bar),
    )?;
    bar.finish_and_clear();
    Ok(SubnetReport {
        run: run.label.clone(),
        run_dir: run.dir.display().to_string(),
        model: config.model.clone(),
        dataset: config.dataset.clone(),
        method: analysis::method_label(config),
        rho: args.rho,
        rounding: args.rounding.to_string(),
        images: run.test.len(),
        bn: args.runs.bn,
        seed: args.runs.seed,
        controller_samples: found.len(),
        inputs,
    })
}

/// The subnets an EWS run's trained controller proposes, where it has one that draws at
/// the analysis' width (a warning says why the marker is left out otherwise).
fn controller_subnets(args: &SubnetArgs, run: &LoadedRun) -> Result<Vec<Subnet>> {
    let config = &run.config;
    let space = run.model.subnet_space();
    let device = backend::device();
    if args.controller_samples == 0 || !matches!(config.method, ews_train::Method::Ews) {
        return Ok(Vec::new());
    }
    if config.rho != args.rho || config.subnet_rounding != args.rounding {
        eprintln!(
            "warning: {} trained its controller at rho {} ({} rounding), not rho {} ({}): its weakest subnet is not marked",
            run.label, config.rho, config.subnet_rounding, args.rho, args.rounding
        );
        return Ok(Vec::new());
    }
    let files = RunFiles {
        dir: run.dir.clone(),
    };
    if !files.checkpoint().is_file() {
        eprintln!(
            "warning: {} has no checkpoint.ews, so no trained controller: its weakest subnet is not marked",
            run.label
        );
        return Ok(Vec::new());
    }
    let controller = load_controller::<TrainBackend>(&run.dir, config, space, &device)
        .with_context(|| format!("loading the controller of {}", run.dir.display()))?;
    let mut rng = StdRng::seed_from_u64(args.runs.seed.wrapping_add(1));
    Ok(controller.map_or_else(Vec::new, |c| {
        (0..args.controller_samples)
            .map(|_| c.sample(&mut rng).subnet)
            .collect()
    }))
}

fn analyze_blocks(args: &BlockArgs) -> Result<()> {
    if args.runs.redraw {
        let reports: Vec<BlockReport> = read_reports(&args.runs.out, "blocks")?;
        return write_figure(
            &args.runs.out,
            "blocks",
            &crate::figures::block_bars(&reports),
        );
    }
    ews_models::subnet::validate_rho(args.keep)?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let runs = args.runs.load_all()?;
    let names = |run: &LoadedRun| {
        let space = run.model.subnet_space();
        space.blocks.into_iter().map(|b| b.name).collect::<Vec<_>>()
    };
    if let Some(other) = runs.iter().find(|r| names(r) != names(&runs[0])) {
        bail!(
            "runs {} ({}) and {} ({}) have different blocks: compare runs of one architecture",
            runs[0].label,
            runs[0].config.model,
            other.label,
            other.config.model
        );
    }
    let out = &args.runs.out;
    let mut reports: Vec<BlockReport> = Vec::new();
    for run in &runs {
        reports.push(blocks_of_run(args, run)?);
        write_json(out, "blocks", &reports)?;
    }
    write_outputs(
        out,
        "blocks",
        &reports,
        &analysis::blocks::markdown(&reports),
    )?;
    write_figure(out, "blocks", &crate::figures::block_bars(&reports))?;
    Ok(())
}

fn blocks_of_run(args: &BlockArgs, run: &LoadedRun) -> Result<BlockReport> {
    let device = backend::device();
    let batches = prepare_inputs(
        &run.model,
        &run.test,
        &run.loader,
        &[AnalysisInput::Clean],
        args.runs.seed,
        None,
        &device,
    )?
    .remove(0)
    .batches;
    let inner = run.model.valid();
    let bn = args.runs.bn;
    let width = SubnetWidth::with_rounding(args.keep, args.rounding);
    let bar = progress_bar(&format!("{} blocks", run.label));
    let blocks = block_vulnerability(
        &inner,
        &batches,
        width,
        args.count,
        args.runs.seed,
        bn,
        &mut advance(&bar),
    )?;
    bar.finish_and_clear();
    Ok(BlockReport {
        run: run.label.clone(),
        run_dir: run.dir.display().to_string(),
        model: run.config.model.clone(),
        dataset: run.config.dataset.clone(),
        method: analysis::method_label(&run.config),
        keep: args.keep,
        rounding: args.rounding.to_string(),
        images: run.test.len(),
        bn,
        seed: args.runs.seed,
        full_error: 100.0 - analysis::accuracy_on(&inner, &batches, None, bn),
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::balanced_batch;

    #[test]
    fn batches_split_the_images_evenly() {
        assert_eq!(balanced_batch(500, 256), 250);
        assert_eq!(balanced_batch(257, 256), 129);
        assert_eq!(balanced_batch(1000, 256), 250);
        assert_eq!(balanced_batch(16, 256), 16);
        assert_eq!(balanced_batch(512, 256), 256);
    }
}
