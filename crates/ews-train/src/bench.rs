//! Training-step benchmark behind `ews bench` and `cargo xtask bench`.
//!
//! One run times one kind of step for one model on random inputs held on the device (the
//! loader is not part of it): the first step (from process start, so start-up, kernel
//! compilation and autotuning count), warm-up steps, then `steps` timed steps with a single
//! device synchronisation at the end. `crates/ews-train/benches/step_pytorch.py` runs the
//! same models and steps in PyTorch from the subnet this module writes.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use ews_attack::EvalNetwork;
use ews_attack::pgd::Pgd;
use ews_models::persist::num_params;
use ews_models::{
    BnMode, Network, NetworkConfig, Normalization, Precision, Subnet, SubnetExecution,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::TrainConfig;
use crate::loss::{KlReduction, cross_entropy, kl_to_teacher};
use crate::trainer::{io_err, sgd};

/// The step being timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Training-mode forward, cross-entropy, backward, SGD.
    Plain,
    /// The EWS step: full forward (training mode) and subnet forward (batch statistics),
    /// CE + KL(full || subnet), backward, SGD.
    Ews,
    /// PGD adversarial training: PGD-`n` (L-inf 8/255, step 2/255, uniform start) against
    /// the model with batch norm in evaluation mode, then a plain step on x'.
    Pgd(usize),
}

impl std::str::FromStr for StepKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(Self::Plain),
            "ews" => Ok(Self::Ews),
            _ => s
                .strip_prefix("pgd")
                .and_then(|n| n.parse().ok())
                .filter(|&n: &usize| n > 0)
                .map(Self::Pgd)
                .ok_or_else(|| format!("step `{s}`: expected plain, ews or pgdN (e.g. pgd10)")),
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain => f.write_str("plain"),
            Self::Ews => f.write_str("ews"),
            Self::Pgd(n) => write!(f, "pgd{n}"),
        }
    }
}

/// What one benchmark run measures.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Architecture name (`preact-resnet18`, `wrn-28-10`, `resnet50`, ...).
    pub model: String,
    /// The step.
    pub step: StepKind,
    /// Batch size.
    pub batch: usize,
    /// Side of the square inputs.
    pub image_size: usize,
    /// Number of classes.
    pub classes: usize,
    /// Untimed steps after the first.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Subnet width of the EWS step.
    pub rho: f64,
    /// How the EWS subnet pass drops channels.
    pub subnet_pass: SubnetExecution,
    /// Number format of the convolutions.
    pub precision: Precision,
    /// Seed of the weights, inputs and subnet.
    pub seed: u64,
    /// Synchronise and read memory after every timed step (for the flat-memory check);
    /// the timing then includes one synchronisation per step.
    pub memory_trace: bool,
    /// Write the EWS subnet here (JSON), for the PyTorch side.
    pub subnet_out: Option<PathBuf>,
    /// Write the initial weights (`weights.safetensors`, PyTorch names) and the logits of
    /// the full network and of the subnet on the first inputs (`check.json`) here, so the
    /// PyTorch side can prove it computes the same function (`step_pytorch.py --check`).
    pub check_out: Option<PathBuf>,
}

impl BenchConfig {
    /// The setting: batch 128, 32x32 inputs, 100 classes, 3 warm-up and 20 timed
    /// steps, rho 0.7.
    pub fn new(model: &str, step: StepKind) -> Self {
        Self {
            model: model.to_string(),
            step,
            batch: 128,
            image_size: 32,
            classes: 100,
            warmup: 3,
            steps: 20,
            rho: 0.7,
            subnet_pass: SubnetExecution::Sliced,
            precision: Precision::F32,
            seed: 0,
            memory_trace: false,
            subnet_out: None,
            check_out: None,
        }
    }
}

/// Reads the memory a backend holds, where it can.
pub trait MemoryProbe {
    /// What is measured, e.g. `cubecl reserved` or `process peak RSS`.
    fn kind(&self) -> String;
    /// Bytes held now.
    fn current(&self) -> Option<u64>;
    /// The most bytes held so far, where the source tracks it.
    fn peak(&self) -> Option<u64>;
}

/// The process's resident memory from `/proc/self/status` (Linux): the memory of CPU
/// backends.
pub struct ProcessMemory;

impl ProcessMemory {
    fn field(name: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_status_kib(&status, name).map(|kib| kib * 1024)
    }
}

/// The value in bytes of a `Name:   123 kB` line of `/proc/<pid>/status`, in KiB.
pub fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value = parts.next()?.parse().ok()?;
        (parts.next() == Some("kB")).then_some(value)
    })
}

impl MemoryProbe for ProcessMemory {
    fn kind(&self) -> String {
        "process resident memory (VmRSS / VmHWM)".into()
    }
    fn current(&self) -> Option<u64> {
        Self::field("VmRSS")
    }
    fn peak(&self) -> Option<u64> {
        Self::field("VmHWM")
    }
}

/// Growth of a memory trace: the mean of its last tenth minus the mean of its first tenth
/// (after the warm-up), relative to the first. `None` for fewer than 10 samples.
pub fn memory_growth(trace: &[u64]) -> Option<f64> {
    if trace.len() < 10 {
        return None;
    }
    let tenth = trace.len() / 10;
    let mean = |s: &[u64]| s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
    let first = mean(&trace[..tenth]);
    let last = mean(&trace[trace.len() - tenth..]);
    Some(if first > 0.0 {
        (last - first) / first
    } else {
        0.0
    })
}

/// The result of one benchmark run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Backend name.
    pub backend: String,
    /// Device as the backend names it.
    pub device: String,
    /// Architecture.
    pub model: String,
    /// Trainable parameters.
    pub params: usize,
    /// The step.
    pub step: String,
    /// Batch size.
    pub batch: usize,
    /// Input side.
    pub image_size: usize,
    /// Classes.
    pub classes: usize,
    /// How the EWS subnet pass ran (`masked` or `sliced`).
    pub subnet_pass: String,
    /// Number format of the convolutions (`f32` or `bf16`).
    pub precision: String,
    /// Seconds from process start to the end of the first step (start-up, compilation,
    /// autotuning included).
    pub first_step_s: f64,
    /// Seconds of the first step alone.
    pub first_step_only_s: f64,
    /// Timed steps.
    pub steps: usize,
    /// Mean seconds per timed step.
    pub step_s: f64,
    /// Training images per second over the timed steps.
    pub images_per_s: f64,
    /// What the memory figures measure.
    pub memory_kind: String,
    /// Peak memory in bytes (the source's own peak, or the largest sample).
    pub peak_memory_bytes: Option<u64>,
    /// Memory after each timed step (with `memory_trace`).
    pub memory_trace: Vec<u64>,
    /// Relative growth over the trace (last tenth vs first tenth).
    pub memory_growth: Option<f64>,
}

/// Runs one benchmark; `process_start` is when the process began (for time to first step).
pub fn run<B: AutodiffBackend>(
    config: &BenchConfig,
    backend: &str,
    device: &B::Device,
    memory: &dyn MemoryProbe,
    process_start: Instant,
) -> Result<BenchReport, TrainError> {
    if config.batch == 0 || config.steps == 0 || config.classes == 0 || config.image_size == 0 {
        return Err(TrainError::Config(
            "bench: batch, steps, classes and image size must be at least 1".into(),
        ));
    }
    ews_models::subnet::validate_rho(config.rho)?;
    B::seed(device, config.seed);
    let mut model: Network<B> = NetworkConfig::new(config.model.parse()?)
        .with_num_classes(config.classes)
        .with_normalization(Normalization::cifar100())
        .init::<B>(device)?
        .with_precision(config.precision)?;
    let params = num_params(&model);
    let space = model.subnet_space();
    let subnet = space.random(config.rho, &mut StdRng::seed_from_u64(config.seed));
    if let Some(path) = &config.subnet_out {
        let text = serde_json::to_string(&subnet).expect("subnet serialises");
        std::fs::write(path, text).map_err(io_err(path))?;
    }
    // The trainer's optimizer at its defaults: momentum 0.9, nesterov, weight decay 5e-4.
    let train_defaults = TrainConfig::default();
    let mut optim = sgd::<B>(&train_defaults);
    let size = config.image_size;
    let x = Tensor::<B, 4>::random(
        [config.batch, 3, size, size],
        Distribution::Uniform(0.0, 1.0),
        device,
    );
    let labels: Vec<i64> = (0..config.batch)
        .map(|i| (i % config.classes) as i64)
        .collect();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [config.batch]), device);
    let attack = match config.step {
        StepKind::Pgd(steps) => Some(Pgd {
            steps,
            ..Pgd::linf_training()
        }),
        _ => None,
    };
    if let Some(dir) = &config.check_out {
        write_check(dir, &model, &subnet, &space, x.clone(), config.subnet_pass)?;
    }
    let sync = || B::sync(device).map_err(|e| TrainError::Run(format!("device error: {e:?}")));

    let mut step_index = 0u64;
    let mut step = |model: Network<B>| -> Result<Network<B>, TrainError> {
        let inputs = match &attack {
            Some(attack) => Tensor::from_inner(attack.run::<B, _>(
                &EvalNetwork::new(&model),
                x.clone().inner(),
                y.clone().inner(),
                step_index,
            )),
            None => x.clone(),
        };
        step_index += 1;
        let logits = model.forward(inputs.clone(), BnMode::Train);
        let mut loss = cross_entropy(logits.clone(), y.clone(), 0.0);
        if config.step == StepKind::Ews {
            let masks = subnet.to_masks_as::<B>(&space, device, config.subnet_pass)?;
            let sub = model.forward_subnet(inputs, &masks, BnMode::BatchStats);
            loss = loss + kl_to_teacher(logits, sub, KlReduction::BatchMean);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        Ok(optim.step(train_defaults.lr, model, grads))
    };

    let first_start = Instant::now();
    model = step(model)?;
    sync()?;
    let first_step_only_s = first_start.elapsed().as_secs_f64();
    let first_step_s = process_start.elapsed().as_secs_f64();
    for _ in 0..config.warmup {
        model = step(model)?;
    }
    sync()?;

    let mut trace = Vec::new();
    let mut peak = memory.current();
    let timed = Instant::now();
    for _ in 0..config.steps {
        model = step(model)?;
        if config.memory_trace {
            sync()?;
            if let Some(bytes) = memory.current() {
                trace.push(bytes);
                peak = peak.max(Some(bytes));
            }
        }
    }
    sync()?;
    let seconds = timed.elapsed().as_secs_f64();
    peak = peak.max(memory.current()).max(memory.peak());
    Ok(BenchReport {
        backend: backend.to_string(),
        device: format!("{device:?}"),
        model: config.model.clone(),
        params,
        step: config.step.to_string(),
        batch: config.batch,
        image_size: size,
        classes: config.classes,
        subnet_pass: config.subnet_pass.to_string(),
        precision: config.precision.to_string(),
        first_step_s,
        first_step_only_s,
        steps: config.steps,
        step_s: seconds / config.steps as f64,
        images_per_s: (config.batch * config.steps) as f64 / seconds,
        memory_kind: memory.kind(),
        peak_memory_bytes: peak,
        memory_growth: memory_growth(&trace),
        memory_trace: trace,
    })
}

/// The inputs and logits of [`BenchConfig::check_out`]: up to 4 images, batch statistics
/// (running statistics untouched) for both passes.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckData {
    /// Input shape `[n, 3, h, w]`.
    pub shape: [usize; 4],
    /// Inputs in [0, 1], row-major.
    pub input: Vec<f32>,
    /// Full-network logits, `[n, classes]` row-major.
    pub logits_full: Vec<f32>,
    /// Subnet logits.
    pub logits_subnet: Vec<f32>,
    /// Convolution precision of the run.
    pub precision: String,
}

fn write_check<B: AutodiffBackend>(
    dir: &std::path::Path,
    model: &Network<B>,
    subnet: &Subnet,
    space: &ews_models::SubnetSpace,
    x: Tensor<B, 4>,
    execution: SubnetExecution,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    ews_models::persist::export_safetensors(model, &dir.join("weights.safetensors"))?;
    let n = x.dims()[0].min(4);
    let x = x.narrow(0, 0, n).inner();
    let inner = model.valid();
    let masks = subnet.to_masks_as(space, &x.device(), execution)?;
    let floats = |t: Tensor<B::InnerBackend, 2>| t.into_data().convert::<f32>().to_vec::<f32>();
    let check = CheckData {
        shape: x.dims(),
        input: x
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32"),
        logits_full: floats(inner.forward(x.clone(), BnMode::BatchStats)).expect("f32"),
        logits_subnet: floats(inner.forward_subnet(x, &masks, BnMode::BatchStats)).expect("f32"),
        precision: model.precision.to_string(),
    };
    let path = dir.join("check.json");
    let text = serde_json::to_string(&check).expect("check data serialises");
    std::fs::write(&path, text).map_err(io_err(&path))
}

/// The subnet a benchmark run wrote, read back (for tests and tools).
pub fn read_subnet(path: &std::path::Path) -> Result<Subnet, TrainError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: not a subnet: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_kinds_parse_and_print() {
        for s in ["plain", "ews", "pgd10", "pgd1"] {
            assert_eq!(s.parse::<StepKind>().unwrap().to_string(), s);
        }
        for bad in ["pgd", "pgd0", "fgsm", "pgdx"] {
            assert!(bad.parse::<StepKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines_and_growth() {
        let status = "Name:\tews\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(204_800));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(102_400));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(memory_growth(&[1; 9]), None);
        assert_eq!(memory_growth(&[100; 1000]), Some(0.0));
        let growing: Vec<u64> = (0..100).map(|i| 1000 + 10 * i).collect();
        let g = memory_growth(&growing).unwrap();
        // First tenth averages 1045, last 1945.
        assert!((g - 900.0 / 1045.0).abs() < 1e-9, "{g}");
        let probe = ProcessMemory;
        if cfg!(target_os = "linux") {
            assert!(probe.current().unwrap() > 1 << 20);
            assert!(probe.peak().unwrap() >= probe.current().unwrap() / 2);
        }
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type AB = Autodiff<Flex>;

    fn tiny(step: StepKind) -> BenchConfig {
        BenchConfig {
            batch: 4,
            image_size: 8,
            classes: 10,
            warmup: 1,
            steps: 2,
            memory_trace: true,
            ..BenchConfig::new("wrn-10-1", step)
        }
    }

    #[test]
    fn every_step_kind_runs_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let start = Instant::now();
        for step in [StepKind::Plain, StepKind::Ews, StepKind::Pgd(2)] {
            let subnet_path = dir.path().join(format!("{step}.json"));
            let config = BenchConfig {
                subnet_out: Some(subnet_path.clone()),
                ..tiny(step)
            };
            let report = run::<AB>(&config, "flex", &device, &ProcessMemory, start).unwrap();
            assert_eq!(report.step, step.to_string());
            assert_eq!(report.params, 77_850, "wrn-10-1 with 10 classes");
            assert!(report.images_per_s > 0.0 && report.step_s > 0.0);
            assert!(report.first_step_s >= report.first_step_only_s);
            assert_eq!(report.memory_trace.len(), 2);
            assert!(report.peak_memory_bytes.unwrap() >= report.memory_trace[0]);
            let subnet = read_subnet(&subnet_path).unwrap();
            let space = NetworkConfig::new("wrn-10-1".parse().unwrap())
                .init::<Flex>(&device)
                .unwrap()
                .subnet_space();
            space.validate(&subnet, Some(0.7.into())).unwrap();
            let json = serde_json::to_string(&report).unwrap();
            let back: BenchReport = serde_json::from_str(&json).unwrap();
            // serde_json's default float parsing may differ in the last bit.
            assert!((back.images_per_s - report.images_per_s).abs() <= 1e-12 * report.images_per_s);
            assert_eq!((back.step, back.params), (report.step, report.params));
            assert_eq!(back.memory_trace, report.memory_trace);
        }
    }

    #[test]
    fn bf16_steps_run_and_say_so() {
        let device = Default::default();
        let config = BenchConfig {
            precision: Precision::Bf16,
            ..tiny(StepKind::Ews)
        };
        let report = run::<AB>(&config, "flex", &device, &ProcessMemory, Instant::now()).unwrap();
        assert_eq!(report.precision, "bf16");
        assert!(report.images_per_s > 0.0);
    }

    #[test]
    fn impossible_settings_name_the_field() {
        let device = Default::default();
        let start = Instant::now();
        let err = |config: BenchConfig| {
            run::<AB>(&config, "flex", &device, &ProcessMemory, start)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(BenchConfig {
                batch: 0,
                ..tiny(StepKind::Plain)
            })
            .contains("batch")
        );
        assert!(
            err(BenchConfig {
                rho: 0.0,
                ..tiny(StepKind::Ews)
            })
            .contains("rho")
        );
        assert!(err(BenchConfig::new("resnet-7", StepKind::Plain)).contains("resnet-7"));
    }
}
