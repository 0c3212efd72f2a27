//! A network's tensors as one flat vector in module order, for exchanges that pair values
//! by position rather than by parameter id (peers in other processes draw other random ids):
//! the gradient mean (one all-reduce per step, as DDP's buckets) and peer 0's weights and
//! batch-norm statistics handed to every peer.

use std::collections::HashSet;

use burn::collective::ReduceOperation;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::Peer;
use crate::TrainError;

impl Peer {
    /// The mean of every peer's gradients of `module`'s parameters.
    pub fn mean_gradients<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        let mut take = TakeGradients::<B> {
            grads: &mut grads,
            parts: Vec::new(),
            taken: HashSet::new(),
        };
        module.visit(&mut take);
        let (parts, taken) = (take.parts, take.taken);
        if parts.is_empty() {
            return Ok(grads);
        }
        let flat = Tensor::cat(parts, 0);
        let mean = self.all_reduce(flat, ReduceOperation::Mean, "averaging gradients")?;
        module.visit(&mut PutGradients::<B> {
            grads: &mut grads,
            flat: mean,
            offset: 0,
            taken,
        });
        Ok(grads)
    }

    /// `module` with peer 0's values of every float tensor (weights and batch-norm running
    /// statistics): the others contribute zeros to a sum, so the values arrive exactly.
    pub fn take_from_first<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: M,
    ) -> Result<M, TrainError> {
        let mut flat = module_values(&module, false);
        if self.rank != 0 {
            flat = flat.zeros_like();
        }
        let first = self.all_reduce(flat, ReduceOperation::Sum, "taking peer 0's network")?;
        Ok(module.map(&mut Assign::<B> {
            flat: first,
            offset: 0,
        }))
    }
}

/// Every float tensor of `module` (parameters and running statistics; only the trained
/// parameters with `trained_only`), flattened and concatenated in module order.
pub(crate) fn module_values<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    trained_only: bool,
) -> Tensor<B::InnerBackend, 1> {
    let mut collect = CollectValues::<B> {
        parts: Vec::new(),
        trained_only,
    };
    module.visit(&mut collect);
    Tensor::cat(collect.parts, 0)
}

struct CollectValues<B: AutodiffBackend> {
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    trained_only: bool,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectValues<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if !self.trained_only || value.is_require_grad() {
            self.parts.push(value.inner().reshape([-1]));
        }
    }
}

/// Replaces every float tensor, in module order, with the next values of `flat`.
struct Assign<B: AutodiffBackend> {
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Assign<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let (shape, tracked) = (tensor.shape(), tensor.is_require_grad());
        let end = self.offset + shape.num_elements();
        let values = self.flat.clone().slice(self.offset..end).reshape(shape);
        self.offset = end;
        let value = Tensor::from_inner(values).set_require_grad(tracked);
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Moves the gradients of the module's parameters, in module order, out of `grads`.
struct TakeGradients<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    taken: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for TakeGradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.parts.push(grad.reshape([-1]));
            self.taken.insert(param.id);
        }
    }
}

/// Puts the gradients taken by [`TakeGradients`] back from the flat vector `flat`.
struct PutGradients<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
    taken: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for PutGradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.taken.contains(&param.id) {
            return;
        }
        let shape = param.lazy_shape();
        let end = self.offset + shape.num_elements();
        let grad = self.flat.clone().slice(self.offset..end).reshape(shape);
        self.offset = end;
        self.grads.register::<B::InnerBackend, D>(param.id, grad);
    }
}
