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

/// The training backend with burn-autodiff's gradient checkpointing (`--checkpointing`):
/// memory-bound operations (activations, additions, masks) are recomputed in the backward
/// pass rather than kept; convolutions and batch norms keep what they need.
pub type CheckpointedTrainBackend = burn::backend::Autodiff<
    Backend,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;

/// The default device of the chosen backend.
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}

/// Memory of the chosen backend's device: the allocator's reserved bytes on GPU backends
/// (sampled; cubecl keeps no peak), the process's resident memory on CPU backends.
pub fn memory_probe() -> Box<dyn ews_train::bench::MemoryProbe> {
    #[cfg(feature = "cuda")]
    return Box::new(gpu::CubeMemory::<cubecl::cuda::CudaRuntime>::new(
        &Default::default(),
    ));
    #[cfg(all(any(feature = "wgpu", feature = "vulkan"), not(feature = "cuda")))]
    return Box::new(gpu::CubeMemory::<cubecl::wgpu::WgpuRuntime>::new(
        &Default::default(),
    ));
    #[cfg(not(any(feature = "cuda", feature = "wgpu", feature = "vulkan")))]
    Box::new(ews_train::bench::ProcessMemory)
}

/// `--cudnn-benchmark`: time cuDNN's algorithms per shape (CUDA builds; a warning elsewhere).
pub fn set_cudnn_benchmark(on: bool) {
    #[cfg(feature = "cuda")]
    ews_models::conv::cudnn::set_benchmark(on);
    #[cfg(not(feature = "cuda"))]
    if on {
        eprintln!("warning: --cudnn-benchmark has no effect on the {NAME} backend");
    }
}

/// Start-up settings of the GPU runtime; a no-op on CPU backends.
pub fn configure_runtime() {
    #[cfg(any(feature = "cuda", feature = "wgpu", feature = "vulkan"))]
    gpu::configure_caches();
    keep_freed_tensor_memory();
}

/// Lets glibc's allocator reuse freed tensor buffers of up to 32 MiB instead of returning
/// them to the system and mapping fresh zeroed pages for the next batch: on the CPU backends
/// every activation of a step is such a buffer, and the page faults and TLB flushes cost
/// ~15% of a training step (BENCHMARKS.md). A `MALLOC_MMAP_THRESHOLD_` or
/// `MALLOC_TRIM_THRESHOLD_` in the environment wins.
fn keep_freed_tensor_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        if set("MALLOC_MMAP_THRESHOLD_") || set("MALLOC_TRIM_THRESHOLD_") {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; called once at start-up, before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

#[cfg(any(feature = "cuda", feature = "wgpu", feature = "vulkan"))]
mod gpu {
    use std::path::PathBuf;

    use cubecl::Runtime;
    use cubecl::client::ComputeClient;
    use cubecl::config::autotune::AutotuneLevel;
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    use ews_train::bench::MemoryProbe;

    /// The memory statistics of a cubecl runtime's device.
    pub struct CubeMemory<R: Runtime> {
        client: ComputeClient<R>,
    }

    impl<R: Runtime> CubeMemory<R> {
        pub fn new(device: &R::Device) -> Self {
            Self {
                client: R::client(device),
            }
        }
    }

    impl<R: Runtime> MemoryProbe for CubeMemory<R> {
        fn kind(&self) -> String {
            "device memory reserved by cubecl's allocator".into()
        }
        fn current(&self) -> Option<u64> {
            self.client.memory_usage().ok().map(|u| u.bytes_reserved)
        }
        fn peak(&self) -> Option<u64> {
            None
        }
    }

    /// Where compiled kernels and autotune results persist between runs: `EWS_KERNEL_CACHE`,
    /// else `$XDG_CACHE_HOME/ews/cubecl`, else `~/.cache/ews/cubecl`.
    pub fn cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("EWS_KERNEL_CACHE") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("ews").join("cubecl"))
    }

    /// cubecl's autotune effort unless `CUBECL_AUTOTUNE_LEVEL` says otherwise: minimal on
    /// CUDA, where cuDNN runs the convolutions and only matmuls, reductions and fused
    /// element-wise kernels are left to tune; cubecl's default elsewhere (and with
    /// `EWS_CUDNN=off`).
    fn default_autotune_level() -> AutotuneLevel {
        let cudnn_off = std::env::var("EWS_CUDNN").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
        if cfg!(feature = "cuda") && !cudnn_off {
            AutotuneLevel::Minimal
        } else {
            AutotuneLevel::default()
        }
    }

    /// Whether a cubecl or burn config file sits in the working directory or above it
    /// (cubecl's own search): then the user's settings stand.
    fn user_config_present() -> bool {
        let Ok(mut dir) = std::env::current_dir() else {
            return false;
        };
        loop {
            for name in ["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"] {
                if dir.join(name).is_file() {
                    return true;
                }
            }
            if !dir.pop() {
                return false;
            }
        }
    }

    /// Persists autotune results and compiled kernels in [`cache_dir`], so a second run
    /// skips the tuning and NVRTC compilation of the first (cubecl's defaults tie the tuning
    /// cache to the nearest cargo project and keep compiled kernels in memory only).
    /// `EWS_KERNEL_CACHE=off` or a cubecl/burn config file leaves cubecl's settings alone.
    pub fn configure_caches() {
        if std::env::var_os("EWS_KERNEL_CACHE").is_some_and(|v| v == "off") || user_config_present()
        {
            return;
        }
        let Some(dir) = cache_dir() else {
            return;
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!(
                "ews: kernel cache {} unusable ({e}); tuning and compiling from scratch",
                dir.display()
            );
            return;
        }
        let mut config = CubeClRuntimeConfig::default().override_from_env();
        if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
            config.autotune.level = default_autotune_level();
        }
        config.autotune.cache = CacheConfig::File(dir.clone());
        config.compilation.cache = Some(CacheConfig::File(dir));
        CubeClRuntimeConfig::set(config);
    }
}
