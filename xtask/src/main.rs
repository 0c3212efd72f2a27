//! Project tasks.
//!
//! - `cargo xtask ci`: every check CI runs.
//! - `cargo xtask train cifar10|cifar100 [--backend cuda|wgpu|vulkan|cpu] [ews train flags...]`:
//!   builds `ews` in release with the backend's feature and trains with the paper's CIFAR
//!   defaults (CIFAR ResNet-50, EWS, K = 10, lambda = 1, rho = 0.7, 400 epochs).
//! - `cargo xtask bench [--backend B] [--model M,...] [--step plain,ews,pgd10] ...`: times
//!   training steps with `ews bench` and PyTorch side by side (see `bench.rs`).
//! - `cargo xtask experiment NAME [--scale quick|paper] [--backend B] [--data DIR]
//!   [--cifar-c DIR]`: a figure or table of the paper (`experiments/paper/NAME.toml`) with
//!   `ews experiment`: trains its runs (skipping finished ones), evaluates and draws them.
//! - `cargo xtask fuzz [--seconds N] [--seed S] [--out DIR]`: fuzzes every reader of outside
//!   bytes with the release build of `ews-fuzz` (the figures of RELIABILITY.md).

mod bench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The checks of `.ci/run`, in order: (description, command, extra environment).
type Step = (
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
);

fn ci_steps() -> Vec<Step> {
    vec![
        (
            "tests (CPU backend)",
            vec!["cargo", "test", "--workspace"],
            vec![],
        ),
        (
            "JPEG decoding by libjpeg-turbo (needs its headers: libjpeg62-turbo-dev)",
            vec![
                "cargo",
                "test",
                "--workspace",
                "--features",
                "ews-data/libjpeg-turbo",
                "--test",
                "libjpeg",
            ],
            vec![],
        ),
        (
            "the cuda backend compiles",
            vec![
                "cargo",
                "check",
                "-p",
                "ews-cli",
                "--no-default-features",
                "--features",
                "cuda",
            ],
            vec![("CUDARC_CUDA_VERSION", "13000")],
        ),
        (
            "the cuDNN GPU tests compile",
            vec![
                "cargo",
                "check",
                "-p",
                "ews-models",
                "--features",
                "cudnn",
                "--tests",
            ],
            vec![("CUDARC_CUDA_VERSION", "13000")],
        ),
        (
            "one training step on wgpu (Mesa's software Vulkan without a GPU)",
            vec![
                "cargo",
                "test",
                "--profile",
                "smoke",
                "-p",
                "ews-cli",
                "--no-default-features",
                "--features",
                "wgpu",
                "--test",
                "backend_smoke",
            ],
            vec![],
        ),
    ]
}

fn run(args: &[&str], env: &[(&str, &str)]) -> bool {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    matches!(cmd.status(), Ok(s) if s.success())
}

/// The backend to use when none is named: CUDA where an NVIDIA driver answers, else CPU.
fn default_backend() -> &'static str {
    let nvidia = Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success());
    if nvidia { "cuda" } else { "cpu" }
}

fn feature_of(backend: &str) -> Option<&'static str> {
    match backend {
        "cuda" => Some("cuda"),
        "wgpu" => Some("wgpu"),
        "vulkan" => Some("vulkan"),
        "cpu" | "flex" => Some("flex"),
        "ndarray" => Some("ndarray"),
        _ => None,
    }
}

/// The paper's Table 1 EWS run for `dataset` (standard augmentation): the experiment file,
/// which holds the release's hyper-parameters (experiments/README.md lists their sources).
fn paper_flags(dataset: &str) -> Vec<String> {
    let config = workspace_root().join(format!("experiments/table1-{dataset}-standard-ews.toml"));
    vec!["--config".into(), config.display().to_string()]
}

/// Builds `ews` in release with the backend's cargo feature; returns the binary's path.
fn build_ews(backend: &str) -> Result<PathBuf, ExitCode> {
    let Some(feature) = feature_of(backend) else {
        eprintln!("xtask: unknown backend `{backend}` (cuda, wgpu, vulkan, cpu, ndarray)");
        return Err(ExitCode::from(2));
    };
    // EWS_LIBJPEG_TURBO=1: JPEG files decoded by the system's libjpeg-turbo (Pillow's
    // pixels, window decoding for RandomResizedCrop; BENCHMARKS.md).
    let features = match std::env::var("EWS_LIBJPEG_TURBO").as_deref() {
        Ok("1") => format!("{feature},libjpeg-turbo"),
        _ => feature.to_string(),
    };
    eprintln!("xtask: building ews with cargo features `{features}`");
    let mut build = Command::new("cargo");
    build.args([
        "build",
        "--release",
        "-p",
        "ews-cli",
        "--no-default-features",
        "--features",
        &features,
    ]);
    if feature == "cuda" && std::env::var_os("CUDARC_CUDA_VERSION").is_none() {
        eprintln!(
            "xtask: CUDARC_CUDA_VERSION unset, binding CUDA 13.0 (set it for another version)"
        );
        build.env("CUDARC_CUDA_VERSION", "13000");
    }
    if !matches!(build.status(), Ok(s) if s.success()) {
        eprintln!("xtask: the build failed");
        return Err(ExitCode::FAILURE);
    }
    Ok(workspace_root().join("target/release/ews"))
}

/// The workspace: the working directory when it is one (a prebuilt xtask carried to another
/// machine), else where xtask was compiled.
fn workspace_root() -> PathBuf {
    if let Ok(dir) = std::env::current_dir()
        && dir.join("xtask/Cargo.toml").is_file()
    {
        return dir;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run_bench(args: &[String]) -> ExitCode {
    let plan = match bench::parse(args, default_backend()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("xtask bench: {e}");
            return ExitCode::from(2);
        }
    };
    // A prebuilt binary (e.g. carried to a GPU machine without cargo) skips the build.
    let ews = match &plan.ews {
        Some(path) => Ok(path.clone()),
        None => build_ews(&plan.backend),
    };
    match ews {
        Ok(ews) => bench::run(&plan, &ews, &workspace_root()),
        Err(code) => code,
    }
}

fn train(args: &[String]) -> ExitCode {
    let Some(dataset) = args
        .first()
        .filter(|d| ["cifar10", "cifar100"].contains(&d.as_str()))
    else {
        eprintln!(
            "usage: cargo xtask train cifar10|cifar100 [--backend cuda|wgpu|vulkan|cpu] [ews train flags...]"
        );
        return ExitCode::from(2);
    };
    let mut backend = None;
    let mut extra = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        if a == "--backend" {
            backend = rest.next().cloned();
        } else if let Some(b) = a.strip_prefix("--backend=") {
            backend = Some(b.to_string());
        } else {
            extra.push(a.clone());
        }
    }
    let backend = backend.unwrap_or_else(|| default_backend().to_string());
    eprintln!("xtask train: {dataset} with the {backend} backend");
    let ews = match build_ews(&backend) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let mut flags = paper_flags(dataset);
    if !extra
        .iter()
        .any(|a| a == "--out" || a.starts_with("--out="))
    {
        flags.extend(["--out".to_string(), format!("runs/{dataset}-ews-resnet50")]);
    }
    // Later flags win in `ews train`, so the user's flags override the paper defaults.
    flags.extend(extra);
    eprintln!("xtask train: {} train {}", ews.display(), flags.join(" "));
    match Command::new(&ews).arg("train").args(&flags).status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// The experiment files `cargo xtask experiment` knows (experiments/paper/*.toml).
fn experiment_names() -> Vec<String> {
    let dir = workspace_root().join("experiments/paper");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(String::from)
        })
        .collect();
    names.sort();
    names
}

/// The real CIFAR-10 images of the quick scale: `datasets/cifar10-jpeg`, unpacked once from
/// the JPEG copy in `../shared/datasets` where it is there.
fn quick_data() -> Option<PathBuf> {
    let root = workspace_root();
    let dir = root.join("datasets/cifar10-jpeg");
    if dir.join("train").is_dir() {
        return Some(dir);
    }
    let archive = root.join("../shared/datasets/cifar10-jpeg.tar.gz");
    if !archive.is_file() {
        return None;
    }
    let partial = root.join("datasets/.cifar10-jpeg.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).ok()?;
    eprintln!(
        "xtask: unpacking {} into {}",
        archive.display(),
        dir.display()
    );
    let archive_s = archive.display().to_string();
    let partial_s = partial.display().to_string();
    if !run(&["tar", "xzf", &archive_s, "-C", &partial_s], &[]) {
        eprintln!("xtask: unpacking {} failed", archive.display());
        return None;
    }
    std::fs::rename(&partial, &dir).ok()?;
    Some(dir)
}

/// `cargo xtask experiment NAME [--scale S] [--backend B] [ews experiment flags...]`.
fn experiment(args: &[String]) -> ExitCode {
    let names = experiment_names();
    let Some(name) = args.first().filter(|n| names.contains(n)) else {
        eprintln!(
            "usage: cargo xtask experiment NAME [--scale quick|paper] [--backend cuda|wgpu|vulkan|cpu] [--data DIR] [--cifar-c DIR] [--cifar100-c DIR] [--root DIR]\n       NAME: {} (runs and results go to runs/experiments in the workspace)",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut backend = None;
    let mut extra = Vec::new();
    let mut rest = args[1..].iter();
    let here = std::env::current_dir().unwrap_or_default();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--backend" => backend = rest.next().cloned(),
            // ews runs in the workspace root: folders named relative to here go as absolute.
            "--data" | "--cifar-c" | "--cifar100-c" | "--root" => {
                extra.push(a.clone());
                if let Some(path) = rest.next() {
                    extra.push(here.join(path).display().to_string());
                }
            }
            _ => extra.push(a.clone()),
        }
    }
    if !extra.iter().any(|a| a == "--data")
        && let Some(data) = quick_data()
    {
        extra.extend(["--data".to_string(), data.display().to_string()]);
    }
    let backend = backend.unwrap_or_else(|| default_backend().to_string());
    let ews = match build_ews(&backend) {
        Ok(path) => path,
        Err(code) => return code,
    };
    let file = workspace_root().join(format!("experiments/paper/{name}.toml"));
    let mut command = Command::new(&ews);
    command
        .arg("experiment")
        .arg(&file)
        .args(&extra)
        .current_dir(workspace_root());
    eprintln!(
        "xtask experiment: {} experiment {} {}",
        ews.display(),
        file.display(),
        extra.join(" ")
    );
    match command.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Builds and runs `ews-fuzz` in release mode with `flags` (its `--help` lists them);
/// `EWS_LIBJPEG_TURBO=1` fuzzes the libjpeg-turbo decoder as well.
fn fuzz(flags: &[String]) -> ExitCode {
    let mut cargo = Command::new("cargo");
    cargo.args(["run", "--release", "-p", "ews-fuzz"]);
    if std::env::var("EWS_LIBJPEG_TURBO").as_deref() == Ok("1") {
        cargo.args(["--features", "libjpeg-turbo"]);
    }
    let status = cargo
        .arg("--")
        .args(flags)
        .current_dir(workspace_root())
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => {
            for (what, cmd, env) in ci_steps() {
                eprintln!("==> {what}: {}", cmd.join(" "));
                if !run(&cmd, &env) {
                    eprintln!("xtask ci: {what} failed");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Some("train") => train(&args[1..]),
        Some("bench") => run_bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("experiment") => experiment(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask ci | cargo xtask train cifar10|cifar100 [--backend B] [ews train flags...]\n       cargo xtask experiment NAME [--scale quick|paper] [--backend B] (experiments/paper/NAME.toml)\n       cargo xtask fuzz [--seconds N] [--seed S] [--out DIR]\n       {}",
                bench::USAGE
            );
            ExitCode::from(2)
        }
    }
}
