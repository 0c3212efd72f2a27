//! Recognising a backend by its type at run time, so that generic code (`B: Backend`) can
//! reach kernels written for one concrete backend without an extra trait bound.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::sync::OnceLock;

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};

thread_local! {
    static BURN_KERNELS_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Whether our kernels (convolution, batch norm) may replace burn's: `EWS_KERNELS=burn` says
/// no, for comparisons and as an escape hatch, and so does [`with_burn_kernels`] on its
/// thread.
pub fn fast_kernels_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| {
        let value = std::env::var("EWS_KERNELS").unwrap_or_default();
        !value.eq_ignore_ascii_case("burn")
    });
    enabled && !BURN_KERNELS_HERE.with(Cell::get)
}

/// Runs `f` with burn's own kernels on this thread (ours are back afterwards, also on a
/// panic): for side-by-side comparisons in one process.
pub fn with_burn_kernels<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BURN_KERNELS_HERE.with(|here| here.set(self.0));
        }
    }
    let _restore = Restore(BURN_KERNELS_HERE.with(|here| here.replace(true)));
    f()
}

/// Whether `A` and `B` are one type.
pub(crate) fn is<A: 'static, B: 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

/// Whether `B` is `K` or `K` under autodiff (with either checkpoint strategy): the backends
/// that reach `K`'s kernels.
pub(crate) fn is_or_wraps<B: Backend, K: Backend>() -> bool {
    is::<B, K>()
        || is::<B, Autodiff<K, NoCheckpointing>>()
        || is::<B, Autodiff<K, BalancedCheckpointing>>()
}

/// A float primitive as a tensor.
pub(crate) fn float<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// `value` as type `U`, which the caller has checked to be `T` itself.
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("same_type called with two different types"))
}
