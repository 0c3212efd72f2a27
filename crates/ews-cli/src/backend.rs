//! The backend chosen by cargo features. With several enabled, the first of
//! cuda, vulkan, wgpu, ndarray, flex wins.

#[cfg(feature = "cuda")]
mod chosen {
    /// The inference backend.
    pub type Backend = burn::backend::Cuda;
    /// Its name, as printed to the user.
    pub const NAME: &str = "cuda";
}

#[cfg(all(feature = "vulkan", not(feature = "cuda")))]
mod chosen {
    /// The inference backend.
    pub type Backend = burn::backend::Vulkan;
    /// Its name, as printed to the user.
    pub const NAME: &str = "vulkan";
}

#[cfg(all(feature = "wgpu", not(any(feature = "cuda", feature = "vulkan"))))]
mod chosen {
    /// The inference backend.
    pub type Backend = burn::backend::Wgpu;
    /// Its name, as printed to the user.
    pub const NAME: &str = "wgpu";
}

#[cfg(all(
    feature = "ndarray",
    not(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))
))]
mod chosen {
    /// The inference backend.
    pub type Backend = burn::backend::NdArray;
    /// Its name, as printed to the user.
    pub const NAME: &str = "ndarray (cpu)";
}

#[cfg(all(
    feature = "flex",
    not(any(
        feature = "cuda",
        feature = "vulkan",
        feature = "wgpu",
        feature = "ndarray"
    ))
))]
mod chosen {
    /// The inference backend.
    pub type Backend = burn::backend::Flex;
    /// Its name, as printed to the user.
    pub const NAME: &str = "flex (cpu)";
}

#[cfg(not(any(
    feature = "cuda",
    feature = "vulkan",
    feature = "wgpu",
    feature = "ndarray",
    feature = "flex"
)))]
compile_error!("enable one backend feature of ews-cli: flex, ndarray, cuda, wgpu or vulkan");

pub use chosen::{Backend, NAME};

/// The training backend: the chosen backend with automatic differentiation.
#[allow(dead_code)]
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// The default device of the chosen backend.
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}
