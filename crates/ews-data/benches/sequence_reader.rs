//! Reading ImageNet-P sequences ahead of the model: sequences/s of `SequenceReader` with 1, 2,
//! ... workers over every `.mp4`/`.npy` file under a folder (FFmpeg decodes the videos; set
//! `EWS_FFMPEG` to use another binary).
//!
//! `cargo bench -p ews-data --bench sequence_reader -- DIR [--workers 1,2,4]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use ews_data::sequence_reader::read_ahead;

/// Every sequence file under `dir`, sorted.
fn sequences(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "mp4" || e == "npy") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn main() {
    let mut dir = None;
    let mut workers = vec![1, 2];
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--workers" => {
                let list = it.next().expect("--workers 1,2,4");
                workers = list
                    .split(',')
                    .map(|w| w.parse().expect("a count"))
                    .collect();
            }
            "--bench" => {}
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let dir = dir.expect("usage: sequence_reader DIR [--workers 1,2,4]");
    let files = sequences(&dir);
    assert!(
        !files.is_empty(),
        "{}: no .mp4 or .npy files",
        dir.display()
    );
    println!("{} sequences under {}:", files.len(), dir.display());
    for w in workers {
        let start = Instant::now();
        let frames: usize = read_ahead(&files, w)
            .map(|s| s.expect("readable sequence").len())
            .sum();
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "  {w} workers: {seconds:.2} s, {:.1} sequences/s, {:.0} frames/s",
            files.len() as f64 / seconds,
            frames as f64 / seconds
        );
    }
}
