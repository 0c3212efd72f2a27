//! Data-parallel runs over several machines, as separate `ews train` processes on 127.0.0.1
//! joined by `ews coordinator`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::metrics;

mod common;

/// Every run here is the tiny run for 2 epochs.
const EPOCHS: [&str; 2] = ["--epochs", "2"];

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An `ews coordinator`, stopped when dropped.
struct Coordinator {
    child: Child,
    address: String,
}

impl Coordinator {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ews"))
            .args(["coordinator", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ews coordinator");
        Self {
            child,
            address: format!("127.0.0.1:{port}"),
        }
    }

    /// `ews train` as node `rank` of 2 into `out`, with `extra` flags.
    fn node(&self, rank: usize, out: &Path, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_ews"))
            .arg("train")
            .args(common::TINY_RUN)
            .args(EPOCHS)
            .args(["--out", out.to_str().unwrap(), "--nodes", "2"])
            .args(["--node-rank", &rank.to_string()])
            .args(["--coordinator", &self.address])
            .args(["--node-address", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .env("EWS_PEER_TIMEOUT_S", "20")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ews train")
    }

    /// Trains both nodes to the end with `extra` flags; returns their outputs.
    fn train_both(&self, dir: &Path, extra: &[&str]) -> [Output; 2] {
        let nodes = [0, 1].map(|rank| self.node(rank, &dir.join(format!("n{rank}")), extra));
        let outputs = nodes.map(|n| n.wait_with_output().unwrap());
        let failed: Vec<String> = (outputs.iter().enumerate())
            .filter(|(_, out)| !out.status.success())
            .map(|(rank, out)| format!("node {rank}: {}", String::from_utf8_lossy(&out.stderr)))
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        outputs
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(".lock"))
        .collect();
    names.sort();
    names
}

/// A one-process run on `peers` local peers, the reference of the runs over two nodes.
fn local_peers(dir: &Path, peers: usize) -> PathBuf {
    let run = dir.join(format!("local-{peers}"));
    let out = Command::new(env!("CARGO_BIN_EXE_ews"))
        .arg("train")
        .args(common::TINY_RUN)
        .args(EPOCHS)
        .args(["--out", run.to_str().unwrap()])
        .args(["--devices", &peers.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

#[test]
fn train_on_two_nodes_matches_two_local_peers_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start();
    let [first, second] = coordinator.train_both(dir.path(), &[]);
    let reference = metrics(&local_peers(dir.path(), 2));
    // Every loss, accuracy and controller value of every step, bit for bit.
    assert_eq!(metrics(&dir.path().join("n0")), reference);
    // (burn-collective prints its connections on standard output first.)
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("\ndone: 2 epochs"), "{said}");
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("node 1 done: 2 epochs"), "{said}");
    assert_eq!(
        files(&dir.path().join("n1")),
        [
            "checkpoint.node-1.epoch-1.ews",
            "checkpoint.node-1.epoch-2.ews",
            "config.toml"
        ]
    );
    assert_eq!(
        files(&dir.path().join("n0")),
        [
            "best_model.mpk",
            "checkpoint.ews",
            "config.toml",
            "metrics.jsonl",
            "summary.json"
        ]
    );

    // Stopped after one epoch and resumed (each node from its own checkpoint), the run ends
    // as the uninterrupted one; the same coordinator serves run after run. Node 0's folder
    // is put back to epoch 1 after epoch 2, as if the nodes were killed after node 1 wrote
    // its checkpoint of epoch 2 and before node 0 wrote its own: node 1 resumes from its
    // checkpoint of epoch 1.
    let stopped = dir.path().join("stopped");
    coordinator.train_both(&stopped, &["--stop-after", "1"]);
    let first_epoch = dir.path().join("first-epoch");
    copy_folder(&stopped.join("n0"), &first_epoch);
    coordinator.train_both(&stopped, &["--resume", "--stop-after", "2"]);
    std::fs::remove_dir_all(stopped.join("n0")).unwrap();
    copy_folder(&first_epoch, &stopped.join("n0"));
    coordinator.train_both(&stopped, &["--resume"]);
    assert_eq!(metrics(&stopped.join("n0")), reference);
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn two_nodes_of_two_peers_train_as_four_local_peers() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start();
    coordinator.train_both(dir.path(), &["--devices", "2"]);
    let reference = metrics(&local_peers(dir.path(), 4));
    let lines = metrics(&dir.path().join("n0"));
    // Four gradients are summed in an order that differs from run to run (burn-collective's
    // local tree takes the peers as they come), so the runs agree up to rounding.
    assert_eq!(lines.len(), reference.len());
    for (line, expected) in lines.iter().zip(&reference) {
        for (key, value) in expected.as_object().unwrap() {
            match (value.as_f64(), line[key].as_f64()) {
                (Some(e), Some(v)) => assert!(
                    (e - v).abs() <= 1e-4 * e.abs().max(1.0),
                    "{key}: {v} against {e}"
                ),
                _ => assert_eq!(&line[key], value, "{key}"),
            }
        }
    }
}

#[test]
fn a_node_that_dies_stops_the_other_with_an_error_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = Coordinator::start();
    let many = ["--epochs", "1000"];
    let survivor = coordinator.node(0, &dir.path().join("n0"), &many);
    let mut victim = coordinator.node(1, &dir.path().join("n1"), &many);
    // Kill node 1 once the run has trained (node 0 has written a metrics line).
    let metrics = dir.path().join("n0").join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::metadata(&metrics).map_or(0, |m| m.len()) == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "no training");
        std::thread::sleep(Duration::from_millis(100));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed = Instant::now();
    let out = survivor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The broken connection ends the exchange at once, or EWS_PEER_TIMEOUT_S (20) does.
    assert!(killed.elapsed() < Duration::from_secs(60), "{stderr}");
    assert!(stderr.contains("a peer died"), "{stderr}");
}

#[test]
fn node_flags_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let train = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ews"))
            .arg("train")
            .args(common::TINY_RUN)
            .args(EPOCHS)
            .args(["--out", run.to_str().unwrap()])
            .args(extra)
            .env("EWS_PEER_TIMEOUT_S", "1")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = train(&["--nodes", "2"]);
    assert!(err.contains("--node-rank"), "{err}");
    let err = train(&["--nodes", "2", "--node-rank", "0"]);
    assert!(
        err.contains("add --coordinator and --node-address"),
        "{err}"
    );
    let link = [
        "--coordinator",
        "127.0.0.1:1",
        "--node-address",
        "127.0.0.1:2",
    ];
    let err = train(&[&["--nodes", "2", "--node-rank", "2"][..], &link].concat());
    assert!(
        err.contains("--node-rank 2 must be below --nodes 2"),
        "{err}"
    );
    let err = train(&[&["--node-rank", "0"][..], &link].concat());
    assert!(err.contains("need --nodes 2 or more"), "{err}");
    // Nothing listens on port 1.
    let err = train(&[&["--nodes", "2", "--node-rank", "1"][..], &link].concat());
    assert!(
        err.contains("no coordinator answers at 127.0.0.1:1"),
        "{err}"
    );
}
