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
    factor: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}

/// Scales all gradients of `module` so their joint L2 norm is at most `max_norm`; returns
/// the gradients and the norm before clipping. Like PyTorch, the scale is
/// `max_norm / (norm + 1e-6)` and applies only when it is below 1.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut collect = Collect::<B> {
        grads: &grads,
        squared: None,
    };
    module.visit(&mut collect);
    let norm = collect
        .squared
        .map(|s| s.into_scalar().elem::<f64>().sqrt())
        .unwrap_or(0.0);
    let factor = max_norm / (norm + 1e-6);
    if max_norm > 0.0 && factor < 1.0 {
        let mut scale = Scale::<B> {
            grads: &mut grads,
            factor,
            _backend: std::marker::PhantomData,
        };
        module.visit(&mut scale);
    }
    (grads, norm)
}
