//! `ews bench`: time one training step of one model on this binary's backend.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use ews_models::{Precision, SubnetExecution};
use ews_train::bench::{BenchConfig, StepKind};

use crate::backend;

/// Time a training step (plain, EWS or PGD-k adversarial training) on random inputs held on
/// the device; prints one JSON line (images/s, time to first step, peak memory).
/// `cargo xtask bench` runs it per model and step next to PyTorch.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Architecture (e.g. preact-resnet18, wrn-28-10, resnet50).
    #[arg(long, default_value = "preact-resnet18")]
    pub model: String,
    /// `plain`, `ews` or `pgd<k>` (e.g. pgd10).
    #[arg(long, default_value = "plain")]
    pub step: StepKind,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    /// Untimed steps after the first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Subnet width of the EWS step.
    #[arg(long, default_value_t = 0.7)]
    pub rho: f64,
    /// How the EWS subnet pass drops channels: sliced or masked.
    #[arg(long, default_value = "sliced")]
    pub subnet_pass: SubnetExecution,
    /// Convolution number format: f32, or bf16 (mixed precision, parameters in f32).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Seed of weights, inputs and subnet.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Read memory after every timed step and report its growth (synchronises each step).
    #[arg(long)]
    pub memory_trace: bool,
    /// Write the EWS subnet (JSON) here, for the PyTorch side.
    #[arg(long)]
    pub subnet_out: Option<PathBuf>,
    /// Write the initial weights (PyTorch names) and full/subnet logits here, for
    /// `step_pytorch.py --check DIR`.
    #[arg(long)]
    pub check_out: Option<PathBuf>,
    /// Also write the report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Gradient checkpointing, as `ews train --checkpointing`.
    #[arg(long)]
    pub checkpointing: bool,
}

pub fn run_bench(args: &BenchArgs, process_start: Instant) -> Result<()> {
    let config = BenchConfig {
        model: args.model.clone(),
        step: args.step,
        batch: args.batch,
        image_size: args.image_size,
        classes: args.classes,
        warmup: args.warmup,
        steps: args.steps,
        rho: args.rho,
        subnet_pass: args.subnet_pass,
        precision: args.precision,
        seed: args.seed,
        memory_trace: args.memory_trace,
        subnet_out: args.subnet_out.clone(),
        check_out: args.check_out.clone(),
    };
    let device = backend::device();
    let probe = backend::memory_probe();
    let kernels = ews_models::conv::kernels_of::<backend::Backend>();
    let mut name = format!("{}, convolutions: {kernels}", backend::NAME);
    let report = if args.checkpointing {
        name.push_str(", gradient checkpointing");
        let run = ews_train::bench::run::<backend::CheckpointedTrainBackend>;
        run(&config, &name, &device, probe.as_ref(), process_start)?
    } else {
        let run = ews_train::bench::run::<backend::TrainBackend>;
        run(&config, &name, &device, probe.as_ref(), process_start)?
    };
    let line = serde_json::to_string(&report)?;
    if let Some(path) = &args.out {
        ews_models::persist::write_atomically(path, line.as_bytes())?;
    }
    println!("{line}");
    Ok(())
}
