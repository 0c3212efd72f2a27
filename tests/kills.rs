//! Kill anywhere: `ews train` SIGKILLed at many moments (inside steps, evaluation,
//! checkpoint and metrics writes alike) and resumed each time ends as the uninterrupted run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::metrics;

mod common;

/// Kills in CI; `EWS_KILLS=N` asks for more (RELIABILITY.md's long run).
const KILLS: usize = 20;

fn train(run: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ews"));
    command
        .args([
            "train",
            "--out",
            run.to_str().unwrap(),
            "--resume",
            "--quiet",
        ])
        .args([
            "--model",
            "wrn-10-1",
            "--synthetic-size",
            "64,16",
            "--image-size",
            "16",
        ])
        .args(["--batch-size", "16", "--epochs", "6", "--log-every", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The run's best or last weights as safetensors bytes (free of random parameter ids).
fn weights(run: &Path, which: &str) -> Vec<u8> {
    let out = run.with_extension(format!("{which}.safetensors"));
    let status = Command::new(env!("CARGO_BIN_EXE_ews"))
        .args(["export", "--run", run.to_str().unwrap(), "--weights", which])
        .args(["--out", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let kills: usize = std::env::var("EWS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let started = Instant::now();
    let out = train(&whole).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = started.elapsed();

    // Kill after a delay drawn (seeded) over the whole run's span, resume, repeat.
    let killed = dir.path().join("killed");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut done = 0;
    while done < kills {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = span.mul_f64((state >> 11) as f64 / (1u64 << 53) as f64);
        let mut child = train(&killed).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            // It finished before the kill (or failed): a failure is a bug.
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::remove_dir_all(&killed).unwrap();
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        done += 1;
    }
    let out = train(&killed).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metrics(&killed), metrics(&whole));
    for which in ["best", "last"] {
        assert!(
            weights(&killed, which) == weights(&whole, which),
            "{which} weights differ"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(600));
}
