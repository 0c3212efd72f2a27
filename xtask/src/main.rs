//! Project tasks: `cargo xtask ci` runs every check CI runs.

use std::process::{Command, ExitCode};

/// The checks of `.ci/run`, in order: (description, program, arguments, extra environment).
fn ci_steps() -> Vec<(
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
)> {
    vec![
        (
            "tests (CPU backend)",
            vec!["cargo", "test", "--workspace"],
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
            "the wgpu backend compiles",
            vec![
                "cargo",
                "check",
                "-p",
                "ews-cli",
                "--no-default-features",
                "--features",
                "wgpu",
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
        _ => {
            eprintln!("usage: cargo xtask ci");
            eprintln!("  ci    run the tests and check that the cuda and wgpu backends compile");
            ExitCode::from(2)
        }
    }
}
