//! Structured fuzzing of every reader of outside bytes: valid files (from our writers and
//! the reference tools) are mutated and read; every input must give a value or an error
//! that names the file, never a panic, a hang or an allocation that a header asked for.
//!
//! `cargo xtask fuzz --seconds N` runs it for a while (the `ews-fuzz` binary); the test
//! `tests/fuzz.rs` runs a few hundred inputs per reader in CI.

pub mod alloc;
pub mod bomb;
pub mod mutate;
pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use alloc::BoundedAllocator;
pub use mutate::Mutator;
pub use targets::Target;

/// What one reader did with its inputs.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Inputs read.
    pub inputs: u64,
    /// Inputs read as a value (the mutation left the file valid).
    pub values: u64,
    /// Inputs refused with an error that names the file.
    pub errors: u64,
    /// The slowest input.
    pub slowest: Duration,
}

/// An input that broke the rule, kept on disk.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The target's name.
    pub target: &'static str,
    /// A copy of the input.
    pub input: PathBuf,
    /// What happened: the panic, or the error that does not name the file, or the time.
    pub what: String,
}

/// An input slower than this is a failure (the readers take milliseconds).
pub const SLOW_INPUT: Duration = Duration::from_secs(10);

/// The fuzzing loop over a set of targets.
pub struct Fuzzer {
    targets: Vec<Target>,
    mutator: Mutator,
    failures_dir: PathBuf,
    /// One tally per target, in target order.
    pub tallies: Vec<Tally>,
    /// The inputs that broke the rule.
    pub failures: Vec<Failure>,
}

impl Fuzzer {
    /// Fuzzes `targets` with mutations seeded by `seed`; failing inputs are copied into
    /// `failures_dir`.
    pub fn new(targets: Vec<Target>, seed: u64, failures_dir: &Path) -> Self {
        let tallies = vec![Tally::default(); targets.len()];
        Self {
            targets,
            mutator: Mutator::new(seed),
            failures_dir: failures_dir.to_path_buf(),
            tallies,
            failures: Vec::new(),
        }
    }

    /// The targets.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Reads one mutated input with every target.
    pub fn round(&mut self) -> Result<(), String> {
        for t in 0..self.targets.len() {
            self.one_input(t)?;
        }
        Ok(())
    }

    /// Reads one mutated input with target `t`; an error here is the fuzzer's own (a file
    /// it cannot write), not the reader's.
    pub fn one_input(&mut self, t: usize) -> Result<(), String> {
        let target = &mut self.targets[t];
        let seed = &target.seeds[self.mutator.pick(target.seeds.len())];
        let bytes = self.mutator.mutate(seed);
        target
            .prepare(&bytes)
            .map_err(|e| format!("{}: {e}", target.dir.display()))?;
        let path = target.path();
        let tally = &mut self.tallies[t];
        alloc::set_current_input(&format!(
            "{} ({} input {})",
            path.display(),
            target.name,
            tally.inputs
        ));
        let started = Instant::now();
        watchdog::begin(&path);
        let outcome = catch_unwind(AssertUnwindSafe(|| target.read_file()));
        watchdog::end();
        let took = started.elapsed();
        tally.inputs += 1;
        tally.slowest = tally.slowest.max(took);
        let file_name = target.file.as_str();
        let what = match outcome {
            Ok(Ok(())) => {
                tally.values += 1;
                None
            }
            Ok(Err(message)) if message.contains(file_name) => {
                tally.errors += 1;
                None
            }
            Ok(Err(message)) => Some(format!("the error does not name {file_name}: {message}")),
            Err(_) => Some(format!("panic: {}", take_panic_message())),
        };
        let what = what
            .or_else(|| (took > SLOW_INPUT).then(|| format!("took {:.1} s", took.as_secs_f64())));
        if let Some(what) = what {
            let name = format!("{}-{}-{}", target.name, tally.inputs, target.file);
            let input = self.failures_dir.join(name);
            std::fs::create_dir_all(&self.failures_dir)
                .and_then(|()| std::fs::write(&input, &bytes))
                .map_err(|e| format!("{}: {e}", input.display()))?;
            self.failures.push(Failure {
                target: target.name,
                input,
                what,
            });
        }
        Ok(())
    }

    /// The tallies as a markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| target | reader | inputs | read as a value | refused, naming the file | failures | slowest input |\n|---|---|---:|---:|---:|---:|---:|\n",
        );
        for (target, tally) in self.targets.iter().zip(&self.tallies) {
            let failures = self
                .failures
                .iter()
                .filter(|f| f.target == target.name)
                .count();
            out.push_str(&format!(
                "| {} (`{}`) | `{}` | {} | {} | {} | {} | {:.0} ms |\n",
                target.name,
                target.file,
                target.reader,
                tally.inputs,
                tally.values,
                tally.errors,
                failures,
                tally.slowest.as_secs_f64() * 1e3
            ));
        }
        out
    }
}

static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// Replaces the panic hook with one that keeps the message (with its location) for the
/// failure report instead of printing it. Call once before fuzzing.
pub fn capture_panics() {
    std::panic::set_hook(Box::new(|info| {
        let mut last = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner());
        *last = info.to_string();
    }));
}

fn take_panic_message() -> String {
    std::mem::take(&mut *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Aborts the process, naming the input, when one input runs past [`watchdog::HANG`].
mod watchdog {
    use super::*;

    /// An input running this long is taken as a hang.
    pub const HANG: Duration = Duration::from_secs(120);

    static STARTED_MS: AtomicU64 = AtomicU64::new(0);
    static INPUT: Mutex<String> = Mutex::new(String::new());
    static CLOCK: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

    fn now_ms() -> u64 {
        CLOCK.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }

    pub fn begin(path: &Path) {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            std::thread::spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let started = STARTED_MS.load(Ordering::Relaxed);
                    if started != 0 && now_ms() - started > HANG.as_millis() as u64 {
                        let input = INPUT.lock().unwrap_or_else(|e| e.into_inner());
                        eprintln!("ews-fuzz: {input} was read for over {HANG:?}: a hang; the input is left there");
                        std::process::abort();
                    }
                }
            });
        });
        *INPUT.lock().unwrap_or_else(|e| e.into_inner()) = path.display().to_string();
        STARTED_MS.store(now_ms(), Ordering::Relaxed);
    }

    pub fn end() {
        STARTED_MS.store(0, Ordering::Relaxed);
    }
}
