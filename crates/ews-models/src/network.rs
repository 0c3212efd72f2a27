//! The masked networks: PreAct ResNet, ResNet (basic and bottleneck) and WideResNet.

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{
    Distribution, ElementConversion, FloatDType, Int, Tensor, TensorData, activation::relu,
    backend::Backend,
};
use serde::{Deserialize, Serialize};

use crate::arch::{Architecture, BlockKind, Stem};
use crate::batchnorm::{BatchNorm2d, BnMode};
use crate::conv::conv2d;
use crate::pool::{max_pool2d, normalise_input};
use crate::subnet::{
    BlockMasks, BlockSpace, LayerSpace, PathSpace, SubnetExecution, SubnetMasks, SubnetSpace,
};
use crate::{ModelError, Normalization};

/// How to build a [`Network`].
#[derive(Config, Debug)]
pub struct NetworkConfig {
    /// The architecture.
    pub arch: Architecture,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Dropout probability on the residual branch output in training passes (the paper's
    /// Dropout baseline); 0 disables it.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Per-channel input normalisation applied inside the model (inputs are in [0, 1]).
    #[config(default = "Normalization::identity()")]
    pub normalization: Normalization,
}

/// The number format convolutions compute in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: parameters, batch norm, the classifier and the loss stay f32;
    /// every convolution casts its input and weight to bfloat16, computes, and returns f32
    /// (gradients flow back through the casts into the f32 parameters), like PyTorch's
    /// bf16 autocast for convolutions.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("precision `{s}`: expected f32 or bf16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// A forward pass's settings: batch-norm mode and, for a subnet pass, its masks.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a, B: Backend> {
    /// Batch normalisation behaviour.
    pub bn: BnMode,
    /// Subnet masks; `None` runs the full network.
    pub masks: Option<&'a SubnetMasks<B>>,
}

/// A convolution without bias whose weights follow N(0, sqrt(2 / (k * k * out_channels))):
/// He et al.'s fan-out Kaiming normal, as torchvision's ResNet and the WideResNet reference.
fn conv_fan_out(cin: usize, cout: usize, kernel: usize, stride: usize) -> Conv2dConfig {
    let pad = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (2.0 / (kernel * kernel * cout) as f64).sqrt(),
        })
}

/// A convolution without bias with PyTorch's default initialisation,
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the PreAct ResNet reference (Rice et al.).
fn conv_default(cin: usize, cout: usize, kernel: usize, stride: usize) -> Conv2dConfig {
    let pad = kernel / 2;
    let bound = 1.0 / ((cin * kernel * kernel) as f64).sqrt();
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::Uniform {
            min: -bound,
            max: bound,
        })
}

/// Pre-activation block (PreAct ResNet and WideResNet):
/// `o = relu(bn1(x)); y = conv2(relu(bn2(conv1(o)))) + (shortcut(o) or x)`.
#[derive(Module, Debug)]
pub struct PreActBlock<B: Backend> {
    /// First BN, shared by the residual branch and a projection shortcut.
    pub bn1: BatchNorm2d<B>,
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d<B>,
    /// Second BN.
    pub bn2: BatchNorm2d<B>,
    /// Second 3x3 convolution; its input channels are the block's maskable layer.
    pub conv2: Conv2d<B>,
    /// 1x1 projection when the shape changes.
    pub shortcut: Option<Conv2d<B>>,
}

/// Post-activation basic block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d<B>,
    /// First BN.
    pub bn1: BatchNorm2d<B>,
    /// Second 3x3 convolution; its input channels are the block's maskable layer.
    pub conv2: Conv2d<B>,
    /// Second BN.
    pub bn2: BatchNorm2d<B>,
    /// 1x1 projection when the shape changes.
    pub shortcut: Option<Conv2d<B>>,
    /// BN after the projection.
    pub shortcut_bn: Option<BatchNorm2d<B>>,
}

/// Bottleneck block (torchvision v1.5: stride on the 3x3): 1x1, 3x3, 1x1 with expansion 4.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1x1 reduction.
    pub conv1: Conv2d<B>,
    /// BN after conv1.
    pub bn1: BatchNorm2d<B>,
    /// 3x3 convolution (carries the stride); its input channels are the maskable layer.
    pub conv2: Conv2d<B>,
    /// BN after conv2.
    pub bn2: BatchNorm2d<B>,
    /// 1x1 expansion.
    pub conv3: Conv2d<B>,
    /// BN after conv3.
    pub bn3: BatchNorm2d<B>,
    /// 1x1 projection when the shape changes.
    pub shortcut: Option<Conv2d<B>>,
    /// BN after the projection.
    pub shortcut_bn: Option<BatchNorm2d<B>>,
}

/// A residual block of any kind.
// Blocks are built once per model and never moved in hot loops: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Block<B: Backend> {
    /// Pre-activation block.
    PreAct(PreActBlock<B>),
    /// Post-activation basic block.
    Basic(BasicBlock<B>),
    /// Post-activation bottleneck block.
    Bottleneck(Bottleneck<B>),
}

/// Index of the residual path in a block's [`BlockSpace`].
pub const RESIDUAL_PATH: usize = 0;
/// Index of the skip path in a block's [`BlockSpace`].
pub const SKIP_PATH: usize = 1;

fn masked<B: Backend>(x: Tensor<B, 4>, masks: Option<&BlockMasks<B>>) -> Tensor<B, 4> {
    match masks.and_then(|m| m.channels[RESIDUAL_PATH][0].as_ref()) {
        Some(mask) => x * mask.clone(),
        None => x,
    }
}

/// `conv` applied with `weight` in place of its own (a channel slice of it).
fn conv_with_weight<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    precision: Precision,
) -> Tensor<B, 4> {
    // The networks build every convolution with explicit padding.
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => unreachable!("the networks use explicit padding"),
    };
    let options = PaddedConvOptions::asymmetric(
        conv.stride,
        [top, left],
        [bottom, right],
        conv.dilation,
        conv.groups,
    );
    let bias = conv.bias.as_ref().map(|b| b.val());
    match precision {
        Precision::F32 => conv2d(x, weight, bias, options),
        Precision::Bf16 => conv2d(
            x.cast(FloatDType::BF16),
            weight.cast(FloatDType::BF16),
            bias.map(|b| b.cast(FloatDType::BF16)),
            options,
        )
        .cast(FloatDType::F32),
    }
}

/// `conv(x)` in `precision`, through [`conv2d`] (the backend's own kernels where it has them).
pub(crate) fn run_conv<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    precision: Precision,
) -> Tensor<B, 4> {
    conv_with_weight(conv, x, conv.weight.val(), precision)
}

/// Which side of a convolution a channel slice applies to: the index of that side in the
/// weight's `[out, in, kh, kw]` shape.
#[derive(Clone, Copy)]
enum Channels {
    /// Compute only the kept output channels.
    Outputs = 0,
    /// The input holds only the kept input channels.
    Inputs = 1,
}

/// `conv(x)` with its weight sliced to the `kept` channels on `side` (all when `None`).
fn conv_kept<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    side: Channels,
    kept: Option<&Tensor<B, 1, Int>>,
    precision: Precision,
) -> Tensor<B, 4> {
    let Some(kept) = kept else {
        return run_conv(conv, x, precision);
    };
    // A bias would need the same slice on the output side.
    assert!(
        matches!(side, Channels::Inputs) || conv.bias.is_none(),
        "output-sliced convolutions have no bias"
    );
    let weight = conv.weight.val().select(side as usize, kept.clone());
    conv_with_weight(conv, x, weight, precision)
}

/// How a block's maskable layer (its middle convolution's input channels) is dropped in
/// one pass.
struct MaskableLayer<'a, B: Backend> {
    mode: BnMode,
    /// Kept channel indices: compute only those.
    sliced: Option<&'a Tensor<B, 1, Int>>,
    /// Masks to multiply in at full width (unused when sliced).
    masks: Option<&'a BlockMasks<B>>,
    precision: Precision,
}

impl<B: Backend> MaskableLayer<'_, B> {
    /// `conv2(relu(bn(conv1(x))))` with the maskable layer in front of `conv2`.
    fn around(
        &self,
        conv1: &Conv2d<B>,
        bn: &BatchNorm2d<B>,
        conv2: &Conv2d<B>,
        x: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let p = self.precision;
        let r = conv_kept(conv1, x, Channels::Outputs, self.sliced, p);
        let r = relu(bn_kept(bn, r, self.mode, self.sliced));
        conv_kept(
            conv2,
            masked(r, self.masks),
            Channels::Inputs,
            self.sliced,
            p,
        )
    }
}

/// Batch norm of the kept channels only, or of all.
fn bn_kept<B: Backend>(
    bn: &BatchNorm2d<B>,
    x: Tensor<B, 4>,
    mode: BnMode,
    kept: Option<&Tensor<B, 1, Int>>,
) -> Tensor<B, 4> {
    match kept {
        Some(kept) => bn.forward_kept(x, mode, kept),
        None => bn.forward(x, mode),
    }
}

fn kept<B: Backend>(masks: Option<&BlockMasks<B>>, path: usize) -> bool {
    masks.is_none_or(|m| m.paths[path])
}

fn dropout<B: Backend>(x: Tensor<B, 4>, p: f64, pass: &Pass<'_, B>) -> Tensor<B, 4> {
    if p > 0.0 && pass.bn == BnMode::Train && pass.masks.is_none() {
        let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
        x * keep / (1.0 - p)
    } else {
        x
    }
}

impl<B: Backend> Block<B> {
    fn new(
        kind: BlockKind,
        cin: usize,
        width: usize,
        stride: usize,
        fan_out: bool,
        device: &B::Device,
    ) -> Self {
        let conv = if fan_out { conv_fan_out } else { conv_default };
        let cout = width * kind.expansion();
        let projection = stride != 1 || cin != cout;
        match kind {
            BlockKind::PreAct => Block::PreAct(PreActBlock {
                bn1: BatchNorm2d::new(cin, device),
                conv1: conv(cin, width, 3, stride).init(device),
                bn2: BatchNorm2d::new(width, device),
                conv2: conv(width, width, 3, 1).init(device),
                shortcut: projection.then(|| conv(cin, cout, 1, stride).init(device)),
            }),
            BlockKind::Basic => Block::Basic(BasicBlock {
                conv1: conv(cin, width, 3, stride).init(device),
                bn1: BatchNorm2d::new(width, device),
                conv2: conv(width, width, 3, 1).init(device),
                bn2: BatchNorm2d::new(width, device),
                shortcut: projection.then(|| conv(cin, cout, 1, stride).init(device)),
                shortcut_bn: projection.then(|| BatchNorm2d::new(cout, device)),
            }),
            BlockKind::Bottleneck => Block::Bottleneck(Bottleneck {
                conv1: conv(cin, width, 1, 1).init(device),
                bn1: BatchNorm2d::new(width, device),
                conv2: conv(width, width, 3, stride).init(device),
                bn2: BatchNorm2d::new(width, device),
                conv3: conv(width, cout, 1, 1).init(device),
                bn3: BatchNorm2d::new(cout, device),
                shortcut: projection.then(|| conv(cin, cout, 1, stride).init(device)),
                shortcut_bn: projection.then(|| BatchNorm2d::new(cout, device)),
            }),
        }
    }

    /// Width of the block's maskable layer (input channels of its middle convolution).
    pub fn mask_width(&self) -> usize {
        match self {
            Block::PreAct(b) => b.conv2.weight.dims()[1],
            Block::Basic(b) => b.conv2.weight.dims()[1],
            Block::Bottleneck(b) => b.conv2.weight.dims()[1],
        }
    }

    /// Per channel of the maskable layer, the L1 norm of the filter that produces it
    /// (the block's first convolution), as in L1-norm filter pruning (Li et al. 2017).
    pub fn channel_l1(&self) -> Vec<f32> {
        let w = match self {
            Block::PreAct(b) => b.conv1.weight.val(),
            Block::Basic(b) => b.conv1.weight.val(),
            Block::Bottleneck(b) => b.conv1.weight.val(),
        };
        let [out, ..] = w.dims();
        w.abs()
            .reshape([out as i32, -1])
            .sum_dim(1)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 norms")
    }

    /// Per path (residual, skip), the mean absolute weight of its convolutions; an identity
    /// skip counts as a 1x1 convolution with identity weights (mean 1 / channels).
    pub fn path_mean_abs_weight(&self) -> [f32; 2] {
        let mean_abs = |convs: &[&Conv2d<B>]| -> f32 {
            let (mut sum, mut count) = (0.0f32, 0usize);
            for conv in convs {
                let w = conv.weight.val();
                count += w.shape().num_elements();
                sum += w.abs().sum().into_scalar().elem::<f32>();
            }
            sum / count as f32
        };
        let (residual, shortcut): (Vec<&Conv2d<B>>, &Option<Conv2d<B>>) = match self {
            Block::PreAct(b) => (vec![&b.conv1, &b.conv2], &b.shortcut),
            Block::Basic(b) => (vec![&b.conv1, &b.conv2], &b.shortcut),
            Block::Bottleneck(b) => (vec![&b.conv1, &b.conv2, &b.conv3], &b.shortcut),
        };
        let skip = match shortcut {
            Some(conv) => mean_abs(&[conv]),
            None => 1.0 / residual[0].weight.dims()[1] as f32,
        };
        [mean_abs(&residual), skip]
    }

    fn forward(
        &self,
        x: Tensor<B, 4>,
        dropout_p: f64,
        masks: Option<&BlockMasks<B>>,
        pass: &Pass<'_, B>,
        precision: Precision,
    ) -> Tensor<B, 4> {
        let bn = pass.bn;
        let p = precision;
        let residual = kept(masks, RESIDUAL_PATH);
        let skip = kept(masks, SKIP_PATH);
        // Sliced subnets compute only the kept channels of the maskable layer; masked ones
        // (and training-mode batch norm, which updates every channel's statistics) zero them.
        let sliced = pass
            .masks
            .filter(|m| m.execution == SubnetExecution::Sliced && bn != BnMode::Train)
            .and(masks)
            .and_then(|m| m.kept[RESIDUAL_PATH][0].as_ref());
        let layer = MaskableLayer {
            mode: bn,
            sliced,
            masks: if sliced.is_some() { None } else { masks },
            precision,
        };
        match self {
            Block::PreAct(b) => {
                let o = relu(b.bn1.forward(x.clone(), bn));
                let r = residual.then(|| {
                    let r = layer.around(&b.conv1, &b.bn2, &b.conv2, o.clone());
                    dropout(r, dropout_p, pass)
                });
                let s = skip.then(|| match &b.shortcut {
                    Some(conv) => run_conv(conv, o, p),
                    None => x,
                });
                add_paths(r, s)
            }
            Block::Basic(b) => {
                let r = residual.then(|| {
                    let r = layer.around(&b.conv1, &b.bn1, &b.conv2, x.clone());
                    dropout(b.bn2.forward(r, bn), dropout_p, pass)
                });
                let s = skip.then(|| projected(x, &b.shortcut, &b.shortcut_bn, bn, p));
                relu(add_paths(r, s))
            }
            Block::Bottleneck(b) => {
                let r = residual.then(|| {
                    let r = layer.around(&b.conv1, &b.bn1, &b.conv2, x.clone());
                    let r = relu(b.bn2.forward(r, bn));
                    dropout(b.bn3.forward(run_conv(&b.conv3, r, p), bn), dropout_p, pass)
                });
                let s = skip.then(|| projected(x, &b.shortcut, &b.shortcut_bn, bn, p));
                relu(add_paths(r, s))
            }
        }
    }
}

fn projected<B: Backend>(
    x: Tensor<B, 4>,
    conv: &Option<Conv2d<B>>,
    bn: &Option<BatchNorm2d<B>>,
    mode: BnMode,
    precision: Precision,
) -> Tensor<B, 4> {
    match (conv, bn) {
        (Some(conv), Some(bn)) => bn.forward(run_conv(conv, x, precision), mode),
        (Some(conv), None) => run_conv(conv, x, precision),
        _ => x,
    }
}

fn add_paths<B: Backend>(r: Option<Tensor<B, 4>>, s: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    match (r, s) {
        (Some(r), Some(s)) => r + s,
        (Some(r), None) => r,
        (None, Some(s)) => s,
        (None, None) => unreachable!("subnets keep at least one path (validated)"),
    }
}

/// A classifier of the ResNet family with maskable residual blocks.
///
/// Inputs are NCHW images in [0, 1]; the model normalises them internally.
#[derive(Module, Debug)]
pub struct Network<B: Backend> {
    /// First convolution (3x3, or 7x7 stride 2 for the ImageNet stem).
    pub stem_conv: Conv2d<B>,
    /// BN after the stem (post-activation ResNets only).
    pub stem_bn: Option<BatchNorm2d<B>>,
    /// Residual blocks, per stage.
    pub stages: Vec<Vec<Block<B>>>,
    /// BN before pooling (pre-activation networks only).
    pub head_bn: Option<BatchNorm2d<B>>,
    /// The final linear layer.
    pub classifier: Linear<B>,
    /// Input mean, shape `[1, 3, 1, 1]`.
    pub input_mean: Tensor<B, 4>,
    /// Input standard deviation, shape `[1, 3, 1, 1]`.
    pub input_std: Tensor<B, 4>,
    /// Dropout probability on residual branches in training passes.
    pub dropout: f64,
    /// The architecture this network was built as.
    #[module(skip)]
    pub arch: Architecture,
    /// The number format of the convolutions (parameters are always f32).
    #[module(skip)]
    pub precision: Precision,
}

impl NetworkConfig {
    /// Builds the network on `device` with the reference initialisation:
    /// PreAct ResNet as Rice et al. (PyTorch defaults), ResNet as torchvision (fan-out
    /// Kaiming normal convolutions), WideResNet as the TRADES/AWP reference (fan-out normal
    /// convolutions, zero classifier bias); BN weight 1 and bias 0; linear layers
    /// U(-1/sqrt(in), 1/sqrt(in)).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Network<B>, ModelError> {
        if self.num_classes == 0 {
            return Err(ModelError::InvalidConfig(
                "num_classes must be at least 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::InvalidConfig(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        self.normalization.validate()?;
        let layout = self.arch.layout();
        let fan_out = !matches!(self.arch, Architecture::PreActResNet { .. });
        let conv = if fan_out { conv_fan_out } else { conv_default };
        let image_net_stem = matches!(
            self.arch,
            Architecture::ResNet {
                stem: Stem::ImageNet,
                ..
            }
        );
        let stem_conv = if image_net_stem {
            conv(3, layout.stem_channels, 7, 2)
        } else {
            conv(3, layout.stem_channels, 3, 1)
        }
        .init(device);
        let mut cin = layout.stem_channels;
        let mut stages = Vec::new();
        for ((&n, &width), &stride) in layout
            .blocks
            .iter()
            .zip(&layout.widths)
            .zip(&layout.strides)
        {
            let mut blocks = Vec::new();
            for j in 0..n {
                let s = if j == 0 { stride } else { 1 };
                blocks.push(Block::new(layout.block, cin, width, s, fan_out, device));
                cin = width * layout.block.expansion();
            }
            stages.push(blocks);
        }
        let preact = self.arch.is_preactivation();
        let bound = 1.0 / (cin as f64).sqrt();
        let mut classifier = LinearConfig::new(cin, self.num_classes)
            .with_initializer(Initializer::Uniform {
                min: -bound,
                max: bound,
            })
            .init(device);
        if matches!(self.arch, Architecture::WideResNet { .. }) {
            classifier.bias = classifier.bias.map(|b| b.map(|t| Tensor::zeros_like(&t)));
        }
        let stats =
            |v: [f32; 3]| Tensor::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), device);
        Ok(Network {
            stem_conv,
            stem_bn: (!preact).then(|| BatchNorm2d::new(layout.stem_channels, device)),
            stages,
            head_bn: preact.then(|| BatchNorm2d::new(cin, device)),
            classifier,
            input_mean: stats(self.normalization.mean),
            input_std: stats(self.normalization.std),
            dropout: self.dropout,
            arch: self.arch,
            precision: Precision::F32,
        })
    }
}

impl<B: Backend> Network<B> {
    /// The same network computing its convolutions in `precision`.
    ///
    /// # Errors
    /// When the backend cannot compute in bf16 on `device`.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self, ModelError> {
        if precision == Precision::Bf16 {
            let device = self.classifier.weight.device();
            if !B::supports_dtype(&device, burn::tensor::DType::BF16) {
                return Err(ModelError::InvalidConfig(format!(
                    "precision bf16: the {} backend has no bf16 support on this device",
                    B::name(&device)
                )));
            }
        }
        self.precision = precision;
        Ok(self)
    }

    /// Full forward pass: logits of shape `[batch, classes]`.
    pub fn forward(&self, x: Tensor<B, 4>, bn: BnMode) -> Tensor<B, 2> {
        self.forward_pass(x, Pass { bn, masks: None })
    }

    /// Subnet forward pass: dropped channels zeroed, dropped paths removed, no rescaling.
    pub fn forward_subnet(
        &self,
        x: Tensor<B, 4>,
        masks: &SubnetMasks<B>,
        bn: BnMode,
    ) -> Tensor<B, 2> {
        self.forward_pass(
            x,
            Pass {
                bn,
                masks: Some(masks),
            },
        )
    }

    /// Forward pass with explicit settings.
    ///
    /// # Panics
    /// If the masks were built for a network with a different number of blocks.
    pub fn forward_pass(&self, x: Tensor<B, 4>, pass: Pass<'_, B>) -> Tensor<B, 2> {
        if let Some(masks) = pass.masks {
            assert_eq!(
                masks.blocks.len(),
                self.num_blocks(),
                "subnet masks have {} blocks, the network has {}",
                masks.blocks.len(),
                self.num_blocks()
            );
        }
        let x = normalise_input(x, &self.input_mean, &self.input_std);
        let mut x = run_conv(&self.stem_conv, x, self.precision);
        if let Some(bn) = &self.stem_bn {
            x = relu(bn.forward(x, pass.bn));
        }
        if matches!(
            self.arch,
            Architecture::ResNet {
                stem: Stem::ImageNet,
                ..
            }
        ) {
            x = max_pool2d(x, [3, 3], [2, 2], [1, 1]);
        }
        let blocks = self.stages.iter().flatten();
        for (i, block) in blocks.enumerate() {
            let masks = pass.masks.map(|m| &m.blocks[i]);
            x = block.forward(x, self.dropout, masks, &pass, self.precision);
        }
        if let Some(bn) = &self.head_bn {
            x = relu(bn.forward(x, pass.bn));
        }
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.classifier.forward(pooled)
    }

    /// Number of residual blocks.
    pub fn num_blocks(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// The residual blocks in network order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block<B>> {
        self.stages.iter().flatten()
    }

    /// Names of the blocks in PyTorch style (`layer1.0`, or `block1.layer.0` for WideResNet).
    fn block_names(&self) -> Vec<String> {
        let wide = matches!(self.arch, Architecture::WideResNet { .. });
        let mut names = Vec::new();
        for (s, stage) in self.stages.iter().enumerate() {
            for j in 0..stage.len() {
                names.push(if wide {
                    format!("block{}.layer.{j}", s + 1)
                } else {
                    format!("layer{}.{j}", s + 1)
                });
            }
        }
        names
    }

    /// The subnet space: per block a residual path with one maskable layer (the input
    /// channels of the middle convolution) and a skip path with none.
    pub fn subnet_space(&self) -> SubnetSpace {
        let names = self.block_names();
        SubnetSpace {
            blocks: self
                .stages
                .iter()
                .flatten()
                .zip(names)
                .map(|(block, name)| BlockSpace {
                    name,
                    paths: vec![
                        PathSpace {
                            name: "residual".into(),
                            layers: vec![LayerSpace {
                                name: "conv2.input".into(),
                                width: block.mask_width(),
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
}
