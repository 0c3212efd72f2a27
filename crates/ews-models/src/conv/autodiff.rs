//! The autodiff side of [`ConvKernels`]: `Autodiff<K>` records the convolution as one graph
//! node whose backward calls `K`'s backward-data, backward-filter and bias kernels.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::{ConvGeometry, ConvKernels, Operands};
use crate::dispatch::{is, same_type};

/// Runs on `K`'s kernels if `B` is `Autodiff<K, C>` and the kernels take the operands.
pub(super) fn on_kernels<B: Backend, K: ConvKernels, C: CheckpointStrategy>(
    operands: Operands<B>,
    geometry: &ConvGeometry,
) -> Result<FloatTensor<B>, Operands<B>> {
    if !is::<B, Autodiff<K, C>>() {
        return Err(operands);
    }
    let operands: Operands<Autodiff<K, C>> = same_type(operands);
    let supported = K::conv_supports(
        &operands.x.primitive,
        &operands.weight.primitive,
        operands.bias.as_ref().map(|b| &b.primitive),
        geometry,
    );
    if !supported {
        return Err(same_type(operands));
    }
    Ok(same_type(conv2d::<K, C>(operands, *geometry)))
}

/// Backward of a convolution without bias: parents (x, weight).
#[derive(Debug)]
struct ConvNoBias;

/// Backward of a convolution with bias: parents (x, weight, bias).
#[derive(Debug)]
struct ConvWithBias;

/// Gradients of x and weight, each computed only where its parent tracks one.
fn input_and_weight_grads<K: ConvKernels>(
    [grad_x, grad_weight]: [Option<NodeId>; 2],
    (x, weight): (NodeId, NodeId),
    dy: &FloatTensor<K>,
    geometry: &ConvGeometry,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<FloatTensor<K>>(x);
    let weight = checkpointer.retrieve_node_output::<FloatTensor<K>>(weight);
    if let Some(id) = grad_x {
        grads.register::<K>(id, K::conv_backward_data(weight, dy.clone(), geometry));
    }
    if let Some(id) = grad_weight {
        grads.register::<K>(id, K::conv_backward_filter(x, dy.clone(), geometry));
    }
}

impl<K: ConvKernels> Backward<K, 2> for ConvNoBias {
    type State = (NodeId, NodeId, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let dy = grads.consume::<K>(&ops.node);
        let (x, weight, geometry) = ops.state;
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        input_and_weight_grads::<K>(parents, (x, weight), &dy, &geometry, grads, cp);
    }
}

impl<K: ConvKernels> Backward<K, 3> for ConvWithBias {
    type State = (NodeId, NodeId, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let dy = grads.consume::<K>(&ops.node);
        let (x, weight, geometry) = ops.state;
        let [grad_x, grad_weight, grad_bias] = ops.parents.map(|node| node.map(|node| node.id));
        if let Some(id) = grad_bias {
            grads.register::<K>(id, K::conv_backward_bias(dy.clone(), &geometry));
        }
        input_and_weight_grads::<K>(
            [grad_x, grad_weight],
            (x, weight),
            &dy,
            &geometry,
            grads,
            cp,
        );
    }
}

/// The convolution on `Autodiff<K, C>`: forward on `K`'s kernels, recorded for backward.
fn conv2d<K: ConvKernels, C: CheckpointStrategy>(
    operands: Operands<Autodiff<K, C>>,
    geometry: ConvGeometry,
) -> FloatTensor<Autodiff<K, C>> {
    let Operands { x, weight, bias } = operands;
    match bias {
        None => match ConvNoBias
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), geometry);
                let y = K::conv_forward(x.primitive, weight.primitive, None, &geometry);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(K::conv_forward(
                x.primitive,
                weight.primitive,
                None,
                &geometry,
            )),
        },
        Some(bias) => match ConvWithBias
            .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), geometry);
                let y = K::conv_forward(
                    x.primitive,
                    weight.primitive,
                    Some(bias.primitive),
                    &geometry,
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(K::conv_forward(
                x.primitive,
                weight.primitive,
                Some(bias.primitive),
                &geometry,
            )),
        },
    }
}
