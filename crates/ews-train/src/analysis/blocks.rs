//! Fig. 7: the vulnerability of each residual block: the test error of subnets that keep a
//! fraction of one block's paths and channels and all of every other block.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use ews_models::{Network, Subnet, SubnetExecution, SubnetSpace, SubnetWidth};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::{Stats, SubnetBn, accuracy_on};
use crate::TrainError;

/// The errors of the subnets that thin out one block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockVulnerability {
    /// Block name (`layer2.0`).
    pub block: String,
    /// Whether the block opens a later stage (it downsamples: the dotted lines of Fig. 7).
    pub downsamples: bool,
    /// Test error (percent) of every sampled subnet.
    pub errors: Vec<f64>,
    /// Statistics of `errors`.
    pub stats: Stats,
}

/// The block analysis of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockReport {
    /// Name of the run in tables and legends.
    pub run: String,
    /// The run folder.
    pub run_dir: String,
    /// Architecture.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Training method.
    pub method: String,
    /// Fraction of the block's paths and channels kept.
    pub keep: f64,
    /// Width rounding (`release` or `exact`).
    pub rounding: String,
    /// Test images.
    pub images: usize,
    /// Batch-norm statistics of the passes.
    pub bn: SubnetBn,
    /// Seed of the subnets.
    pub seed: u64,
    /// Test error (percent) of the full network with the same statistics.
    pub full_error: f64,
    /// One entry per block, in network order.
    pub blocks: Vec<BlockVulnerability>,
}

/// The subnet that keeps everything but block `block`, which keeps `width` of its paths and
/// channels, drawn uniformly.
pub fn block_subnet(
    space: &SubnetSpace,
    block: usize,
    width: SubnetWidth,
    rng: &mut StdRng,
) -> Subnet {
    let mut subnet = space.full();
    subnet.blocks[block] = space.random(width, rng).blocks.swap_remove(block);
    subnet
}

/// Whether a block named like `layer2.0` or `block3.layer.0` opens stage 2 or later.
fn opens_later_stage(name: &str) -> bool {
    let stage: Option<usize> = name
        .split('.')
        .next()
        .map(|first| first.trim_start_matches(|c: char| c.is_ascii_alphabetic()))
        .and_then(|digits| digits.parse().ok());
    let index = name
        .rsplit('.')
        .next()
        .and_then(|i| i.parse::<usize>().ok());
    matches!((stage, index), (Some(s), Some(0)) if s > 1)
}

/// Evaluates `count` subnets per block (block `b` draws from a generator seeded by `seed`
/// and `b`) on `batches`. `progress(done, total)` counts subnet evaluations.
pub fn block_vulnerability<B: Backend>(
    model: &Network<B>,
    batches: &[(Tensor<B, 4>, Tensor<B, 1, Int>)],
    width: SubnetWidth,
    count: usize,
    seed: u64,
    bn: SubnetBn,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<BlockVulnerability>, TrainError> {
    let space = model.subnet_space();
    let Some((x, _)) = batches.first() else {
        return Ok(Vec::new());
    };
    let device = x.device();
    let total = space.num_blocks() * count;
    let mut done = 0;
    space
        .blocks
        .iter()
        .enumerate()
        .map(|(b, block)| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(b as u64));
            let errors = (0..count)
                .map(|_| {
                    let subnet = block_subnet(&space, b, width, &mut rng);
                    let masks = subnet.to_masks_as(&space, &device, SubnetExecution::Sliced)?;
                    done += 1;
                    progress(done, total);
                    Ok(100.0 - accuracy_on(model, batches, Some(&masks), bn))
                })
                .collect::<Result<Vec<f64>, TrainError>>()?;
            Ok(BlockVulnerability {
                block: block.name.clone(),
                downsamples: opens_later_stage(&block.name),
                stats: Stats::of(&errors),
                errors,
            })
        })
        .collect()
}

/// The markdown summary of several runs' block analyses: one row per block, one column
/// per run (mean error ± std).
pub fn markdown(reports: &[BlockReport]) -> String {
    let mut out = String::from("# Vulnerability of each block (Fig. 7)\n\n");
    let Some(first) = reports.first() else {
        return out;
    };
    out += &format!(
        "Test error (%) of subnets that keep {} of one block's paths and channels ({} rounding) \
         and all of the others: mean ± std over {} subnets per block, {} test images, {}; \
         seed {}. Blocks marked * open a new stage (downsampling).\n\n",
        first.keep,
        first.rounding,
        first.blocks.first().map_or(0, |b| b.errors.len()),
        first.images,
        first.bn,
        first.seed
    );
    out += "| block |";
    for r in reports {
        out += &format!(" {} ({}) |", r.run, r.method);
    }
    out += "\n|---|";
    out += &"---:|".repeat(reports.len());
    out += "\n| full network |";
    for r in reports {
        out += &format!(" {:.2} |", r.full_error);
    }
    out += "\n";
    for (i, block) in first.blocks.iter().enumerate() {
        let star = if block.downsamples { "*" } else { "" };
        out += &format!("| {}{star} |", block.block);
        for r in reports {
            match r.blocks.get(i) {
                Some(b) => out += &format!(" {:.2} ± {:.2} |", b.stats.mean, b.stats.std),
                None => out += " - |",
            }
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::opens_later_stage;

    #[test]
    fn the_first_block_of_every_later_stage_downsamples() {
        for (name, opens) in [
            ("layer1.0", false),
            ("layer1.1", false),
            ("layer2.0", true),
            ("layer4.0", true),
            ("layer3.2", false),
            ("block1.layer.0", false),
            ("block2.layer.0", true),
            ("block2.layer.10", false),
        ] {
            assert_eq!(opens_later_stage(name), opens, "{name}");
        }
    }
}
