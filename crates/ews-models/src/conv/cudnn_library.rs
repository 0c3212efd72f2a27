//! Finding and loading libcudnn, and deciding once per process whether the convolutions use
//! it. Built with or without the CUDA backend (it needs only the loader), so its tests run on
//! every machine.
//!
//! cudarc opens libcudnn through the loader's search path on first use and panics where it
//! finds none, so the library is looked for here first: on the loader path, then in the
//! folders cuDNN is usually installed in (PyTorch's pip packages put it in
//! `site-packages/nvidia/cudnn/lib`, which is on no search path). A library found there is
//! opened by its full path; cudarc's later open by name then finds the loaded copy.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file name (soname) of cuDNN 9, the version cudarc's bindings are made for.
const SONAME: &str = "libcudnn.so.9";

/// cuDNN 9's sub-libraries, which libcudnn opens on demand; opened ahead, in dependency
/// order, when libcudnn is not on the loader path.
const SUBLIBRARIES: [&str; 9] = [
    "libcudnn_graph.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
    "libcudnn_engines_tensor_ir.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_ext.so.9",
];

/// Whether the CUDA backend's convolutions run on cuDNN, decided once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudnnStatus {
    /// cuDNN runs them.
    Enabled {
        /// cuDNN's version, e.g. `9.10.2`.
        version: String,
        /// Where libcudnn was loaded from, where the process's memory map says.
        path: Option<PathBuf>,
    },
    /// burn's kernels run them, for this reason.
    Disabled(String),
}

impl CudnnStatus {
    /// Whether cuDNN runs the convolutions.
    pub fn is_enabled(&self) -> bool {
        matches!(self, Self::Enabled { .. })
    }

    /// One line for `ews backend` and benchmark labels.
    pub fn describe(&self) -> String {
        match self {
            Self::Enabled { version, path } => {
                let from = path.as_deref().map(Path::display);
                let from = from.map(|p| format!(", {p}")).unwrap_or_default();
                format!("cuDNN {version}{from}")
            }
            Self::Disabled(why) => format!("burn's conv2d (cuDNN not used: {why})"),
        }
    }
}

/// The process's decision: the first call loads the library, reads its `version` (as
/// `major.minor.patch` from cuDNN's version number) and runs `probe` (a tiny convolution on the
/// device), and prints one warning line where cuDNN cannot be used.
pub fn status_or_probe(
    version: impl FnOnce() -> usize,
    probe: impl FnOnce() -> Result<(), String>,
) -> &'static CudnnStatus {
    static STATUS: OnceLock<CudnnStatus> = OnceLock::new();
    STATUS.get_or_init(|| {
        let status = decide(version, probe);
        if let CudnnStatus::Disabled(why) = &status
            && !switched_off()
        {
            eprintln!("warning: convolutions fall back to burn's CUDA kernels: {why}");
        }
        status
    })
}

/// Whether `EWS_CUDNN=off` (or `0`, `false`, `no`) asks for burn's kernels.
pub fn switched_off() -> bool {
    is_off(&std::env::var("EWS_CUDNN").unwrap_or_default())
}

fn is_off(value: &str) -> bool {
    ["off", "0", "false", "no"]
        .iter()
        .any(|off| value.eq_ignore_ascii_case(off))
}

/// Loads the library, checks its version and runs the probe: cuDNN is used where all three
/// succeed.
pub fn decide(
    version: impl FnOnce() -> usize,
    probe: impl FnOnce() -> Result<(), String>,
) -> CudnnStatus {
    if switched_off() {
        return CudnnStatus::Disabled("EWS_CUDNN=off".into());
    }
    let loaded = without_panic_output(|| {
        load()?;
        version_name(version())
    });
    let version = match loaded {
        Ok(version) => version,
        Err(why) => return CudnnStatus::Disabled(why),
    };
    let mapped = loaded_paths();
    if mapped.len() > 1 {
        let list: Vec<String> = mapped.iter().map(|p| p.display().to_string()).collect();
        return CudnnStatus::Disabled(format!(
            "two copies of libcudnn are loaded ({}); put the cuDNN 9 folder first on \
             LD_LIBRARY_PATH",
            list.join(", ")
        ));
    }
    match without_panic_output(probe) {
        Ok(()) => CudnnStatus::Enabled {
            version,
            path: mapped.into_iter().next(),
        },
        Err(why) => CudnnStatus::Disabled(format!(
            "cuDNN {version} failed its self-test: {}",
            shortened(&why)
        )),
    }
}

/// `message` cut to its first 240 characters (cudarc's panics list every file name it tried).
fn shortened(message: &str) -> String {
    const KEEP: usize = 240;
    match message.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message.to_string(),
    }
}

/// Runs `f`, turning a panic (cudarc panics on missing libraries and symbols) into an error
/// without printing it. The error is the first panic of any thread meanwhile (cubecl's device
/// thread panics first where there is no CUDA driver, and `f` only sees a closed channel).
fn without_panic_output<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    // The hook is process-wide: one swap at a time, so the user's hook always comes back.
    static SWAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let first = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let record = first.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        let mut first = record.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(message);
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    let first = first.lock().unwrap_or_else(|e| e.into_inner()).take();
    result.unwrap_or_else(|_| Err(first.unwrap_or_else(|| "unknown panic".into())))
}

/// cuDNN's version number (`cudnnGetVersion`) as `major.minor.patch`, checked to be 9.x.
fn version_name(number: usize) -> Result<String, String> {
    // cuDNN 9 encodes major * 10000 + minor * 100 + patch; cuDNN 8 major * 1000 + ...
    let (major, minor, patch) = if number >= 10_000 {
        (number / 10_000, number / 100 % 100, number % 100)
    } else {
        (number / 1_000, number / 100 % 10, number % 100)
    };
    if major != 9 {
        return Err(format!(
            "found cuDNN {major}.{minor}.{patch}; the bindings need cuDNN 9 (libcudnn.so.9)"
        ));
    }
    Ok(format!("{major}.{minor}.{patch}"))
}

/// Opens libcudnn: through the loader path, else from the first usual install folder that
/// holds it.
pub fn load() -> Result<(), String> {
    // SAFETY: opening a shared library runs its initialisers; libcudnn's are plain.
    if let Ok(library) = unsafe { libloading::Library::new(SONAME) } {
        std::mem::forget(library);
        return Ok(());
    }
    let searched = install_folders();
    let holds = |dir: &PathBuf| dir.join(SONAME).is_file();
    let Some(folder) = searched
        .iter()
        .find(|dir| holds(dir))
        .cloned()
        .or_else(|| python_cudnn_folder().filter(holds))
    else {
        return Err(format!(
            "{SONAME} is not on the loader path (LD_LIBRARY_PATH) nor in {} other folders \
             (CUDNN_PATH, CUDA_PATH, Python's nvidia/cudnn/lib); install cuDNN 9 (e.g. \
             `pip install nvidia-cudnn-cu13`) or add its lib folder to LD_LIBRARY_PATH",
            searched.len() + 1
        ));
    };
    for sublibrary in SUBLIBRARIES {
        // A sub-library that fails here is reported by the self-test, where it matters.
        let _ = open_global(&folder.join(sublibrary));
    }
    open_global(&folder.join(SONAME)).map_err(|e| format!("{}: {e}", folder.join(SONAME).display()))
}

/// Opens `path` for the whole process and keeps it open.
fn open_global(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    // SAFETY: as in `load`.
    let library = unsafe {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL)
    };
    #[cfg(not(unix))]
    // SAFETY: as in `load`.
    let library = unsafe { libloading::Library::new(path) };
    library.map(std::mem::forget).map_err(|e| e.to_string())
}

/// The folders cuDNN is usually installed in, most specific first.
pub fn install_folders() -> Vec<PathBuf> {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let mut folders = Vec::new();
    for root in ["CUDNN_PATH", "CUDNN_HOME", "CUDA_PATH", "CUDA_HOME"]
        .iter()
        .filter_map(|name| env(name))
        .chain([PathBuf::from("/usr/local/cuda")])
    {
        folders.extend([root.join("lib"), root.join("lib64")]);
    }
    // Python installs: virtual and conda environments, the prefixes of the `bin` folders on
    // PATH, pyenv's versions, the user's and the system's.
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|dir| dir.ends_with("bin"))
        .filter_map(|dir| dir.parent().map(Path::to_path_buf));
    let pyenv = env("PYENV_ROOT")
        .or_else(|| env("HOME").map(|home| home.join(".pyenv")))
        .and_then(|root| std::fs::read_dir(root.join("versions")).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path());
    let prefixes = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|name| env(name))
        .chain(on_path)
        .chain(pyenv)
        .chain(env("HOME").map(|home| home.join(".local")))
        .chain(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    for prefix in prefixes {
        for python in python_folders(&prefix) {
            for packages in ["site-packages", "dist-packages"] {
                folders.push(python.join(packages).join("nvidia/cudnn/lib"));
            }
        }
    }
    folders.push(PathBuf::from(
        "/usr/lib/python3/dist-packages/nvidia/cudnn/lib",
    ));
    folders.push(PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    folders
}

/// Where `python3` itself finds the `nvidia.cudnn` package (PyTorch's pip dependency), as a
/// last resort: asked once, given 10 seconds.
fn python_cudnn_folder() -> Option<PathBuf> {
    let mut child = std::process::Command::new("python3")
        .args(["-c", "import nvidia.cudnn as c; print(list(c.__path__)[0])"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let start = std::time::Instant::now();
    while child.try_wait().ok()?.is_none() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().ok()?;
    let package = String::from_utf8(output.stdout).ok()?;
    let package = package.trim();
    (output.status.success() && !package.is_empty()).then(|| PathBuf::from(package).join("lib"))
}

/// `prefix/lib*/python3*` folders.
fn python_folders(prefix: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
            .map(|entry| entry.path())
            .collect();
        pythons.sort();
        found.extend(pythons);
    }
    found
}

/// The distinct files libcudnn (not its sub-libraries) is mapped from in this process, from
/// `/proc/self/maps`: one once loaded, two where cudarc's open by name found another copy.
fn loaded_paths() -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libcudnn.so"))
        })
        .map(|path| std::fs::canonicalize(&path).unwrap_or(path))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switched_off_status_names_the_variable() {
        let status = CudnnStatus::Disabled("EWS_CUDNN=off".into());
        assert!(!status.is_enabled());
        assert_eq!(
            status.describe(),
            "burn's conv2d (cuDNN not used: EWS_CUDNN=off)"
        );
        let on = CudnnStatus::Enabled {
            version: "9.10.2".into(),
            path: Some("/x/libcudnn.so.9".into()),
        };
        assert_eq!(on.describe(), "cuDNN 9.10.2, /x/libcudnn.so.9");
    }

    #[test]
    fn install_folders_include_python_packages_and_cuda() {
        let folders = install_folders();
        assert!(folders.contains(&PathBuf::from("/usr/local/cuda/lib64")));
        assert!(
            folders
                .iter()
                .any(|f| f.ends_with("nvidia/cudnn/lib") || f.starts_with("/usr/lib/python3"))
        );
    }

    #[test]
    fn versions_other_than_9_are_refused_by_name() {
        assert_eq!(version_name(91002), Ok("9.10.2".to_string()));
        assert_eq!(version_name(90100), Ok("9.1.0".to_string()));
        let old = version_name(8907).unwrap_err();
        assert!(
            old.contains("found cuDNN 8.9.7") && old.contains("cuDNN 9"),
            "{old}"
        );
        assert!(
            version_name(100000)
                .unwrap_err()
                .contains("found cuDNN 10.0.0")
        );
    }

    #[test]
    fn long_failure_messages_are_cut() {
        assert_eq!(shortened("short"), "short");
        let long = "é".repeat(300);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), 243);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn off_values_switch_cudnn_off() {
        for off in ["off", "OFF", "0", "false", "no"] {
            assert!(is_off(off), "{off}");
        }
        for on in ["", "on", "1", "auto"] {
            assert!(!is_off(on), "{on}");
        }
    }

    #[test]
    fn without_libcudnn_the_decision_is_burns_kernels_with_a_hint() {
        if load().is_ok() {
            println!("skipped: libcudnn is installed on this machine");
            return;
        }
        let probed = std::cell::Cell::new(false);
        let status = decide(
            || unreachable!("no version without a library"),
            || {
                probed.set(true);
                Ok(())
            },
        );
        assert!(!probed.get(), "no self-test without a library");
        assert!(loaded_paths().is_empty(), "{:?}", loaded_paths());
        let CudnnStatus::Disabled(why) = &status else {
            panic!("cuDNN enabled without a library: {status:?}");
        };
        if !switched_off() {
            assert!(
                why.contains("libcudnn.so.9") && why.contains("LD_LIBRARY_PATH"),
                "{why}"
            );
        }
        assert!(
            status
                .describe()
                .starts_with("burn's conv2d (cuDNN not used: ")
        );
    }

    #[test]
    fn with_libcudnn_present_the_version_is_read_and_a_failed_self_test_named() {
        if let Err(why) = load() {
            println!("skipped: no libcudnn here ({why})");
            return;
        }
        let version = || {
            // SAFETY: cudnnGetVersion takes nothing and returns a size_t.
            unsafe {
                let library = libloading::Library::new(SONAME).expect("loaded above");
                let get = library
                    .get::<unsafe extern "C" fn() -> usize>(b"cudnnGetVersion")
                    .expect("cudnnGetVersion");
                get()
            }
        };
        let status = decide(version, || Err("no device in this test".into()));
        let paths = loaded_paths();
        println!("{status:?}, mapped from {paths:?}");
        assert_eq!(paths.len(), 1, "{paths:?}");
        let CudnnStatus::Disabled(why) = status else {
            panic!("enabled without a self-test");
        };
        if !switched_off() {
            assert!(why.starts_with("cuDNN 9."), "{why}");
            assert!(
                why.ends_with("failed its self-test: no device in this test"),
                "{why}"
            );
        }
    }

    #[test]
    fn a_panicking_probe_becomes_an_error() {
        let result: Result<(), String> = without_panic_output(|| panic!("no libcudnn"));
        assert_eq!(result, Err("no libcudnn".to_string()));
    }

    #[test]
    fn the_first_panic_of_any_thread_is_the_error() {
        let result: Result<(), String> = without_panic_output(|| {
            let worker = std::thread::spawn(|| panic!("no CUDA driver")).join();
            assert!(worker.is_err());
            panic!("channel closed");
        });
        assert_eq!(result, Err("no CUDA driver".to_string()));
    }
}
