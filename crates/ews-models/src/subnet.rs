//! The subnet space of a network and subnets within it (paper §3.1, Fig. 2).
//!
//! Every residual block has paths (its residual branch and its skip connection) and, on the
//! residual branch, maskable layers: the input channels of the block's middle convolution,
//! as in the official release. A subnet at width `rho` keeps about `rho * paths` paths of
//! every block and `rho * width` channels of every maskable layer, rounded up as
//! [`SubnetWidth`] says (the release's `ceil(n * (rho + 1e-6))` by default).

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rand::Rng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// One maskable layer: a set of channels that a subnet can zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpace {
    /// What the channels are, e.g. `conv2.input`.
    pub name: String,
    /// Number of channels.
    pub width: usize,
}

/// One path of a block: the residual branch or the skip connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSpace {
    /// `residual` or `skip`.
    pub name: String,
    /// Maskable layers on this path (none on the skip connection).
    pub layers: Vec<LayerSpace>,
}

/// The paths and maskable layers of one residual block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpace {
    /// Block name in PyTorch style, e.g. `layer2.0`.
    pub name: String,
    /// The block's paths, residual branch first.
    pub paths: Vec<PathSpace>,
}

/// The subnet space of a network: its blocks in forward order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpace {
    /// Residual blocks in network order.
    pub blocks: Vec<BlockSpace>,
}

/// The choices of one block: kept paths and, per path and maskable layer, kept channels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockChoice {
    /// Indices of the kept paths, ascending.
    pub paths: Vec<usize>,
    /// `channels[path][layer]`: kept channel indices, ascending. Entries of dropped paths
    /// are ignored by the masked forward.
    pub channels: Vec<Vec<Vec<usize>>>,
}

/// A subnet: one [`BlockChoice`] per block of a [`SubnetSpace`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subnet {
    /// Choices per block, in network order.
    pub blocks: Vec<BlockChoice>,
}

/// How a subnet width rho becomes a number of kept paths or channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WidthRounding {
    /// The official release: `ceil(n * (rho + 1e-6))`. At rho = 0.5 it keeps both paths of
    /// a block and 33 of 64 channels.
    #[default]
    Release,
    /// The paper's text: `ceil(rho * n)` (1 of 2 paths and 32 of 64 channels at rho = 0.5).
    Exact,
}

/// A subnet width: the fraction `rho` of paths and channels a subnet keeps, and how it is
/// rounded to counts. An `f64` converts with the release's rounding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubnetWidth {
    /// Fraction of paths and channels kept, in (0, 1].
    pub rho: f64,
    /// How `rho * n` becomes a count.
    pub rounding: WidthRounding,
}

impl SubnetWidth {
    /// Width `rho` with the release's rounding.
    pub fn new(rho: f64) -> Self {
        Self {
            rho,
            rounding: WidthRounding::Release,
        }
    }

    /// Width `rho` with the exact `ceil(rho * n)`.
    pub fn exact(rho: f64) -> Self {
        Self {
            rho,
            rounding: WidthRounding::Exact,
        }
    }

    /// Width `rho` with the given rounding.
    pub fn with_rounding(rho: f64, rounding: WidthRounding) -> Self {
        Self { rho, rounding }
    }

    /// Number of items kept out of `n`, at least one.
    pub fn kept(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let count = match self.rounding {
            WidthRounding::Release => (n as f64 * (self.rho + 1e-6)).ceil(),
            // A tolerance of 1e-9 keeps products such as `0.1 * 10` from rounding up to 2.
            WidthRounding::Exact => (self.rho * n as f64 - 1e-9).ceil(),
        };
        (count as usize).clamp(1, n)
    }
}

impl std::str::FromStr for WidthRounding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "release" => Ok(Self::Release),
            "exact" => Ok(Self::Exact),
            _ => Err(format!("subnet rounding `{s}`: expected release or exact")),
        }
    }
}

impl std::fmt::Display for WidthRounding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Release => "release",
            Self::Exact => "exact",
        })
    }
}

impl From<f64> for SubnetWidth {
    fn from(rho: f64) -> Self {
        Self::new(rho)
    }
}

impl std::fmt::Display for SubnetWidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rounding {
            WidthRounding::Release => write!(f, "rho {}", self.rho),
            WidthRounding::Exact => write!(f, "rho {} (exact rounding)", self.rho),
        }
    }
}

/// Checks that `rho` is a usable subnet width.
pub fn validate_rho(rho: f64) -> Result<(), ModelError> {
    if rho.is_finite() && rho > 0.0 && rho <= 1.0 {
        Ok(())
    } else {
        Err(ModelError::InvalidSubnet(format!(
            "rho must be in (0, 1], got {rho}"
        )))
    }
}

impl SubnetSpace {
    /// Number of residual blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The largest path count of any block.
    pub fn max_paths(&self) -> usize {
        self.blocks.iter().map(|b| b.paths.len()).max().unwrap_or(0)
    }

    /// The widest maskable layer of the network.
    pub fn max_width(&self) -> usize {
        self.blocks
            .iter()
            .flat_map(|b| b.paths.iter())
            .flat_map(|p| p.layers.iter())
            .map(|l| l.width)
            .max()
            .unwrap_or(0)
    }

    /// The subnet that keeps everything: its masked forward equals the full forward.
    pub fn full(&self) -> Subnet {
        Subnet {
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockChoice {
                    paths: (0..b.paths.len()).collect(),
                    channels: b
                        .paths
                        .iter()
                        .map(|p| p.layers.iter().map(|l| (0..l.width).collect()).collect())
                        .collect(),
                })
                .collect(),
        }
    }

    /// A uniformly random subnet at `width`: in every block `width.kept(paths)` paths and,
    /// on every path, `width.kept(channels)` channels per maskable layer, drawn without
    /// replacement.
    pub fn random<R: Rng + ?Sized>(&self, width: impl Into<SubnetWidth>, rng: &mut R) -> Subnet {
        let width = width.into();
        let pick = |n: usize, rng: &mut R| -> Vec<usize> {
            let mut kept = sample(rng, n, width.kept(n)).into_vec();
            kept.sort_unstable();
            kept
        };
        Subnet {
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockChoice {
                    paths: pick(b.paths.len(), rng),
                    channels: b
                        .paths
                        .iter()
                        .map(|p| p.layers.iter().map(|l| pick(l.width, rng)).collect())
                        .collect(),
                })
                .collect(),
        }
    }

    /// Checks that `subnet` fits this space: block, path and layer counts, index ranges,
    /// no duplicates, at least one path per block. With a width, also the kept counts.
    pub fn validate(&self, subnet: &Subnet, width: Option<SubnetWidth>) -> Result<(), ModelError> {
        let err = |msg: String| Err(ModelError::InvalidSubnet(msg));
        if subnet.blocks.len() != self.blocks.len() {
            return err(format!(
                "subnet has {} blocks, the network {}",
                subnet.blocks.len(),
                self.blocks.len()
            ));
        }
        for (block, choice) in self.blocks.iter().zip(&subnet.blocks) {
            let name = &block.name;
            check_indices(&choice.paths, block.paths.len(), &format!("{name} paths"))?;
            if choice.paths.is_empty() {
                return err(format!("{name}: a subnet keeps at least one path"));
            }
            if let Some(width) = width {
                let want = width.kept(block.paths.len());
                if choice.paths.len() != want {
                    return err(format!(
                        "{name}: keeps {} paths, {width} needs {want}",
                        choice.paths.len()
                    ));
                }
            }
            if choice.channels.len() != block.paths.len() {
                return err(format!(
                    "{name}: channel choices for {} paths, block has {}",
                    choice.channels.len(),
                    block.paths.len()
                ));
            }
            for (p, (path, layers)) in block.paths.iter().zip(&choice.channels).enumerate() {
                if layers.len() != path.layers.len() {
                    return err(format!(
                        "{name}.{}: {} layer choices, path has {}",
                        path.name,
                        layers.len(),
                        path.layers.len()
                    ));
                }
                for (layer, kept) in path.layers.iter().zip(layers) {
                    let what = format!("{name}.{}.{}", path.name, layer.name);
                    check_indices(kept, layer.width, &what)?;
                    if let Some(width) = width.filter(|_| choice.paths.contains(&p)) {
                        let want = width.kept(layer.width);
                        if kept.len() != want {
                            return err(format!(
                                "{what}: keeps {} channels, {width} needs {want}",
                                kept.len()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_indices(indices: &[usize], n: usize, what: &str) -> Result<(), ModelError> {
    let mut seen = vec![false; n];
    for &i in indices {
        if i >= n {
            return Err(ModelError::InvalidSubnet(format!(
                "{what}: index {i} out of range 0..{n}"
            )));
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(ModelError::InvalidSubnet(format!(
                "{what}: index {i} chosen twice"
            )));
        }
    }
    Ok(())
}

/// How a subnet pass drops the channels of a maskable layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetExecution {
    /// Multiply the layer's activations by a 0/1 channel mask (the official release's way):
    /// every convolution runs at full width.
    #[default]
    Masked,
    /// Compute only the kept channels: the convolution and batch norm producing the layer
    /// run on the kept output channels and the convolution reading it on the kept input
    /// channels (weights gathered per pass). Same logits and gradients as masking, about
    /// `rho` of the residual branch's convolution work. Training-mode batch norm (which
    /// updates running statistics of every channel) falls back to masking.
    Sliced,
}

impl std::str::FromStr for SubnetExecution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "masked" => Ok(Self::Masked),
            "sliced" => Ok(Self::Sliced),
            _ => Err(format!("subnet pass `{s}`: expected masked or sliced")),
        }
    }
}

impl std::fmt::Display for SubnetExecution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Masked => "masked",
            Self::Sliced => "sliced",
        })
    }
}

/// The device-side form of a subnet, built once and reused for a whole training step.
#[derive(Clone, Debug)]
pub struct SubnetMasks<B: Backend> {
    /// Per block, in network order.
    pub blocks: Vec<BlockMasks<B>>,
    /// How the forward pass drops channels.
    pub execution: SubnetExecution,
}

/// Masks of one block.
#[derive(Clone, Debug)]
pub struct BlockMasks<B: Backend> {
    /// Whether each path is computed.
    pub paths: Vec<bool>,
    /// `channels[path][layer]`: a `[1, width, 1, 1]` tensor of zeros and ones, or `None`
    /// where every channel is kept (the multiplication is skipped).
    pub channels: Vec<Vec<Option<Tensor<B, 4>>>>,
    /// `kept[path][layer]`: the kept channel indices where some are dropped (used by
    /// [`SubnetExecution::Sliced`]), else `None`.
    pub kept: Vec<Vec<Option<Tensor<B, 1, Int>>>>,
}

impl Subnet {
    /// Turns the subnet into mask tensors on `device` for a masked forward, after checking
    /// it against `space`.
    pub fn to_masks<B: Backend>(
        &self,
        space: &SubnetSpace,
        device: &B::Device,
    ) -> Result<SubnetMasks<B>, ModelError> {
        self.to_masks_as(space, device, SubnetExecution::Masked)
    }

    /// Turns the subnet into the device tensors of a forward pass run as `execution`,
    /// after checking it against `space`. All masks go to the device in one upload and all
    /// kept indices in another; each layer gets a view of them, reused for every pass of
    /// the step.
    pub fn to_masks_as<B: Backend>(
        &self,
        space: &SubnetSpace,
        device: &B::Device,
        execution: SubnetExecution,
    ) -> Result<SubnetMasks<B>, ModelError> {
        space.validate(self, None)?;
        // Host side: every partially kept layer's 0/1 mask and (sliced) kept indices,
        // concatenated, with each layer's (offset, length) in them.
        let mut mask_values = Vec::new();
        let mut index_values = Vec::new();
        let mut layout = Vec::new();
        for (block, choice) in space.blocks.iter().zip(&self.blocks) {
            for (path, kept_per_layer) in block.paths.iter().zip(&choice.channels) {
                for (layer, kept) in path.layers.iter().zip(kept_per_layer) {
                    if kept.len() == layer.width {
                        layout.push(None);
                        continue;
                    }
                    let mask_at = mask_values.len();
                    mask_values.resize(mask_at + layer.width, 0.0f32);
                    for &i in kept {
                        mask_values[mask_at + i] = 1.0;
                    }
                    // A layer with no kept channel stays masked (all zeros) in a sliced pass.
                    let sliced = (execution == SubnetExecution::Sliced && !kept.is_empty())
                        .then_some((index_values.len(), kept.len()));
                    if sliced.is_some() {
                        index_values.extend(kept.iter().map(|&i| i as i64));
                    }
                    layout.push(Some((mask_at, layer.width, sliced)));
                }
            }
        }
        let masks = (!mask_values.is_empty()).then(|| {
            let n = mask_values.len();
            Tensor::<B, 1>::from_data(TensorData::new(mask_values, [n]), device)
        });
        let indices = (!index_values.is_empty()).then(|| {
            let n = index_values.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(index_values, [n]), device)
        });
        let mut layout = layout.into_iter();
        let blocks = space
            .blocks
            .iter()
            .zip(&self.blocks)
            .map(|(block, choice)| {
                let mut channels = Vec::new();
                let mut kept = Vec::new();
                for path in &block.paths {
                    let (mut path_masks, mut path_kept) = (Vec::new(), Vec::new());
                    for _ in &path.layers {
                        let at = layout.next().expect("one layout entry per layer");
                        path_masks.push(at.zip(masks.as_ref()).map(|((at, width, _), m)| {
                            m.clone().narrow(0, at, width).reshape([1, width, 1, 1])
                        }));
                        path_kept.push(
                            at.and_then(|(_, _, sliced)| sliced)
                                .zip(indices.as_ref())
                                .map(|((at, len), k)| k.clone().narrow(0, at, len)),
                        );
                    }
                    channels.push(path_masks);
                    kept.push(path_kept);
                }
                BlockMasks {
                    paths: (0..block.paths.len())
                        .map(|p| choice.paths.contains(&p))
                        .collect(),
                    channels,
                    kept,
                }
            })
            .collect();
        Ok(SubnetMasks { blocks, execution })
    }

    /// Fraction of all maskable channels that this subnet keeps.
    pub fn kept_channel_fraction(&self, space: &SubnetSpace) -> f64 {
        let (mut kept, mut total) = (0usize, 0usize);
        for (block, choice) in space.blocks.iter().zip(&self.blocks) {
            for (path, layers) in block.paths.iter().zip(&choice.channels) {
                for (layer, k) in path.layers.iter().zip(layers) {
                    kept += k.len();
                    total += layer.width;
                }
            }
        }
        if total == 0 {
            1.0
        } else {
            kept as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn space() -> SubnetSpace {
        SubnetSpace {
            blocks: (0..3)
                .map(|i| BlockSpace {
                    name: format!("layer1.{i}"),
                    paths: vec![
                        PathSpace {
                            name: "residual".into(),
                            layers: vec![LayerSpace {
                                name: "conv2.input".into(),
                                width: 64 << i,
                            }],
                        },
                        PathSpace {
                            name: "skip".into(),
                            layers: vec![],
                        },
                    ],
                })
                .collect(),
        }
    }

    #[test]
    fn kept_counts_match_the_release_and_the_exact_rounding() {
        let release = |n, rho| SubnetWidth::new(rho).kept(n);
        let exact = |n, rho| SubnetWidth::exact(rho).kept(n);
        for kept in [release, exact] {
            assert_eq!(
                [64, 128, 256, 512].map(|n| kept(n, 0.7)),
                [45, 90, 180, 359]
            );
            assert_eq!(kept(2, 0.7), 2);
            assert_eq!(kept(2, 0.1), 1);
            assert_eq!(kept(64, 0.3), 20);
            assert_eq!(kept(7, 1.0), 7);
        }
        // The release's ceil(n * (rho + 1e-6)) differs at exact multiples.
        assert_eq!((release(2, 0.5), release(64, 0.5)), (2, 33));
        assert_eq!((exact(2, 0.5), exact(64, 0.5)), (1, 32));
        assert_eq!((release(10, 0.1), release(10, 0.3)), (2, 4));
        assert_eq!((exact(10, 0.1), exact(10, 0.3)), (1, 3));
        assert_eq!(SubnetWidth::from(0.5), SubnetWidth::new(0.5));
        assert_eq!(WidthRounding::default(), WidthRounding::Release);
    }

    #[test]
    fn random_subnets_are_valid_and_seeded() {
        let space = space();
        for rho in [0.1, 0.3, 0.5, 0.7, 0.9, 1.0] {
            let a = space.random(rho, &mut StdRng::seed_from_u64(3));
            let b = space.random(rho, &mut StdRng::seed_from_u64(3));
            assert_eq!(a, b);
            space.validate(&a, Some(rho.into())).unwrap();
        }
        let full = space.full();
        space.validate(&full, Some(1.0.into())).unwrap();
        assert_eq!(full.kept_channel_fraction(&space), 1.0);
    }

    #[test]
    fn invalid_subnets_are_rejected_with_the_place() {
        let space = space();
        let mut s = space.full();
        s.blocks[1].channels[0][0].push(3);
        let e = space.validate(&s, None).unwrap_err().to_string();
        assert!(
            e.contains("layer1.1.residual.conv2.input") && e.contains("twice"),
            "{e}"
        );
        let mut s = space.full();
        s.blocks[2].paths.clear();
        assert!(space.validate(&s, None).is_err());
        let mut s = space.full();
        s.blocks[0].channels[0][0] = vec![64];
        assert!(
            space
                .validate(&s, None)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        let s = space.random(0.7, &mut StdRng::seed_from_u64(0));
        assert!(space.validate(&s, Some(SubnetWidth::exact(0.5))).is_err());
        assert!(
            validate_rho(0.0).is_err()
                && validate_rho(1.5).is_err()
                && validate_rho(f64::NAN).is_err()
        );
    }
}
