//! AlexNet as torchvision builds it (`torchvision.models.AlexNet`, the "one weird trick"
//! variant: 64-192-384-256-256 channels, 4096 hidden units), for the benchmarks that
//! normalise by AlexNet: ImageNet-C's mCE and ImageNet-P's mFR. Its pretrained weights are
//! torchvision's own file (`alexnet-owt-7be5be79.pth`, or the older `alexnet-owt-4df8aa71.pth`
//! that the ImageNet-P reference loads), read by [`AlexNet::from_torchvision`].
//!
//! Inputs are NCHW images in [0, 1]; the model normalises them with torchvision's ImageNet
//! statistics, as the reference evaluations do. Only inference: dropout is left out (it is
//! the identity in evaluation mode).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::{adaptive_avg_pool2d, max_pool2d};
use burn::tensor::{Tensor, TensorData, activation::relu, backend::Backend};
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleSnapshot, PytorchStore};

use crate::network::run_conv;
use crate::{ModelError, Normalization, Precision};

/// The pretrained weights torchvision publishes (`AlexNet_Weights.IMAGENET1K_V1`).
pub const TORCHVISION_URL: &str = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth";
/// The SHA-256 of [`TORCHVISION_URL`]'s file (its name carries the first eight digits, as
/// torchvision checks them).
pub const TORCHVISION_SHA256: &str =
    "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02";
/// The file name of [`TORCHVISION_URL`].
pub const TORCHVISION_FILE: &str = "alexnet-owt-7be5be79.pth";

/// torchvision's state-dict names of the eight layers, in the order of [`AlexNet`]'s fields.
const TORCH_LAYERS: [(&str, &str); 8] = [
    ("features.0", "conv1"),
    ("features.3", "conv2"),
    ("features.6", "conv3"),
    ("features.8", "conv4"),
    ("features.10", "conv5"),
    ("classifier.1", "fc1"),
    ("classifier.4", "fc2"),
    ("classifier.6", "fc3"),
];

/// The widths of an AlexNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlexNetConfig {
    /// Output channels of the five convolutions.
    pub channels: [usize; 5],
    /// Units of the two hidden linear layers.
    pub hidden: usize,
    /// Classes.
    pub num_classes: usize,
}

impl AlexNetConfig {
    /// torchvision's AlexNet for ImageNet (61,100,840 parameters).
    pub fn torchvision() -> Self {
        Self {
            channels: [64, 192, 384, 256, 256],
            hidden: 4096,
            num_classes: 1000,
        }
    }

    /// The widths that torchvision-named tensors of these shapes (name -> shape) belong to;
    /// an error names the first tensor that is missing or does not fit.
    pub fn from_shapes(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Self, String> {
        let shape = |name: &str| {
            shapes
                .get(name)
                .ok_or_else(|| format!("no tensor `{name}`: not an AlexNet state dict"))
        };
        let mut channels = [0; 5];
        let mut cin = 3;
        for (i, (kernel, torch)) in [(11, 0), (5, 3), (3, 6), (3, 8), (3, 10)]
            .into_iter()
            .enumerate()
        {
            let name = format!("features.{torch}.weight");
            let s = shape(&name)?;
            if s.len() != 4 || s[1] != cin || s[2] != kernel || s[3] != kernel {
                return Err(format!(
                    "`{name}` has shape {s:?}, AlexNet's needs [_, {cin}, {kernel}, {kernel}]"
                ));
            }
            channels[i] = s[0];
            cin = s[0];
        }
        let fc1 = shape("classifier.1.weight")?;
        let fc3 = shape("classifier.6.weight")?;
        let config = Self {
            channels,
            hidden: fc1.first().copied().unwrap_or(0),
            num_classes: fc3.first().copied().unwrap_or(0),
        };
        let fc_in = channels[4] * 36;
        let expected = [
            ("classifier.1.weight", vec![config.hidden, fc_in]),
            ("classifier.4.weight", vec![config.hidden, config.hidden]),
            (
                "classifier.6.weight",
                vec![config.num_classes, config.hidden],
            ),
        ];
        for (name, want) in expected {
            let s = shape(name)?;
            if *s != want {
                return Err(format!("`{name}` has shape {s:?}, expected {want:?}"));
            }
        }
        Ok(config)
    }

    /// A randomly initialised AlexNet of these widths on `device` (burn's default
    /// initialisation: to be overwritten by weights).
    pub fn init<B: Backend>(&self, device: &B::Device) -> AlexNet<B> {
        let c = self.channels;
        let conv = |cin: usize, cout: usize, k: usize, stride: usize, pad: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device)
        };
        let stats =
            |v: [f32; 3]| Tensor::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), device);
        let imagenet = Normalization::imagenet();
        AlexNet {
            conv1: conv(3, c[0], 11, 4, 2),
            conv2: conv(c[0], c[1], 5, 1, 2),
            conv3: conv(c[1], c[2], 3, 1, 1),
            conv4: conv(c[2], c[3], 3, 1, 1),
            conv5: conv(c[3], c[4], 3, 1, 1),
            fc1: LinearConfig::new(c[4] * 36, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.hidden).init(device),
            fc3: LinearConfig::new(self.hidden, self.num_classes).init(device),
            input_mean: stats(imagenet.mean),
            input_std: stats(imagenet.std),
        }
    }
}

/// torchvision's AlexNet (inference only).
#[derive(Module, Debug)]
pub struct AlexNet<B: Backend> {
    /// 11 x 11, stride 4, padding 2.
    pub conv1: Conv2d<B>,
    /// 5 x 5, padding 2.
    pub conv2: Conv2d<B>,
    /// 3 x 3, padding 1.
    pub conv3: Conv2d<B>,
    /// 3 x 3, padding 1.
    pub conv4: Conv2d<B>,
    /// 3 x 3, padding 1.
    pub conv5: Conv2d<B>,
    /// From the 6 x 6 pooled features.
    pub fc1: Linear<B>,
    /// Second hidden layer.
    pub fc2: Linear<B>,
    /// The logits.
    pub fc3: Linear<B>,
    /// Input mean, shape `[1, 3, 1, 1]`.
    pub input_mean: Tensor<B, 4>,
    /// Input standard deviation, shape `[1, 3, 1, 1]`.
    pub input_std: Tensor<B, 4>,
}

impl<B: Backend> AlexNet<B> {
    /// Reads torchvision's AlexNet weights (a `.pth` state dict, zip or legacy format) into
    /// a network of the widths they have, on `device`.
    ///
    /// # Errors
    /// When the file cannot be read, is not an AlexNet state dict, or holds tensors the
    /// network lacks; the error names the file.
    pub fn from_torchvision(path: &Path, device: &B::Device) -> Result<Self, ModelError> {
        let fail = |message: String| ModelError::Weights {
            path: path.display().to_string(),
            message,
        };
        let reader =
            PytorchReader::new(path).map_err(|e| fail(format!("not a PyTorch file: {e}")))?;
        let shapes = reader
            .tensors()
            .iter()
            .map(|(name, t)| (name.clone(), t.shape.to_vec()))
            .collect();
        drop(reader);
        let config = AlexNetConfig::from_shapes(&shapes).map_err(fail)?;
        let mut model = config.init::<B>(device);
        let mut store = PytorchStore::from_file(path).allow_partial(true);
        for (torch, ours) in TORCH_LAYERS {
            store = store
                .with_key_remapping(format!(r"^{}\.", regex_escape(torch)), format!("{ours}."));
        }
        let result = model
            .load_from(&mut store)
            .map_err(|e| fail(format!("cannot load: {e}")))?;
        let loaded = result.applied.len();
        // Eight weights and eight biases; the normalisation constants are ours.
        if loaded != 16 || !result.unused.is_empty() || !result.errors.is_empty() {
            return Err(fail(format!(
                "loaded {loaded} of AlexNet's 16 tensors; not AlexNet's: {:?}; errors: {:?}",
                result.unused, result.errors
            )));
        }
        Ok(model)
    }

    /// The configuration of this network's widths.
    pub fn config(&self) -> AlexNetConfig {
        let out = |c: &Conv2d<B>| c.weight.dims()[0];
        AlexNetConfig {
            channels: [
                out(&self.conv1),
                out(&self.conv2),
                out(&self.conv3),
                out(&self.conv4),
                out(&self.conv5),
            ],
            hidden: self.fc1.weight.dims()[1],
            num_classes: self.fc3.weight.dims()[1],
        }
    }

    /// Logits `[batch, classes]` of images in [0, 1] (any size from 63 x 63).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let conv = |c: &Conv2d<B>, x| relu(run_conv(c, x, Precision::F32));
        let pool = |x| max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false);
        let x = (x - self.input_mean.clone()) / self.input_std.clone();
        let x = pool(conv(&self.conv1, x));
        let x = pool(conv(&self.conv2, x));
        let x = conv(&self.conv5, conv(&self.conv4, conv(&self.conv3, x)));
        let x = adaptive_avg_pool2d(pool(x), [6, 6]);
        let [n, c, h, w] = x.dims();
        let x = x.reshape([n, c * h * w]);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    /// Classes of the output.
    pub fn num_classes(&self) -> usize {
        self.fc3.weight.dims()[1]
    }
}

/// `name` with the regex metacharacters it may hold (dots) escaped.
fn regex_escape(name: &str) -> String {
    name.replace('.', r"\.")
}
