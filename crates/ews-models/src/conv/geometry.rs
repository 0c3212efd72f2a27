//! The shape arithmetic of one 2-D convolution, shared by every kernel.

use burn::tensor::ops::PaddedConvOptions;

/// Sizes, strides and padding of one NCHW convolution with a `[out, in, kh, kw]` weight and
/// one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (height, width).
    pub stride: [usize; 2],
    /// Zero padding before the first row and column.
    pub pad_start: [usize; 2],
    /// Zero padding after the last row and column.
    pub pad_end: [usize; 2],
    /// Dilation (height, width).
    pub dilation: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
}

impl ConvGeometry {
    /// The geometry of `conv2d(x, weight)` with `options`, or `None` where the fast kernels do
    /// not apply (grouped convolutions, shapes that do not fit, an empty output).
    pub fn new(x: [usize; 4], weight: [usize; 4], options: &PaddedConvOptions<2>) -> Option<Self> {
        let conv = &options.options;
        let [batch, in_channels, h, w] = x;
        let [out_channels, weight_in, kh, kw] = weight;
        if conv.groups != 1 || weight_in != in_channels {
            return None;
        }
        let pad_start = conv.padding;
        let pad_end = options.padding_end.unwrap_or(pad_start);
        let out_size = |axis: usize, size: usize, k: usize| {
            let span = conv.dilation[axis] * (k.checked_sub(1)?) + 1;
            let padded = size + pad_start[axis] + pad_end[axis];
            (padded >= span && conv.stride[axis] > 0)
                .then(|| (padded - span) / conv.stride[axis] + 1)
        };
        let output = [out_size(0, h, kh)?, out_size(1, w, kw)?];
        let geometry = Self {
            batch,
            in_channels,
            out_channels,
            input: [h, w],
            kernel: [kh, kw],
            stride: conv.stride,
            pad_start,
            pad_end,
            dilation: conv.dilation,
            output,
        };
        (geometry.input_len() > 0 && geometry.output_len() > 0 && geometry.weight_len() > 0)
            .then_some(geometry)
    }

    /// Output pixels per image and channel.
    pub fn out_pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Input pixels per image and channel.
    pub fn in_pixels(&self) -> usize {
        self.input[0] * self.input[1]
    }

    /// Length of one im2col column: `in_channels * kh * kw`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Elements of the input batch.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_pixels()
    }

    /// Elements of the output batch.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_pixels()
    }

    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    /// The input shape `[n, c, h, w]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.input[0], self.input[1]]
    }

    /// The output shape `[n, c, h, w]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.output[0],
            self.output[1],
        ]
    }

    /// The weight shape `[out, in, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    /// A 1x1 convolution with stride 1 and no padding: its im2col matrix is the input.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.pad_start == [0, 0]
            && self.pad_end == [0, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(stride: usize, pad: usize) -> PaddedConvOptions<2> {
        PaddedConvOptions::asymmetric([stride; 2], [pad; 2], [pad; 2], [1, 1], 1)
    }

    #[test]
    fn output_sizes_follow_the_convolution_formula() {
        let g = ConvGeometry::new([2, 3, 32, 32], [8, 3, 3, 3], &options(1, 1)).unwrap();
        assert_eq!(g.output, [32, 32]);
        let g = ConvGeometry::new([1, 3, 224, 224], [64, 3, 7, 7], &options(2, 3)).unwrap();
        assert_eq!(g.output, [112, 112]);
        let g = ConvGeometry::new([1, 16, 32, 32], [32, 16, 1, 1], &options(2, 0)).unwrap();
        assert_eq!(g.output, [16, 16]);
        let asym = PaddedConvOptions::asymmetric([1, 1], [0, 1], [2, 0], [1, 1], 1);
        let g = ConvGeometry::new([1, 1, 5, 5], [1, 1, 3, 3], &asym).unwrap();
        assert_eq!(g.output, [5, 4]);
    }

    #[test]
    fn unsupported_shapes_are_left_to_burn() {
        let grouped = PaddedConvOptions::asymmetric([1, 1], [1, 1], [1, 1], [1, 1], 2);
        assert!(ConvGeometry::new([1, 4, 8, 8], [4, 2, 3, 3], &grouped).is_none());
        assert!(ConvGeometry::new([1, 3, 2, 2], [4, 3, 5, 5], &options(1, 0)).is_none());
        assert!(ConvGeometry::new([0, 3, 8, 8], [4, 3, 3, 3], &options(1, 1)).is_none());
    }
}
