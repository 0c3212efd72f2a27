//! [`Classifier`]: what an evaluation needs of a model, so that benchmarks run the trained
//! networks and the reference AlexNet alike.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::{AlexNet, BnMode, Network};

/// A model that maps images in [0, 1] (NCHW) to logits, in evaluation mode.
pub trait Classifier<B: Backend> {
    /// Logits `[batch, classes]`.
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2>;
    /// Classes of the output.
    fn num_classes(&self) -> usize;
    /// The smallest input side the model takes.
    fn min_input_size(&self) -> usize {
        1
    }
}

impl<B: Backend> Classifier<B> for Network<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x, BnMode::Eval)
    }

    fn num_classes(&self) -> usize {
        Network::num_classes(self)
    }
}

impl<B: Backend> Classifier<B> for AlexNet<B> {
    fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(x)
    }

    fn num_classes(&self) -> usize {
        AlexNet::num_classes(self)
    }

    fn min_input_size(&self) -> usize {
        // Below 63 px the third max pool has nothing to pool (torchvision's `min_size`).
        63
    }
}
