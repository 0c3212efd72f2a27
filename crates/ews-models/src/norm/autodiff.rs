//! The autodiff side of [`NormKernels`]: one graph node per batch norm, whose backward is the
//! closed-form gradient of `K`'s kernels.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::{NormKernels, Operands, Output, Statistics};

/// Backward of a fused batch norm: parents (x, gamma, beta).
#[derive(Debug)]
struct FusedBatchNorm;

/// What the backward needs: the input, statistics, scale, epsilon, and whether the
/// statistics are the batch's own.
type State<K> = (FloatTensor<K>, Statistics<K>, FloatTensor<K>, f64, bool);

impl<K: NormKernels> Backward<K, 3> for FusedBatchNorm {
    type State = State<K>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<K>(&ops.node);
        let (x, stats, gamma, eps, batch_stats) = ops.state;
        let [dx, dgamma, dbeta] = K::norm_backward(x, dy, stats, gamma, eps, batch_stats);
        let [node_x, node_gamma, node_beta] = ops.parents;
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<K>(node.id, grad);
            }
        }
    }
}

/// The fused batch norm on `Autodiff<K, C>`.
pub(super) fn on_kernels<K: NormKernels, C: CheckpointStrategy>(
    operands: Operands<Autodiff<K, C>>,
) -> Option<Output<Autodiff<K, C>>> {
    let Operands {
        x,
        gamma,
        beta,
        given,
        eps,
    } = operands;
    let mut vectors = vec![&gamma.primitive, &beta.primitive];
    if let Some(given) = &given {
        vectors.extend([&given.mean.primitive, &given.var.primitive]);
        // The fused node treats given statistics as constants: tracked ones take the
        // composed path, which passes their gradients on.
        let tracked = |t: &FloatTensor<Autodiff<K, C>>| t.node.clone_if_require_grad().is_some();
        if tracked(&given.mean) || tracked(&given.var) {
            return None;
        }
    }
    if !K::norm_supports(&x.primitive, &vectors) {
        return None;
    }
    let batch_stats = given.is_none();
    let stats = match given {
        Some(given) => Statistics {
            mean: given.mean.primitive,
            var: given.var.primitive,
        },
        None => {
            let (mean, var) = K::norm_stats(x.primitive.clone());
            Statistics { mean, var }
        }
    };
    let affine = [gamma.primitive.clone(), beta.primitive.clone()];
    let parents = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let output = match FusedBatchNorm
        .prepare::<C>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = K::norm_forward(x.primitive.clone(), stats.clone(), affine, eps);
            let state = (
                x.primitive,
                stats.clone(),
                gamma.primitive,
                eps,
                batch_stats,
            );
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(K::norm_forward(x.primitive, stats.clone(), affine, eps))
        }
    };
    let lift = <Autodiff<K, C> as AutodiffBackend>::from_inner;
    let stats = batch_stats.then(|| Statistics {
        mean: lift(stats.mean),
        var: lift(stats.var),
    });
    Some((output, stats))
}
