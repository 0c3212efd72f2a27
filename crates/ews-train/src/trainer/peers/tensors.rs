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
        let len = flat.dims()[0];
        let mean = self.all_reduce(flat, ReduceOperation::Mean, "averaging gradients")?;
        let mut put = PutGradients::<B> {
            grads: &mut grads,
            flat: mean,
            offset: 0,
            taken,
        };
        module.visit(&mut put);
        debug_assert_eq!(put.offset, len, "every gradient put back");
        Ok(grads)
    }

    /// `module` with peer 0's values of every float tensor (weights and batch-norm running
    /// statistics): the others contribute zeros to a sum, so the values arrive exactly.
    pub fn take_from_first<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: M,
    ) -> Result<M, TrainError> {
        self.take_first::<B, M>(module, Tensors::All, "taking peer 0's network")
    }

    /// `module` with peer 0's batch-norm running statistics (the tensors not trained, which
    /// each peer updates on its own shard; the weights are equal already).
    pub fn take_statistics_from_first<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: M,
    ) -> Result<M, TrainError> {
        let what = "taking peer 0's batch-norm statistics";
        self.take_first::<B, M>(module, Tensors::Untrained, what)
    }

    fn take_first<B: AutodiffBackend, M: Module<B>>(
        &self,
        module: M,
        which: Tensors,
        what: &str,
    ) -> Result<M, TrainError> {
        let mut flat = module_values(&module, which);
        if self.rank != 0 {
            flat = flat.zeros_like();
        }
        let first = self.all_reduce(flat, ReduceOperation::Sum, what)?;
        Ok(module.map(&mut Assign::<B> {
            flat: first,
            offset: 0,
            which,
        }))
    }
}

/// Which float tensors of a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tensors {
    /// Parameters and running statistics.
    All,
    /// The trained parameters.
    Trained,
    /// The running statistics.
    Untrained,
}

impl Tensors {
    fn take<B: AutodiffBackend, const D: usize>(self, value: &Tensor<B, D>) -> bool {
        match self {
            Tensors::All => true,
            Tensors::Trained => value.is_require_grad(),
            Tensors::Untrained => !value.is_require_grad(),
        }
    }
}

/// The float tensors `which` of `module`, flattened and concatenated in module order.
pub(crate) fn module_values<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    which: Tensors,
) -> Tensor<B::InnerBackend, 1> {
    let mut collect = CollectValues::<B> {
        parts: Vec::new(),
        which,
    };
    module.visit(&mut collect);
    Tensor::cat(collect.parts, 0)
}

struct CollectValues<B: AutodiffBackend> {
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    which: Tensors,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectValues<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if self.which.take(&value) {
            self.parts.push(value.inner().reshape([-1]));
        }
    }
}

/// Replaces the float tensors `which`, in module order, with the next values of `flat`.
struct Assign<B: AutodiffBackend> {
    flat: Tensor<B::InnerBackend, 1>,
    offset: usize,
    which: Tensors,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Assign<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if !self.which.take(&tensor) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
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
        // A parameter visited twice (shared) had its gradient taken once.
        if !self.taken.remove(&param.id) {
            return;
        }
        let shape = param.lazy_shape();
        let end = self.offset + shape.num_elements();
        let grad = self.flat.clone().slice(self.offset..end).reshape(shape);
        self.offset = end;
        self.grads.register::<B::InnerBackend, D>(param.id, grad);
    }
}
