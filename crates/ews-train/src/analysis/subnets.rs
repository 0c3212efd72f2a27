//! Fig. 1: the accuracy of many random subnets of a trained network on clean, corrupted and
//! adversarial inputs, beside the full network and the weakest subnet its controller finds.

use burn::tensor::backend::Backend;
use ews_models::{Network, Subnet, SubnetExecution};
use serde::{Deserialize, Serialize};

use super::{AnalysisInput, InputBatches, Stats, SubnetBn, accuracy_on};
use crate::TrainError;

/// The accuracies of the subnets on one input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetDistribution {
    /// The input.
    pub input: AnalysisInput,
    /// The input as written in figures (`clean`, `gaussian_noise (severity 3)`, ...).
    pub label: String,
    /// Accuracy (percent) of the full network, with the same batch-norm statistics.
    pub full_accuracy: f64,
    /// Accuracy (percent) of every random subnet, in drawing order.
    pub accuracies: Vec<f64>,
    /// Statistics of `accuracies`.
    pub stats: Stats,
    /// The lowest accuracy among the subnets the run's controller proposed (EWS runs).
    pub weakest_found: Option<f64>,
}

/// The subnet analysis of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetReport {
    /// Name of the run in tables and legends.
    pub run: String,
    /// The run folder.
    pub run_dir: String,
    /// Architecture.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Training method (`vanilla`, `dropout`, `ews`).
    pub method: String,
    /// Subnet width rho.
    pub rho: f64,
    /// Width rounding (`release` or `exact`).
    pub rounding: String,
    /// Test images per input.
    pub images: usize,
    /// Batch-norm statistics of the subnet (and full-network) passes.
    pub bn: SubnetBn,
    /// Seed of the subnets, corruptions and PGD starts.
    pub seed: u64,
    /// Subnets proposed by the run's controller (0 without one).
    pub controller_samples: usize,
    /// One distribution per input, in the order asked.
    pub inputs: Vec<SubnetDistribution>,
}

/// Evaluates the full network, every subnet of `subnets` and every subnet of
/// `controller_subnets` on every input. `progress(done, total)` counts subnet evaluations.
pub fn subnet_distributions<B: Backend>(
    model: &Network<B>,
    inputs: &[InputBatches<B>],
    subnets: &[Subnet],
    controller_subnets: &[Subnet],
    bn: SubnetBn,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<SubnetDistribution>, TrainError> {
    let space = model.subnet_space();
    let device = match inputs.first().and_then(|i| i.batches.first()) {
        Some((x, _)) => x.device(),
        None => return Ok(Vec::new()),
    };
    let total = inputs.len() * (subnets.len() + controller_subnets.len());
    let mut done = 0;
    let mut accuracies_of = |subnets: &[Subnet], input: &InputBatches<B>| {
        subnets
            .iter()
            .map(|subnet| {
                let masks = subnet.to_masks_as(&space, &device, SubnetExecution::Sliced)?;
                let acc = accuracy_on(model, &input.batches, Some(&masks), bn);
                done += 1;
                progress(done, total);
                Ok(acc)
            })
            .collect::<Result<Vec<f64>, TrainError>>()
    };
    inputs
        .iter()
        .map(|input| {
            let accuracies = accuracies_of(subnets, input)?;
            let found = accuracies_of(controller_subnets, input)?;
            Ok(SubnetDistribution {
                label: input.input.to_string(),
                input: input.input.clone(),
                full_accuracy: accuracy_on(model, &input.batches, None, bn),
                stats: Stats::of(&accuracies),
                accuracies,
                weakest_found: found.into_iter().reduce(f64::min),
            })
        })
        .collect()
}

/// The markdown summary of several runs' subnet analyses: one row per run and input.
pub fn markdown(reports: &[SubnetReport]) -> String {
    let mut out = String::from("# Accuracy of random subnets (Fig. 1)\n\n");
    if let Some(r) = reports.first() {
        out += &format!(
            "{} random subnets per run at rho {} ({} rounding), {} test images per input, {}; \
             seed {}. Accuracies in percent; the full network uses the same statistics.\n\n",
            r.inputs.first().map_or(0, |i| i.accuracies.len()),
            r.rho,
            r.rounding,
            r.images,
            r.bn,
            r.seed
        );
    }
    out += "| run | method | input | full network | mean | std | min | 5th percentile | weakest found by the controller |\n";
    out += "|---|---|---|---:|---:|---:|---:|---:|---:|\n";
    for r in reports {
        for d in &r.inputs {
            let found = d.weakest_found.map_or("-".to_string(), |v| {
                format!("{v:.2} (of {})", r.controller_samples)
            });
            out += &format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {found} |\n",
                r.run,
                r.method,
                d.label,
                d.full_accuracy,
                d.stats.mean,
                d.stats.std,
                d.stats.min,
                d.stats.p5
            );
        }
    }
    out
}
