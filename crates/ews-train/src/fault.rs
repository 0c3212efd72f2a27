//! Faults injected by tests: a step whose loss becomes NaN, to check what a run does about
//! it (`on_nonfinite`). Nothing sets them outside tests.

use std::sync::atomic::{AtomicUsize, Ordering};

static NAN_LOSS_AT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Makes the loss of global step `step` (from 0) NaN in every later run of this process;
/// `None` stops it.
pub fn set_nan_loss_at(step: Option<usize>) {
    NAN_LOSS_AT.store(step.unwrap_or(usize::MAX), Ordering::SeqCst);
}

/// Whether the loss of global step `step` is to be made NaN.
pub(crate) fn nan_loss_at(step: usize) -> bool {
    NAN_LOSS_AT.load(Ordering::Relaxed) == step
}
