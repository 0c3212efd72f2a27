//! `ews analyze subnets|blocks`: the paper's Fig. 1 and Fig. 7 for any set of runs, as
//! JSON, a markdown summary and a figure (PNG + SVG).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use ews_models::{Network, Subnet, SubnetWidth, WidthRounding};
use ews_train::TrainConfig;
use ews_train::analysis::{
    self, AnalysisInput, BlockReport, SubnetBn, SubnetReport, block_vulnerability, prepare_inputs,
    subnet_distributions,
};
use ews_train::trainer::{RunWeights, load_controller, load_run, loader_configs};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backend::{self, TrainBackend};
use crate::figures::{progress_bar, write_figure, write_outputs};

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

impl RunsArgs {
    fn check(&self) -> Result<()> {
        if !self.labels.is_empty() && self.labels.len() != self.runs.len() {
            bail!(
                "--label: {} names for {} runs (give one per --run, or none)",
                self.labels.len(),
                self.runs.len()
            );
        }
        if self.images == 0 || self.batch_size == Some(0) {
            bail!("--images and --batch-size must be at least 1");
        }
        Ok(())
    }

    fn load(&self, i: usize) -> Result<LoadedRun> {
        let dir = &self.runs[i];
        let weights = RunWeights::from(self.weights);
        let (config, dataset, model) = load_run::<TrainBackend>(dir, weights, &backend::device())
            .with_context(|| format!("loading run {}", dir.display()))?;
        let (_, mut loader) = loader_configs(&config);
        loader.batch_size = self.batch_size.unwrap_or(loader.batch_size);
        Ok(LoadedRun {
            label: self.labels.get(i).cloned().unwrap_or_else(|| run_name(dir)),
            dir: dir.clone(),
            test: dataset.test.subset(self.images, self.seed),
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
pub fn run_name(dir: &Path) -> String {
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
    args.runs.check()?;
    ews_models::subnet::validate_rho(args.rho)?;
    if args.count == 0 || args.inputs.is_empty() {
        bail!("--count and --inputs must not be empty");
    }
    let mut reports = Vec::new();
    for i in 0..args.runs.runs.len() {
        reports.push(subnets_of_run(args, &args.runs.load(i)?)?);
    }
    let out = &args.runs.out;
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
    let width = SubnetWidth::with_rounding(args.rho, config.subnet_rounding);
    let mut rng = StdRng::seed_from_u64(args.runs.seed);
    let subnets: Vec<Subnet> = (0..args.count)
        .map(|_| space.random(width, &mut rng))
        .collect();
    let controller = load_controller::<TrainBackend>(&run.dir, config, space.clone(), &device)
        .with_context(|| format!("loading the controller of {}", run.dir.display()))?;
    let found: Vec<Subnet> = match &controller {
        Some(c) => {
            let mut rng = StdRng::seed_from_u64(args.runs.seed.wrapping_add(1));
            (0..args.controller_samples)
                .map(|_| c.sample(&mut rng).subnet)
                .collect()
        }
        None => Vec::new(),
    };
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
        &mut |d, t| {
            bar.set_length(t as u64);
            bar.set_position(d as u64);
        },
    )?;
    bar.finish_and_clear();
    Ok(SubnetReport {
        run: run.label.clone(),
        run_dir: run.dir.display().to_string(),
        model: config.model.clone(),
        dataset: config.dataset.clone(),
        method: analysis::method_label(config),
        rho: args.rho,
        rounding: config.subnet_rounding.to_string(),
        images: run.test.len(),
        bn: args.runs.bn,
        seed: args.runs.seed,
        controller_samples: found.len(),
        inputs,
    })
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
    args.runs.check()?;
    ews_models::subnet::validate_rho(args.keep)?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let mut reports: Vec<BlockReport> = Vec::new();
    for i in 0..args.runs.runs.len() {
        let report = blocks_of_run(args, &args.runs.load(i)?)?;
        if let Some(first) = reports.first() {
            let names =
                |r: &BlockReport| r.blocks.iter().map(|b| b.block.clone()).collect::<Vec<_>>();
            if names(first) != names(&report) {
                bail!(
                    "runs {} ({}) and {} ({}) have different blocks: compare runs of one architecture",
                    first.run,
                    first.model,
                    report.run,
                    report.model
                );
            }
        }
        reports.push(report);
    }
    let out = &args.runs.out;
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
        &mut |d, t| {
            bar.set_length(t as u64);
            bar.set_position(d as u64);
        },
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
