//! `ews-fuzz`: fuzzes every reader of outside bytes for a while and prints a markdown table
//! of what each did (`cargo xtask fuzz --seconds N` builds and runs it in release mode).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ews_fuzz::{BoundedAllocator, Fuzzer, capture_panics, targets};

/// No reader may allocate more than this at once for inputs of at most a megabyte.
#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator::new(512 << 20);

/// Fuzzes every reader of outside bytes with mutated valid files.
#[derive(Parser)]
struct Args {
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the mutations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Work folder (the targets' folders, and `failures/` with every failing input).
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Err(message) = run(&args) {
        eprintln!("ews-fuzz: {message}");
        std::process::exit(2);
    }
}

fn run(args: &Args) -> Result<(), String> {
    eprintln!(
        "ews-fuzz: preparing the readers' folders in {}",
        args.out.display()
    );
    let all = targets::all(&args.out)?;
    let failures_dir = args.out.join("failures");
    capture_panics();
    let mut fuzzer = Fuzzer::new(all, args.seed, &failures_dir);
    let budget = Duration::from_secs(args.seconds);
    let bar = indicatif::ProgressBar::new(args.seconds).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s {msg}")
            .map_err(|e| e.to_string())?,
    );
    let started = Instant::now();
    while started.elapsed() < budget {
        fuzzer.round()?;
        let inputs: u64 = fuzzer.tallies.iter().map(|t| t.inputs).sum();
        bar.set_position(started.elapsed().as_secs().min(args.seconds));
        bar.set_message(format!(
            "{inputs} inputs, {} failures",
            fuzzer.failures.len()
        ));
    }
    bar.finish_and_clear();
    let inputs: u64 = fuzzer.tallies.iter().map(|t| t.inputs).sum();
    println!(
        "{inputs} inputs in {:.0} s (seed {}), largest single allocation {:.1} MiB of the {} MiB allowed\n",
        started.elapsed().as_secs_f64(),
        args.seed,
        ALLOCATOR.largest() as f64 / (1 << 20) as f64,
        ALLOCATOR.limit() >> 20
    );
    println!("{}", fuzzer.markdown());
    for failure in &fuzzer.failures {
        println!(
            "FAILED {}: {} ({})",
            failure.target,
            failure.what,
            failure.input.display()
        );
    }
    match fuzzer.failures.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} inputs broke the rule; they are in {}",
            failures_dir.display()
        )),
    }
}
