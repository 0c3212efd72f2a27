//! AlexNet as torchvision builds it (`torchvision.models.AlexNet`, the "one weird trick"
//! variant: 64-192-384-256-256 channels, 4096 hidden units), for the benchmarks that
//! normalise by AlexNet: ImageNet-C's mCE and ImageNet-P's mFR. Its pretrained weights are
//! torchvision's own file (`alexnet-owt-7be5be79.pth`, or the older `alexnet-owt-4df8aa71.pth`
//! that the ImageNet-P reference loads), read by `ews_data::torch_pth::read_alexnet` into
//! [`AlexNet::from_state_dict`].
//!
//! Inputs are NCHW images in [0, 1]; the model normalises them with torchvision's ImageNet
//! statistics, as the reference evaluations do. Only inference: dropout is left out (it is
//! the identity in evaluation mode).

use std::collections::BTreeMap;

use burn::module::{Initializer, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Tensor, TensorData, activation::relu, backend::Backend};

use crate::network::run_conv;
use crate::persist::transpose;
use crate::pool::{max_pool2d, normalise_input};
use crate::{Normalization, Precision};

/// The pretrained weights torchvision publishes (`AlexNet_Weights.IMAGENET1K_V1`).
pub const TORCHVISION_URL: &str = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth";
/// The SHA-256 of [`TORCHVISION_URL`]'s file (its name carries the first eight digits, as
/// torchvision checks them).
pub const TORCHVISION_SHA256: &str =
    "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02";
/// The file name of [`TORCHVISION_URL`].
pub const TORCHVISION_FILE: &str = "alexnet-owt-7be5be79.pth";

/// torchvision's state-dict names of the eight layers: conv1..conv5, fc1..fc3.
const TORCH_LAYERS: [&str; 8] = [
    "features.0",
    "features.3",
    "features.6",
    "features.8",
    "features.10",
    "classifier.1",
    "classifier.4",
    "classifier.6",
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
        for (i, (kernel, torch)) in [11, 5, 3, 3, 3].into_iter().zip(TORCH_LAYERS).enumerate() {
            let name = format!("{torch}.weight");
            let s = shape(&name)?;
            if s.len() != 4 || s[0] == 0 || s[1] != cin || s[2] != kernel || s[3] != kernel {
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
        if config.hidden == 0 || config.num_classes == 0 {
            return Err("the linear layers of the state dict have no units".into());
        }
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
        self.init_with(None, device)
    }

    /// The layers with `initializer` (burn's defaults with `None`).
    fn init_with<B: Backend>(
        &self,
        initializer: Option<Initializer>,
        device: &B::Device,
    ) -> AlexNet<B> {
        let c = self.channels;
        let or_default = |default: Initializer| initializer.clone().unwrap_or(default);
        let conv = |cin: usize, cout: usize, k: usize, stride: usize, pad: usize| {
            let config = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad));
            let initializer = or_default(config.initializer.clone());
            config.with_initializer(initializer).init(device)
        };
        let linear = |fan_in: usize, fan_out: usize| {
            let config = LinearConfig::new(fan_in, fan_out);
            let initializer = or_default(config.initializer.clone());
            config.with_initializer(initializer).init(device)
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
            fc1: linear(c[4] * 36, self.hidden),
            fc2: linear(self.hidden, self.hidden),
            fc3: linear(self.hidden, self.num_classes),
            input_mean: stats(imagenet.mean),
            input_std: stats(imagenet.std),
        }
    }
}

/// One of AlexNet's convolutions, before its ReLU, through the project's convolution (f32).
pub fn conv_forward<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    run_conv(conv, x, Precision::F32)
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
    /// A network of the widths and with the values of `tensors`: torchvision's state-dict
    /// names, each with its shape and row-major values (`ews_data::torch_pth` reads them
    /// from torchvision's `.pth` files).
    ///
    /// # Errors
    /// When a tensor is missing, has the wrong shape or size, or is not AlexNet's.
    pub fn from_state_dict(
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        device: &B::Device,
    ) -> Result<Self, String> {
        let shapes = tensors
            .iter()
            .map(|(name, (shape, _))| (name.clone(), shape.clone()))
            .collect();
        let config = AlexNetConfig::from_shapes(&shapes)?;
        // Zeros, not random draws of 61M values that the file's are about to replace.
        let mut model = config.init_with::<B>(Some(Initializer::Zeros), device);
        let mut used = Vec::new();
        let mut take = |name: String, shape: Vec<usize>| -> Result<TensorData, String> {
            let (have, values) = tensors
                .get(&name)
                .ok_or_else(|| format!("no tensor `{name}`: not an AlexNet state dict"))?;
            let count: usize = shape.iter().product();
            if *have != shape || values.len() != count {
                return Err(format!("`{name}` has shape {have:?}, expected {shape:?}"));
            }
            used.push(name);
            Ok(TensorData::new(values.clone(), shape))
        };
        for (torch, conv) in TORCH_LAYERS[..5].iter().zip(model.convs_mut()) {
            let shape = conv.weight.dims().to_vec();
            let weight = take(format!("{torch}.weight"), shape.clone())?;
            let bias = take(format!("{torch}.bias"), vec![shape[0]])?;
            conv.weight = Param::from_tensor(Tensor::from_data(weight, device));
            conv.bias = Some(Param::from_tensor(Tensor::from_data(bias, device)));
        }
        for (torch, linear) in TORCH_LAYERS[5..].iter().zip(model.linears_mut()) {
            // burn keeps linear weights as [in, out], PyTorch as [out, in]; transposed here
            // once, since a transposed view slows every matmul on the CPU backends.
            let [fan_in, fan_out] = linear.weight.dims();
            let weight = take(format!("{torch}.weight"), vec![fan_out, fan_in])?;
            let bias = take(format!("{torch}.bias"), vec![fan_out])?;
            let values = weight.as_slice::<f32>().expect("f32 values");
            let weight = transpose(values, fan_out, fan_in);
            let weight = TensorData::new(weight, [fan_in, fan_out]);
            linear.weight = Param::from_tensor(Tensor::from_data(weight, device));
            linear.bias = Some(Param::from_tensor(Tensor::from_data(bias, device)));
        }
        let unused: Vec<&String> = tensors.keys().filter(|k| !used.contains(k)).collect();
        if !unused.is_empty() {
            return Err(format!("tensors AlexNet does not have: {unused:?}"));
        }
        Ok(model)
    }

    fn convs_mut(&mut self) -> [&mut Conv2d<B>; 5] {
        [
            &mut self.conv1,
            &mut self.conv2,
            &mut self.conv3,
            &mut self.conv4,
            &mut self.conv5,
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear<B>; 3] {
        [&mut self.fc1, &mut self.fc2, &mut self.fc3]
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
        let conv = |c: &Conv2d<B>, x| relu(conv_forward(c, x));
        let pool = |x| max_pool2d(x, [3, 3], [2, 2], [0, 0]);
        let x = normalise_input(x, &self.input_mean, &self.input_std);
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
