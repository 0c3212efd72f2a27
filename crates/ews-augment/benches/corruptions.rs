//! Single-core time per 32 px image of every implemented corruption (CIFAR table), the Rust
//! side of `benches/reference_corruptions.py`.
//!
//! `cargo bench -p ews-augment --bench corruptions [-- --images N]`

use std::time::Instant;

#[path = "../tests/golden/files.rs"]
mod files;

use ews_augment::Image;
use ews_augment::corrupt::{Corruption, Table, corrupt};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The CIFAR-10 golden inputs.
fn cifar_inputs() -> Vec<Image> {
    files::inputs()
        .into_values()
        .filter(|i| i.height == 32)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--images")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let images = cifar_inputs();
    let mut rng = StdRng::seed_from_u64(0);
    let mut total = 0.0;
    println!("| corruption | ews ms/image (mean of severities 1-5) |");
    println!("|---|---|");
    for c in Corruption::ALL {
        let start = Instant::now();
        for severity in 1..=5u8 {
            for i in 0..n {
                std::hint::black_box(corrupt(
                    &images[i % images.len()],
                    c,
                    severity,
                    Table::Cifar,
                    &mut rng,
                ));
            }
        }
        let per = start.elapsed().as_secs_f64() / (5 * n) as f64;
        total += per;
        println!("| {} | {:.4} |", c.name(), per * 1e3);
    }
    println!(
        "| all {} | {:.3} ms per image for every corruption |",
        Corruption::ALL.len(),
        total * 1e3
    );
    println!(
        "full CIFAR-10-C for these {} corruptions (x5 severities x10,000): {:.2} core-minutes",
        Corruption::ALL.len(),
        total * 5.0 * 10_000.0 / 60.0
    );
}
