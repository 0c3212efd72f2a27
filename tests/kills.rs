//! Kill anywhere: `ews train` SIGKILLed at many moments (inside steps, evaluation,
//! checkpoint and metrics writes alike) and resumed each time ends as the uninterrupted run;
//! so do `ews corrupt` (the same files) and `ews download` (the same bytes, md5-checked).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::metrics;

mod common;

/// Kills in CI; `EWS_KILLS=N` asks for more (RELIABILITY.md's long run).
const KILLS: usize = 20;

fn kills() -> usize {
    std::env::var("EWS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS)
}

/// Runs `command` to its end, which must be a success; how long it took.
fn timed_success(mut command: Command) -> Duration {
    let started = Instant::now();
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// Starts `command` and SIGKILLs it after a delay drawn (seeded) over `span`, `kills` times.
/// A process that ends before its kill must have succeeded; `finished` then undoes its
/// work so that the next start has something to kill.
fn kill_at_random_moments(
    kills: usize,
    span: Duration,
    command: impl Fn() -> Command,
    finished: impl Fn(),
) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut done = 0;
    while done < kills {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = span.mul_f64((state >> 11) as f64 / (1u64 << 53) as f64);
        let mut child = command().spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            finished();
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        done += 1;
    }
}

fn train(run: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ews"));
    command
        .args(["train", "--out", run.to_str().unwrap(), "--resume"])
        .args(common::TINY_RUN)
        .args(["--epochs", "6", "--log-every", "1"])
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
    let started = Instant::now();
    let kills = kills();
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let span = timed_success(train(&whole));

    let killed = dir.path().join("killed");
    kill_at_random_moments(
        kills,
        span,
        || train(&killed),
        || std::fs::remove_dir_all(&killed).unwrap(),
    );
    timed_success(train(&killed));
    assert_eq!(metrics(&killed), metrics(&whole));
    let leftovers: Vec<_> = files(&killed)
        .into_iter()
        .filter(|(name, _)| name.contains(".tmp"))
        .map(|(name, _)| name)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for which in ["best", "last"] {
        assert!(
            weights(&killed, which) == weights(&whole, which),
            "{which} weights differ"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(600));
}

/// The files of a folder (names and bytes), sorted by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn corrupt_killed_at_random_moments_ends_with_the_files_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    common::write_cifar_test_batch(&cifar, 300);
    let corrupt = |out: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ews"));
        command
            .args(["corrupt", "--cifar-dir", cifar.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--workers", "1"])
            .args(["--corruption", "gaussian_noise", "--corruption", "contrast"])
            .args([
                "--corruption",
                "pixelate",
                "--corruption",
                "jpeg_compression",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let whole = dir.path().join("whole");
    let span = timed_success(corrupt(&whole));

    let killed = dir.path().join("killed");
    kill_at_random_moments(
        kills(),
        span,
        || corrupt(&killed),
        || std::fs::remove_dir_all(&killed).unwrap(),
    );
    // Killed before the end, the folder says so and evaluation refuses it.
    if killed.join("generating.json").is_file() {
        let err = ews_train::cifar_c::evaluate_cifar_c_with(&killed, &[], |_| {}, |_| Ok(0.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has not finished"), "{err}");
    }
    timed_success(corrupt(&killed));
    let (got, want) = (files(&killed), files(&whole));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs");
    }
    assert!(!killed.join("generating.json").exists());
}

/// A loopback HTTP server for `body`, honouring `Range: bytes=N-`, that sends 16 KiB every
/// 4 ms (so a download lasts long enough to be killed). Returns its address and the range
/// starts it was asked for.
fn slow_server(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u64>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}/data.bin", listener.local_addr().unwrap());
    let starts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = starts.clone();
    let body = std::sync::Arc::new(body);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (mut stream, body, seen) = (stream.unwrap(), body.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut start = 0u64;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some(range) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        start = range.trim().trim_end_matches('-').parse().unwrap();
                    }
                    line.clear();
                }
                seen.lock().unwrap().push(start);
                let rest = &body[start as usize..];
                let status = if start > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    rest.len()
                );
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for chunk in rest.chunks(16 << 10) {
                    if stream.write_all(chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(4));
                }
            });
        }
    });
    (address, starts)
}

#[test]
fn download_killed_at_random_moments_resumes_to_the_same_bytes() {
    let body: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let md5 = format!("{:x}", md5::compute(&body));
    let (url, starts) = slow_server(body.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    let download = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ews"));
        command
            .args(["download", "--url", &url, "--checksum", &md5])
            .args(["--out", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let span = timed_success(download());
    assert_eq!(std::fs::read(&file).unwrap(), body);
    std::fs::remove_file(&file).unwrap();

    starts.lock().unwrap().clear();
    kill_at_random_moments(kills(), span, download, || {
        std::fs::remove_file(&file).unwrap()
    });
    timed_success(download());
    assert_eq!(std::fs::read(&file).unwrap(), body);
    assert!(!dir.path().join("data.bin.part").exists());
    let resumed = starts.lock().unwrap().iter().filter(|&&s| s > 0).count();
    assert!(
        resumed >= kills() / 2,
        "only {resumed} downloads resumed from the part file"
    );
}
