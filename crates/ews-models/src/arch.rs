//! Architecture names, as used in configs and on the command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// How the first convolution of a post-activation ResNet looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 3x3 convolution, stride 1, no max-pool (CIFAR-sized inputs).
    Cifar,
    /// 7x7 convolution, stride 2, then 3x3 max-pool with stride 2 (torchvision layout).
    ImageNet,
}

/// A network architecture of the ResNet family.
///
/// Names (see [`Architecture::from_str`]): `preact-resnet18`, `preact-resnet34`,
/// `resnet18` ... `resnet152` (CIFAR stem), `imagenet-resnet18` ... `imagenet-resnet152`,
/// and `wrn-D-K` for any depth `D` with `(D - 4) % 6 == 0` and widen factor `K >= 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Pre-activation ResNet (He et al. 2016, the CIFAR layout of Rice et al.).
    PreActResNet {
        /// 18 or 34.
        depth: usize,
    },
    /// Post-activation ResNet with basic (18, 34) or bottleneck (50, 101, 152) blocks.
    ResNet {
        /// 18, 34, 50, 101 or 152.
        depth: usize,
        /// CIFAR or ImageNet stem.
        stem: Stem,
    },
    /// WideResNet-depth-widen (Zagoruyko and Komodakis 2016).
    WideResNet {
        /// Total depth; `(depth - 4)` must be divisible by 6.
        depth: usize,
        /// Widen factor k: group widths are 16k, 32k, 64k.
        widen: usize,
    },
}

/// The residual block type used by an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions, post-activation.
    Basic,
    /// 1x1, 3x3, 1x1 convolutions with expansion 4, post-activation.
    Bottleneck,
    /// Two 3x3 convolutions, BN and ReLU before each convolution.
    PreAct,
}

impl BlockKind {
    /// Output channels of a block divided by its base width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Bottleneck => 4,
            BlockKind::Basic | BlockKind::PreAct => 1,
        }
    }
}

/// The stage layout derived from an architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageLayout {
    /// Block type of every stage.
    pub block: BlockKind,
    /// Number of blocks per stage.
    pub blocks: Vec<usize>,
    /// Base width per stage (output channels are `width * expansion`).
    pub widths: Vec<usize>,
    /// Stride of the first block of each stage.
    pub strides: Vec<usize>,
    /// Output channels of the stem convolution.
    pub stem_channels: usize,
}

impl Architecture {
    /// The standard architectures, one per line of `ews models`.
    pub fn standard() -> Vec<Architecture> {
        let mut list = vec![
            Architecture::PreActResNet { depth: 18 },
            Architecture::PreActResNet { depth: 34 },
        ];
        for stem in [Stem::Cifar, Stem::ImageNet] {
            for depth in [18, 34, 50, 101, 152] {
                list.push(Architecture::ResNet { depth, stem });
            }
        }
        for (depth, widen) in [
            (16, 1),
            (16, 4),
            (16, 8),
            (28, 10),
            (34, 10),
            (40, 2),
            (70, 16),
        ] {
            list.push(Architecture::WideResNet { depth, widen });
        }
        list
    }

    /// Block type, blocks per stage, widths and strides.
    pub fn layout(&self) -> StageLayout {
        match *self {
            Architecture::PreActResNet { depth } => StageLayout {
                block: BlockKind::PreAct,
                blocks: resnet_blocks(depth).to_vec(),
                widths: vec![64, 128, 256, 512],
                strides: vec![1, 2, 2, 2],
                stem_channels: 64,
            },
            Architecture::ResNet { depth, .. } => StageLayout {
                block: if depth >= 50 {
                    BlockKind::Bottleneck
                } else {
                    BlockKind::Basic
                },
                blocks: resnet_blocks(depth).to_vec(),
                widths: vec![64, 128, 256, 512],
                strides: vec![1, 2, 2, 2],
                stem_channels: 64,
            },
            Architecture::WideResNet { depth, widen } => {
                let n = (depth - 4) / 6;
                StageLayout {
                    block: BlockKind::PreAct,
                    blocks: vec![n; 3],
                    widths: vec![16 * widen, 32 * widen, 64 * widen],
                    strides: vec![1, 2, 2],
                    stem_channels: 16,
                }
            }
        }
    }

    /// Whether the architecture uses a pre-activation layout (BN + ReLU head, no stem BN).
    pub fn is_preactivation(&self) -> bool {
        !matches!(self, Architecture::ResNet { .. })
    }
}

fn resnet_blocks(depth: usize) -> [usize; 4] {
    match depth {
        18 => [2, 2, 2, 2],
        34 | 50 => [3, 4, 6, 3],
        101 => [3, 4, 23, 3],
        152 => [3, 8, 36, 3],
        _ => unreachable!("depth validated at parse time"),
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Architecture::PreActResNet { depth } => write!(f, "preact-resnet{depth}"),
            Architecture::ResNet {
                depth,
                stem: Stem::Cifar,
            } => write!(f, "resnet{depth}"),
            Architecture::ResNet {
                depth,
                stem: Stem::ImageNet,
            } => write!(f, "imagenet-resnet{depth}"),
            Architecture::WideResNet { depth, widen } => write!(f, "wrn-{depth}-{widen}"),
        }
    }
}

impl FromStr for Architecture {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ModelError::UnknownArchitecture {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let lower = name.trim().to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("wrn-") {
            let mut parts = rest.split('-');
            let (Some(d), Some(k), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected wrn-DEPTH-WIDEN, e.g. wrn-28-10"));
            };
            let depth: usize = d.parse().map_err(|_| bad("depth is not a number"))?;
            let widen: usize = k.parse().map_err(|_| bad("widen factor is not a number"))?;
            if depth < 10 || !(depth - 4).is_multiple_of(6) {
                return Err(bad(
                    "WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...)",
                ));
            }
            if widen == 0 {
                return Err(bad("widen factor must be at least 1"));
            }
            return Ok(Architecture::WideResNet { depth, widen });
        }
        let depth_of = |digits: &str, allowed: &[usize]| -> Result<usize, ModelError> {
            let depth: usize = digits.parse().map_err(|_| bad("depth is not a number"))?;
            if allowed.contains(&depth) {
                Ok(depth)
            } else {
                Err(bad(&format!("depth must be one of {allowed:?}")))
            }
        };
        if let Some(d) = lower.strip_prefix("preact-resnet") {
            return Ok(Architecture::PreActResNet {
                depth: depth_of(d, &[18, 34])?,
            });
        }
        if let Some(d) = lower.strip_prefix("imagenet-resnet") {
            return Ok(Architecture::ResNet {
                depth: depth_of(d, &[18, 34, 50, 101, 152])?,
                stem: Stem::ImageNet,
            });
        }
        if let Some(d) = lower.strip_prefix("resnet") {
            return Ok(Architecture::ResNet {
                depth: depth_of(d, &[18, 34, 50, 101, 152])?,
                stem: Stem::Cifar,
            });
        }
        Err(bad(
            "known: preact-resnet18|34, resnet18|34|50|101|152, imagenet-resnet18|..|152, wrn-D-K",
        ))
    }
}

impl Serialize for Architecture {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Architecture {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Architecture::standard() {
            let name = arch.to_string();
            assert_eq!(name.parse::<Architecture>().unwrap(), arch, "{name}");
        }
        assert_eq!(
            "WRN-22-3".parse::<Architecture>().unwrap(),
            Architecture::WideResNet {
                depth: 22,
                widen: 3
            }
        );
    }

    #[test]
    fn bad_names_are_explained() {
        for bad in [
            "wrn-27-10",
            "wrn-28",
            "wrn-28-0",
            "resnet20",
            "preact-resnet50",
            "vgg16",
            "wrn-a-b",
        ] {
            let err = bad.parse::<Architecture>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
