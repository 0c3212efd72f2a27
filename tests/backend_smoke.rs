//! One tiny EWS training step on whichever backend the `ews` binary was built with: on the
//! default CPU build here, and in CI also on wgpu over Mesa's software Vulkan
//! (`cargo test -p ews-cli --no-default-features --features wgpu --test backend_smoke`), so the
//! convolution trait's pass-through to burn's kernels runs on a cubecl backend, not only
//! compiles.

use std::process::Command;

fn ews(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ews"))
        .args(args)
        .env("EWS_KERNEL_CACHE", "off")
        .output()
        .expect("run ews");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ews {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The backend name `ews backend` prints for this build, and whether our own convolution
/// kernels (rather than burn's) serve it.
fn expected_backend() -> (&'static str, bool) {
    if cfg!(feature = "cuda") {
        ("cuda", true)
    } else if cfg!(feature = "vulkan") {
        ("vulkan", false)
    } else if cfg!(feature = "wgpu") {
        ("wgpu", false)
    } else if cfg!(feature = "ndarray") {
        ("ndarray (cpu)", false)
    } else {
        ("flex (cpu)", true)
    }
}

#[test]
fn one_tiny_ews_training_step_on_the_built_backend() {
    let (name, ours) = expected_backend();
    let backend = ews(&["backend"]);
    let lines: Vec<&str> = backend.lines().collect();
    assert_eq!(lines[0], name, "{backend}");
    let fast = std::env::var("EWS_KERNELS").map_or(true, |v| !v.eq_ignore_ascii_case("burn"));
    if !(ours && fast) {
        assert!(
            lines[1].starts_with("convolutions: burn's conv2d"),
            "{backend}"
        );
    }

    let report = ews(&[
        "bench",
        "--model",
        "wrn-10-1",
        "--step",
        "ews",
        "--batch",
        "2",
        "--image-size",
        "8",
        "--classes",
        "4",
        "--warmup",
        "0",
        "--steps",
        "1",
    ]);
    let line = report.lines().last().expect("a JSON report");
    let report: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert!(
        report["backend"].as_str().unwrap().starts_with(name),
        "{report}"
    );
    let images_per_s = report["images_per_s"].as_f64().unwrap();
    assert!(images_per_s.is_finite() && images_per_s > 0.0, "{report}");
    assert_eq!(report["steps"].as_u64(), Some(1), "{report}");
}
