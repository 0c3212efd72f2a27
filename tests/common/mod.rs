//! What the end-to-end tests of several files share: a tiny training run and its metrics
//! lines without the timing fields.
#![allow(dead_code)]

use std::path::Path;

/// `ews train` settings of a tiny run (add `--out` and `--epochs`): a small network on 64
/// generated images, 4 steps per epoch.
pub const TINY_RUN: [&str; 9] = [
    "--model",
    "wrn-10-1",
    "--synthetic-size",
    "64,16",
    "--image-size",
    "16",
    "--batch-size",
    "16",
    "--quiet",
];

/// Fields of the metrics lines that depend on timing, not on the computation.
pub const TIMING: [&str; 3] = ["images_per_s", "seconds", "exchange_seconds"];

/// The metrics lines of the run folder `run` without the timing fields.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in TIMING {
                value.as_object_mut().unwrap().remove(key);
            }
            value
        })
        .collect()
}

/// Writes `dir/test_batch.bin`: `n` generated 32 x 32 images in CIFAR-10's binary format.
pub fn write_cifar_test_batch(dir: &std::path::Path, n: usize) {
    let ds = ews_data::synthetic::generate(ews_data::synthetic::SyntheticConfig {
        train: 2,
        test: n,
        seed: 1,
    });
    let mut bytes = Vec::new();
    for i in 0..n {
        let img = ds.test.image(i).unwrap();
        bytes.push(ds.test.labels[i] as u8);
        for c in 0..3 {
            bytes.extend(img.pixels.chunks_exact(3).map(|p| p[c]));
        }
    }
    std::fs::write(dir.join("test_batch.bin"), bytes).unwrap();
}
