//! Global gradient-norm clipping, as PyTorch's `clip_grad_norm_`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct Collect<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    squared: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.squared = Some(match self.squared.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads.register(param.id, g * factor);
        }
    }
}

/// Scales all gradients of `module` so their joint L2 norm is at most `max_norm`; returns
/// the gradients and the norm before clipping. Like PyTorch, the scale is
/// `max_norm / (norm + 1e-6)` and applies only when it is below 1.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let (grads, norm) = clip_grad_norm_on_device(module, grads, max_norm);
    let norm = norm.map_or(0.0, |n| n.into_scalar().elem::<f64>());
    (grads, norm)
}

/// [`clip_grad_norm`] without reading anything back to the host: the scale
/// `min(1, max_norm / (norm + 1e-6))` is computed and applied on the device (a factor of
/// exactly 1 leaves the gradients bit-identical). Returns the norm before clipping as a
/// one-element device tensor (`None` when no parameter has a gradient).
pub fn clip_grad_norm_on_device<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, Option<Tensor<B::InnerBackend, 1>>) {
    let mut collect = Collect::<B> {
        grads: &grads,
        squared: None,
    };
    module.visit(&mut collect);
    let Some(squared) = collect.squared else {
        return (grads, None);
    };
    let norm = squared.sqrt();
    if max_norm > 0.0 {
        let factor = (norm.clone() + 1e-6)
            .recip()
            .mul_scalar(max_norm)
            .clamp_max(1.0);
        let mut scale = Scale::<B> {
            grads: &mut grads,
            factor,
        };
        module.visit(&mut scale);
    }
    (grads, Some(norm))
}
