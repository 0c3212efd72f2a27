//! Recognising a backend by its type at run time, so that generic code (`B: Backend`) can
//! reach kernels written for one concrete backend without an extra trait bound.

use std::any::{Any, TypeId};
use std::sync::OnceLock;

/// Whether our kernels (convolution, batch norm) may replace burn's: `EWS_KERNELS=burn` says
/// no, for comparisons and as an escape hatch.
pub fn fast_kernels_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let value = std::env::var("EWS_KERNELS").unwrap_or_default();
        !value.eq_ignore_ascii_case("burn")
    })
}

/// Whether `A` and `B` are one type.
pub(crate) fn is<A: 'static, B: 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

/// `value` as type `U`, which the caller has checked to be `T` itself.
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> U {
    let boxed: Box<dyn Any> = Box::new(value);
    *boxed
        .downcast::<U>()
        .unwrap_or_else(|_| unreachable!("same_type called with two different types"))
}
