//! A short fuzzing run of every reader (the long one: `cargo xtask fuzz --seconds N`).
//! `EWS_FUZZ_INPUTS` sets the inputs per reader (default 150), `EWS_FUZZ_SEED` the seed.

use ews_fuzz::{BoundedAllocator, Fuzzer, capture_panics, targets};

/// No reader may allocate more than this at once for inputs of at most a megabyte.
#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator::new(512 << 20);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The valid files read as values (the decompression bomb as an error naming the image
/// file and the limit), then mutated files give values or errors naming the file.
#[test]
fn every_reader_gives_a_value_or_an_error_naming_the_file() {
    let work = tempfile::tempdir().unwrap();
    let mut all = targets::all(work.path()).unwrap();
    let names: Vec<&str> = all.iter().map(|t| t.name).collect();
    let expected = if cfg!(feature = "libjpeg-turbo") {
        18
    } else {
        17
    };
    assert_eq!(all.len(), expected, "{names:?}");
    for target in &mut all {
        for (i, seed) in target.seeds.clone().iter().enumerate() {
            target.prepare(seed).unwrap();
            let read = target.read_file();
            if target.name == "png" && i == 3 {
                let err = read.unwrap_err();
                assert!(err.contains("image.png") && err.contains("limit"), "{err}");
            } else {
                assert!(read.is_ok(), "{} seed {i}: {read:?}", target.name);
            }
        }
    }
    assert!(ALLOCATOR.largest() < 64 << 20, "{}", ALLOCATOR.largest());

    capture_panics();
    let seed = env_number("EWS_FUZZ_SEED", 1);
    let mut fuzzer = Fuzzer::new(all, seed, &work.path().join("failures"));
    for _ in 0..env_number("EWS_FUZZ_INPUTS", 150) {
        fuzzer.round().unwrap();
    }
    let _ = std::panic::take_hook();
    println!("{}", fuzzer.markdown());
    let report: Vec<String> = fuzzer
        .failures
        .iter()
        .map(|f| format!("{}: {} ({})", f.target, f.what, f.input.display()))
        .collect();
    assert!(
        report.is_empty(),
        "{} failures:\n{}",
        report.len(),
        report.join("\n")
    );
    for (target, tally) in fuzzer.targets().iter().zip(&fuzzer.tallies) {
        assert!(tally.errors > 0, "{}: no input was refused", target.name);
    }
}
