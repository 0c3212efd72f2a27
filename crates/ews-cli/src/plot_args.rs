//! `ews plot`: training curves of runs from their `metrics.jsonl`, several runs overlaid.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ews_plot::{Curve, LinePanel, LinePanels};
use ews_train::RunFiles;

use crate::analyze_args::run_labels;
use crate::figures::write_figure;

/// `ews plot` flags.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Run folders, one curve each per panel (`--run A B` or `--run A --run B`).
    #[arg(long = "run", required = true, num_args = 1..)]
    runs: Vec<PathBuf>,
    /// Names of the runs in the legends, in `--run` order (default: folder names).
    #[arg(long = "label", num_args = 1..)]
    labels: Vec<String>,
    /// Output path without extension: writes OUT.png and OUT.svg (default: RUN/curves for
    /// one run, curves for several).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where a metric is read: every log interval (`step` lines) or every epoch.
#[derive(Clone, Copy, PartialEq)]
enum Cadence {
    Step,
    Epoch,
}

/// The panels `ews plot` draws where any run has the metric: key, cadence, title, y label.
const METRICS: [(&str, Cadence, &str, &str); 9] = [
    ("test_acc", Cadence::Epoch, "test accuracy", "accuracy (%)"),
    (
        "holdout_robust_acc",
        Cadence::Epoch,
        "held-out PGD accuracy",
        "accuracy (%)",
    ),
    ("train_ce", Cadence::Step, "training cross-entropy", "CE"),
    ("kl", Cadence::Step, "KL(full || subnet)", "KL"),
    (
        "subnet_acc",
        Cadence::Step,
        "subnet accuracy (training batches)",
        "accuracy (%)",
    ),
    (
        "controller_reward",
        Cadence::Step,
        "controller reward",
        "reward",
    ),
    (
        "controller_entropy",
        Cadence::Step,
        "controller entropy",
        "entropy",
    ),
    ("jsd", Cadence::Step, "AugMix JSD", "JSD"),
    ("lr", Cadence::Step, "learning rate", "lr"),
];

/// The metrics lines of a run folder.
pub fn read_metrics(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let path = RunFiles {
        dir: dir.to_path_buf(),
    }
    .metrics();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read the run's metrics (is it a run folder?)",
            path.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a JSON object", path.display(), i + 1))
        })
        .collect()
}

/// The points of metric `key` in `lines`: per epoch against the epoch, per log interval
/// against the step (falling back to the epoch lines where a run logged no steps).
fn points(lines: &[serde_json::Value], key: &str, cadence: Cadence) -> Vec<(f64, f64)> {
    let of_type = |kind: &str, x: &str| -> Vec<(f64, f64)> {
        lines
            .iter()
            .filter(|l| l["type"] == kind)
            .filter_map(|l| Some((l[x].as_f64()?, l[key].as_f64()?)))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    match cadence {
        Cadence::Epoch => of_type("epoch", "epoch"),
        Cadence::Step => {
            let steps = of_type("step", "step");
            if steps.is_empty() {
                of_type("epoch", "step")
            } else {
                steps
            }
        }
    }
}

/// The training-curve panels of several runs (label, metrics lines).
pub fn curve_panels(runs: &[(String, Vec<serde_json::Value>)]) -> Vec<LinePanel> {
    METRICS
        .iter()
        .filter_map(|&(key, cadence, title, y_label)| {
            let series: Vec<Curve> = runs
                .iter()
                .enumerate()
                .map(|(i, (name, lines))| Curve {
                    name: name.clone(),
                    color: i,
                    points: points(lines, key, cadence),
                })
                .filter(|c| !c.points.is_empty())
                .collect();
            (!series.is_empty()).then(|| LinePanel {
                title: title.into(),
                x_label: if cadence == Cadence::Epoch {
                    "epoch"
                } else {
                    "step"
                }
                .into(),
                y_label: y_label.into(),
                series,
            })
        })
        .collect()
}

/// Draws the training curves of the runs.
pub fn run_plot(args: &PlotArgs) -> Result<()> {
    let labels = run_labels(&args.runs, &args.labels)?;
    let runs = args
        .runs
        .iter()
        .zip(labels)
        .map(|(dir, label)| Ok((label, read_metrics(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let panels = curve_panels(&runs);
    if panels.is_empty() {
        bail!(
            "the runs' metrics.jsonl hold no metric to plot yet (train for a log interval first)"
        );
    }
    let out = match (&args.out, &args.runs[..]) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.join("curves"),
        (None, _) => PathBuf::from("curves"),
    };
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    let figure = LinePanels {
        title: format!("Training curves: {}", names.join(", ")),
        panels,
        columns: 3,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = out
        .file_name()
        .context("--out needs a file name")?
        .to_string_lossy()
        .into_owned();
    write_figure(dir, &stem, &figure)
}
