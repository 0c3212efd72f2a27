//! End-to-end tests of the `ews` binary.

use std::process::Command;

fn ews(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ews"))
        .args(args)
        .output()
        .expect("run ews");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn models_prints_name_and_parameter_count() {
    let (ok, stdout, stderr) = ews(&[
        "models",
        "--model",
        "preact-resnet18",
        "--model",
        "wrn-28-10",
        "--model",
        "resnet50",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "preact-resnet18 11172170\nwrn-28-10 36479194\nresnet50 23520842\n"
    );
    let (ok, stdout, stderr) = ews(&[
        "models",
        "--classes",
        "1000",
        "--model",
        "imagenet-resnet50",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "imagenet-resnet50 25557032\n");
}

#[test]
fn models_lists_every_standard_architecture() {
    let (ok, stdout, stderr) = ews(&["models", "--classes", "100"]);
    assert!(ok, "{stderr}");
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    for name in [
        "preact-resnet18",
        "preact-resnet34",
        "resnet18",
        "resnet101",
        "imagenet-resnet50",
        "wrn-16-1",
        "wrn-34-10",
        "wrn-40-2",
    ] {
        assert!(names.contains(&name), "missing {name} in\n{stdout}");
    }
    for line in stdout.lines() {
        let count: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(count > 100_000, "{line}");
    }
}

#[test]
fn bad_model_names_and_classes_are_reported() {
    let (ok, _, stderr) = ews(&["models", "--model", "wrn-27-10"]);
    assert!(!ok);
    assert!(
        stderr.contains("wrn-27-10") && stderr.contains("6n + 4"),
        "{stderr}"
    );
    let (ok, _, stderr) = ews(&["models", "--classes", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--classes"), "{stderr}");
}
