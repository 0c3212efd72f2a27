//! The inputs an analysis evaluates subnets on: clean test images, the same images under a
//! corruption at one severity, or PGD examples crafted against the full network.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use ews_attack::EvalNetwork;
use ews_attack::pgd::Pgd;
use ews_augment::Image;
use ews_augment::corrupt::{Corruption, FrostTextures, Table, corrupt_with};
use ews_data::loader::HostBatch;
use ews_data::{BatchLoader, LoaderConfig, Split};
use ews_models::Network;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::trainer::to_tensors;

/// One kind of input, written `clean`, `<corruption>:<severity>` (e.g. `gaussian_noise:3`)
/// or `pgd:<eps>[:<steps>]` (L-inf PGD against the full network, e.g. `pgd:2/255`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AnalysisInput {
    /// The test images as they are.
    Clean,
    /// The test images corrupted (ImageNet-C formulas; the CIFAR table at 64 px and below).
    Corruption {
        /// Corruption name, e.g. `gaussian_noise`.
        name: String,
        /// Severity 1-5.
        severity: u8,
    },
    /// L-inf PGD examples against the full network in evaluation mode (step eps / 4,
    /// uniform random start).
    Pgd {
        /// Radius in [0, 1] pixel units.
        eps: f64,
        /// Gradient steps.
        steps: usize,
        /// The radius as written (e.g. `2/255`), for labels.
        eps_text: String,
    },
}

impl std::str::FromStr for AnalysisInput {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "clean" {
            return Ok(Self::Clean);
        }
        let parts: Vec<&str> = text.split(':').collect();
        if parts[0] == "pgd" {
            let (eps_text, steps) = match parts[1..] {
                [eps] => (eps, 10),
                [eps, steps] => (
                    eps,
                    steps.parse().ok().filter(|&s| s > 0).ok_or_else(|| {
                        format!("input `{text}`: PGD steps must be a positive integer")
                    })?,
                ),
                _ => return Err(format!("input `{text}`: expected pgd:EPS or pgd:EPS:STEPS")),
            };
            let eps =
                ews_attack::parse_eps(eps_text).map_err(|e| format!("input `{text}`: {e}"))?;
            return Ok(Self::Pgd {
                eps,
                steps,
                eps_text: eps_text.to_string(),
            });
        }
        let known = || {
            Corruption::ALL
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let [name, severity] = parts[..] else {
            return Err(format!(
                "input `{text}`: expected clean, CORRUPTION:SEVERITY or pgd:EPS (corruptions: {})",
                known()
            ));
        };
        if Corruption::from_name(name).is_none() {
            return Err(format!(
                "input `{text}`: unknown corruption `{name}` (known: {})",
                known()
            ));
        }
        let severity = severity
            .parse()
            .ok()
            .filter(|s| (1..=5).contains(s))
            .ok_or_else(|| format!("input `{text}`: severity must be 1 to 5"))?;
        Ok(Self::Corruption {
            name: name.to_string(),
            severity,
        })
    }
}

impl std::fmt::Display for AnalysisInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Clean => f.write_str("clean"),
            Self::Corruption { name, severity } => write!(f, "{name} (severity {severity})"),
            Self::Pgd {
                steps, eps_text, ..
            } => write!(f, "PGD-{steps} (eps {eps_text})"),
        }
    }
}

/// An input's test batches on the device, prepared once and shared by every subnet.
pub struct InputBatches<B: Backend> {
    /// Which input.
    pub input: AnalysisInput,
    /// `(images, labels)` per batch.
    pub batches: Vec<(Tensor<B, 4>, Tensor<B, 1, Int>)>,
}

/// The test batches of `split` (in `loader`'s evaluation transform) for every input.
/// Corruptions draw from a generator seeded by `seed` and the image; PGD starts from one
/// seeded by `seed` and the batch, and attacks `model` (the full network) in evaluation mode
/// (running statistics), as `ews attack` does. Frost uses `frost` where given, else
/// the procedural stand-in. Returns the batches on the inner (non-autodiff) backend.
pub fn prepare_inputs<B: AutodiffBackend>(
    model: &Network<B>,
    split: &Split,
    loader: &LoaderConfig,
    inputs: &[AnalysisInput],
    seed: u64,
    frost: Option<&FrostTextures>,
    device: &B::Device,
) -> Result<Vec<InputBatches<B::InnerBackend>>, TrainError> {
    let host: Vec<HostBatch> = BatchLoader::new(split, loader, 0).collect::<Result<_, _>>()?;
    let attacked = EvalNetwork::new(model);
    inputs
        .iter()
        .map(|input| {
            let batches = host
                .iter()
                .enumerate()
                .map(|(i, batch)| {
                    let attempt = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                    let (x, y) = to_tensors::<B::InnerBackend>(batch, device);
                    match input {
                        AnalysisInput::Clean => Ok((x, y)),
                        AnalysisInput::Corruption { name, severity } => {
                            let corruption = Corruption::from_name(name).expect("parsed name");
                            let images = corrupt_batch(batch, corruption, *severity, frost, seed);
                            let x = Tensor::from_data(TensorData::new(images, batch.shape), device);
                            Ok((x, y))
                        }
                        AnalysisInput::Pgd { eps, steps, .. } => {
                            let pgd = Pgd {
                                seed,
                                ..Pgd::evaluation(ews_attack::Norm::Linf, *eps, *steps)
                            };
                            Ok((pgd.run::<B, _>(&attacked, x, y.clone(), attempt), y))
                        }
                    }
                })
                .collect::<Result<_, TrainError>>()?;
            Ok(InputBatches {
                input: input.clone(),
                batches,
            })
        })
        .collect()
}

/// The images of a batch (NCHW floats in [0, 1]) corrupted one by one, each with a
/// generator seeded by `seed` and the image's index in the split (so an image is corrupted
/// the same way whatever the batch size).
fn corrupt_batch(
    batch: &HostBatch,
    corruption: Corruption,
    severity: u8,
    frost: Option<&FrostTextures>,
    seed: u64,
) -> Vec<f32> {
    let [n, c, h, w] = batch.shape;
    let table = Table::for_size(h, w);
    let plane = h * w;
    let mut out = Vec::with_capacity(batch.images.len());
    let images = batch.images.chunks_exact(c * plane).take(n);
    for (chw, &index) in images.zip(&batch.indices) {
        let mut pixels = vec![0u8; plane * 3];
        for (p, px) in pixels.chunks_exact_mut(3).enumerate() {
            for (ch, v) in px.iter_mut().enumerate() {
                *v = (chw[ch * plane + p] * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        let image = Image::new(h, w, pixels);
        let key = seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
        let mut rng = StdRng::seed_from_u64(key);
        let done = corrupt_with(&image, corruption, severity, table, frost, &mut rng);
        let start = out.len();
        out.resize(start + c * plane, 0.0);
        for (p, px) in done.pixels.chunks_exact(3).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[start + ch * plane + p] = f32::from(v) / 255.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::AnalysisInput;

    #[test]
    fn inputs_parse_with_errors_that_name_the_problem() {
        assert_eq!("clean".parse::<AnalysisInput>(), Ok(AnalysisInput::Clean));
        assert_eq!(
            "gaussian_noise:3".parse::<AnalysisInput>(),
            Ok(AnalysisInput::Corruption {
                name: "gaussian_noise".into(),
                severity: 3
            })
        );
        let pgd: AnalysisInput = "pgd:2/255".parse().unwrap();
        assert!(
            matches!(pgd, AnalysisInput::Pgd { steps: 10, eps, .. } if (eps - 2.0 / 255.0).abs() < 1e-12)
        );
        assert_eq!(pgd.to_string(), "PGD-10 (eps 2/255)");
        assert!(matches!(
            "pgd:0.01:20".parse(),
            Ok(AnalysisInput::Pgd { steps: 20, .. })
        ));
        for (bad, says) in [
            ("gaussian_noise:6", "severity must be 1 to 5"),
            ("fogg:2", "unknown corruption `fogg`"),
            ("pgd:-1", "must be positive"),
            ("pgd:2/255:0", "positive integer"),
            ("noise", "expected clean"),
        ] {
            let err = bad.parse::<AnalysisInput>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
