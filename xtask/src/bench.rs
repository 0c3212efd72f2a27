//! `cargo xtask bench`: our training steps and PyTorch's, side by side.
//!
//! Builds `ews` with the backend's feature, then per model and step runs `ews bench` (one
//! process each, so time to first step and peak memory are clean) and, where PyTorch is
//! importable, `crates/ews-train/benches/step_pytorch.py` with the same model, step, batch
//! and subnet. Reports go to `target/bench/` (one JSON per run, `results.md`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Settings of one `cargo xtask bench` call.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchPlan {
    pub backend: String,
    pub models: Vec<String>,
    pub steps_kinds: Vec<String>,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub image_size: usize,
    pub classes: usize,
    pub subnet_pass: String,
    pub pytorch: Toggle,
    pub bf16: bool,
    pub python: String,
    pub timeout: Duration,
    pub memory_trace: bool,
    pub check: bool,
    pub cudnn_benchmark: bool,
    pub ews: Option<PathBuf>,
    pub out: PathBuf,
}

/// On, off, or on where available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    Auto,
    On,
    Off,
}

pub const USAGE: &str = "usage: cargo xtask bench [--backend cuda|wgpu|vulkan|cpu] \
[--model preact-resnet18,wrn-28-10,resnet50] [--step plain,ews,pgd10] [--batch 128] \
[--steps 20] [--warmup 3] [--image-size 32] [--classes 100] [--subnet-pass sliced|masked] \
[--pytorch auto|on|off] [--bf16] [--python python3] [--timeout SECONDS] [--memory-trace] \
[--check] [--cudnn-benchmark] [--ews PREBUILT_BINARY] [--out target/bench]";

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Parses the flags after `bench`; `default_backend` is used when `--backend` is absent.
pub fn parse(args: &[String], default_backend: &str) -> Result<BenchPlan, String> {
    let mut plan = BenchPlan {
        backend: default_backend.to_string(),
        models: list("preact-resnet18,wrn-28-10,resnet50"),
        steps_kinds: list("plain,ews,pgd10"),
        batch: 128,
        steps: 20,
        warmup: 3,
        image_size: 32,
        classes: 100,
        subnet_pass: "sliced".into(),
        pytorch: Toggle::Auto,
        bf16: false,
        python: "python3".into(),
        timeout: Duration::from_secs(900),
        memory_trace: false,
        check: false,
        cudnn_benchmark: false,
        ews: None,
        out: PathBuf::from("target/bench"),
    };
    let mut models = Vec::new();
    let mut kinds = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |v: String| -> Result<usize, String> {
            v.parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name}: expected a positive number, got `{v}`"))
        };
        match name {
            "--backend" => plan.backend = value()?,
            "--model" => models.extend(list(&value()?)),
            "--step" => kinds.extend(list(&value()?)),
            "--batch" => plan.batch = number(value()?)?,
            "--steps" => plan.steps = number(value()?)?,
            "--warmup" => {
                let v = value()?;
                plan.warmup = v
                    .parse()
                    .map_err(|_| format!("--warmup: expected a number, got `{v}`"))?;
            }
            "--image-size" => plan.image_size = number(value()?)?,
            "--classes" => plan.classes = number(value()?)?,
            "--subnet-pass" => {
                plan.subnet_pass = value()?;
                if !["sliced", "masked"].contains(&plan.subnet_pass.as_str()) {
                    return Err(format!(
                        "--subnet-pass: expected sliced or masked, got `{}`",
                        plan.subnet_pass
                    ));
                }
            }
            "--pytorch" => {
                plan.pytorch = match value()?.as_str() {
                    "auto" => Toggle::Auto,
                    "on" => Toggle::On,
                    "off" => Toggle::Off,
                    other => {
                        return Err(format!(
                            "--pytorch: expected auto, on or off, got `{other}`"
                        ));
                    }
                }
            }
            "--bf16" => plan.bf16 = true,
            "--python" => plan.python = value()?,
            "--timeout" => plan.timeout = Duration::from_secs(number(value()?)? as u64),
            "--memory-trace" => plan.memory_trace = true,
            "--check" => plan.check = true,
            "--cudnn-benchmark" => plan.cudnn_benchmark = true,
            "--ews" => plan.ews = Some(PathBuf::from(value()?)),
            "--out" => plan.out = PathBuf::from(value()?),
            other => return Err(format!("unknown flag `{other}`\n{USAGE}")),
        }
    }
    if !models.is_empty() {
        plan.models = models;
    }
    if !kinds.is_empty() {
        plan.steps_kinds = kinds;
    }
    for kind in &plan.steps_kinds {
        let pgd_ok = kind
            .strip_prefix("pgd")
            .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n > 0));
        if !(kind == "plain" || kind == "ews" || pgd_ok) {
            return Err(format!("--step: `{kind}` is not plain, ews or pgdN"));
        }
    }
    Ok(plan)
}

/// Runs `cmd` with a wall-clock limit; returns its stdout, or why it failed.
fn run_limited(mut cmd: Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let text = reader.join().unwrap_or_default();
                return if status.success() {
                    Ok(text)
                } else {
                    Err(format!("exited with {status}"))
                };
            }
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    }
}

/// The last line of `stdout` that parses as a JSON object.
fn last_json(stdout: &str) -> Result<Value, String> {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
        })
        .ok_or_else(|| "printed no JSON report".to_string())
}

/// One row of the side-by-side table.
#[derive(Debug)]
pub struct Row {
    pub model: String,
    pub step: String,
    pub ours: Result<Value, String>,
    pub ours_bf16: Option<Result<Value, String>>,
    pub pytorch: Option<Result<Value, String>>,
    pub pytorch_bf16: Option<Result<Value, String>>,
}

fn number(report: &Result<Value, String>, key: &str) -> Option<f64> {
    report.as_ref().ok()?.get(key)?.as_f64()
}

fn cell(report: &Option<Result<Value, String>>, key: &str, scale: f64, digits: usize) -> String {
    match report {
        None => "-".into(),
        Some(Err(e)) => format!("({e})"),
        Some(r) => number(r, key).map_or("-".into(), |v| format!("{:.*}", digits, v * scale)),
    }
}

/// The markdown table of the rows, plus the EWS / plain cost ratios.
pub fn table(rows: &[Row]) -> String {
    let mib = 1.0 / (1024.0 * 1024.0);
    let mut out = String::from(
        "| model | step | ours images/s | PyTorch fp32 images/s | ours / PyTorch | ours bf16 images/s \
| PyTorch bf16 images/s | ours first step s | PyTorch first step s | ours peak MiB | PyTorch peak MiB |\n\
|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let ours = Some(row.ours.clone());
        let ratio = match (number(&row.ours, "images_per_s"), &row.pytorch) {
            (Some(a), Some(p)) => {
                number(p, "images_per_s").map_or("-".into(), |b| format!("{:.2}x", a / b))
            }
            _ => "-".into(),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.model,
            row.step,
            cell(&ours, "images_per_s", 1.0, 1),
            cell(&row.pytorch, "images_per_s", 1.0, 1),
            ratio,
            cell(&row.ours_bf16, "images_per_s", 1.0, 1),
            cell(&row.pytorch_bf16, "images_per_s", 1.0, 1),
            cell(&ours, "first_step_s", 1.0, 1),
            cell(&row.pytorch, "first_step_s", 1.0, 1),
            cell(&ours, "peak_memory_bytes", mib, 0),
            cell(&row.pytorch, "peak_memory_bytes", mib, 0),
        );
    }
    // EWS step cost relative to the plain step, per model and side.
    let seconds = |model: &str, step: &str, side: &dyn Fn(&Row) -> Option<f64>| {
        rows.iter()
            .find(|r| r.model == model && r.step == step)
            .and_then(side)
    };
    let ours_s = |r: &Row| number(&r.ours, "step_s");
    let torch_s = |r: &Row| r.pytorch.as_ref().and_then(|p| number(p, "step_s"));
    let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    for model in models {
        let ratio = |side: &dyn Fn(&Row) -> Option<f64>| match (
            seconds(model, "ews", side),
            seconds(model, "plain", side),
        ) {
            (Some(e), Some(p)) => format!("{:.2}x", e / p),
            _ => "-".into(),
        };
        let (ours, torch) = (ratio(&ours_s), ratio(&torch_s));
        if ours != "-" || torch != "-" {
            out += &format!("\n{model}: EWS step / plain step: ours {ours}, PyTorch {torch}");
        }
    }
    out.push('\n');
    out
}

/// Exports a fresh model and its full/subnet logits with `ews bench --check-out`, then has
/// the PyTorch script recompute them; returns its verdict line.
fn check_model(plan: &BenchPlan, ews: &Path, script: &Path, model: &str, device: &str) -> String {
    let dir = plan.out.join(format!("check-{model}"));
    let subnet = plan.out.join(format!("check-subnet-{model}.json"));
    let mut ours = Command::new(ews);
    ours.args([
        "bench", "--model", model, "--step", "ews", "--warmup", "0", "--steps", "1",
    ])
    .args(["--batch", "4", "--image-size", &plan.image_size.to_string()])
    .args([
        "--classes",
        &plan.classes.to_string(),
        "--subnet-pass",
        &plan.subnet_pass,
    ])
    .arg("--subnet-out")
    .arg(&subnet)
    .arg("--check-out")
    .arg(&dir);
    if let Err(e) = run_limited(ours, plan.timeout) {
        return format!("ews bench --check-out failed: {e}");
    }
    let mut theirs = Command::new(&plan.python);
    theirs
        .arg(script)
        .args([
            "--model",
            model,
            "--classes",
            &plan.classes.to_string(),
            "--device",
            device,
        ])
        .arg("--check")
        .arg(&dir)
        .arg("--subnet")
        .arg(&subnet);
    match run_limited(theirs, plan.timeout) {
        Ok(out) => out.lines().collect::<Vec<_>>().join("; "),
        Err(e) => format!("FAILED ({e})"),
    }
}

fn pytorch_available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import torch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the plan with the `ews` binary at `ews`; `root` is the workspace root.
pub fn run(plan: &BenchPlan, ews: &Path, root: &Path) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&plan.out) {
        eprintln!("xtask bench: {}: {e}", plan.out.display());
        return ExitCode::FAILURE;
    }
    let script = root.join("crates/ews-train/benches/step_pytorch.py");
    let with_pytorch = match plan.pytorch {
        Toggle::Off => false,
        Toggle::On => true,
        Toggle::Auto => {
            let found = pytorch_available(&plan.python);
            if !found {
                eprintln!(
                    "xtask bench: `{} -c 'import torch'` failed; timing ours only (--pytorch on to insist)",
                    plan.python
                );
            }
            found
        }
    };
    let torch_device = if plan.backend == "cuda" {
        "cuda"
    } else {
        "cpu"
    };
    let common = |cmd: &mut Command, model: &str, step: &str| {
        cmd.args(["--model", model, "--step", step])
            .args(["--batch", &plan.batch.to_string()])
            .args(["--steps", &plan.steps.to_string()])
            .args(["--warmup", &plan.warmup.to_string()])
            .args(["--image-size", &plan.image_size.to_string()])
            .args(["--classes", &plan.classes.to_string()]);
        if plan.cudnn_benchmark {
            cmd.arg("--cudnn-benchmark");
        }
    };
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for model in &plan.models {
        let subnet = plan.out.join(format!("subnet-{model}.json"));
        if plan.check && with_pytorch {
            checks.push(format!(
                "{model}: {}",
                check_model(plan, ews, &script, model, torch_device)
            ));
        }
        for step in &plan.steps_kinds {
            let name = format!("{model}-{step}");
            let ews_run = |bf16: bool| {
                let mut cmd = Command::new(ews);
                cmd.arg("bench");
                common(&mut cmd, model, step);
                let suffix = if bf16 { "ews-bf16" } else { "ews" };
                cmd.args(["--subnet-pass", &plan.subnet_pass])
                    .args(["--precision", if bf16 { "bf16" } else { "f32" }])
                    .arg("--subnet-out")
                    .arg(&subnet)
                    .arg("--out")
                    .arg(plan.out.join(format!("{name}-{suffix}.json")));
                if plan.memory_trace {
                    cmd.arg("--memory-trace");
                }
                eprintln!("xtask bench: ews {name}{}", if bf16 { " bf16" } else { "" });
                run_limited(cmd, plan.timeout).and_then(|s| last_json(&s))
            };
            let ours = ews_run(false);
            let ours_bf16 = plan.bf16.then(|| ews_run(true));
            let torch = |bf16: bool| {
                let mut cmd = Command::new(&plan.python);
                cmd.arg(&script);
                common(&mut cmd, model, step);
                let suffix = if bf16 { "pytorch-bf16" } else { "pytorch" };
                cmd.args(["--device", torch_device])
                    .arg("--subnet")
                    .arg(&subnet)
                    .arg("--out")
                    .arg(plan.out.join(format!("{name}-{suffix}.json")));
                if bf16 {
                    cmd.arg("--bf16");
                }
                eprintln!(
                    "xtask bench: PyTorch {name}{}",
                    if bf16 { " bf16" } else { "" }
                );
                run_limited(cmd, plan.timeout).and_then(|s| last_json(&s))
            };
            // The EWS step needs the subnet file, which only our run writes.
            let can_torch = with_pytorch && (step != "ews" || subnet.is_file());
            let pytorch = can_torch.then(|| torch(false));
            let pytorch_bf16 = (can_torch && plan.bf16).then(|| torch(true));
            if let Err(e) = &ours {
                eprintln!("xtask bench: ews {name}: {e}");
            }
            rows.push(Row {
                model: model.clone(),
                step: step.clone(),
                ours,
                ours_bf16,
                pytorch,
                pytorch_bf16,
            });
        }
    }
    let device = rows
        .iter()
        .find_map(|r| r.ours.as_ref().ok())
        .and_then(|r| r.get("device")?.as_str().map(String::from))
        .unwrap_or_else(|| "?".into());
    let torch_device_name = rows
        .iter()
        .find_map(|r| r.pytorch.as_ref()?.as_ref().ok())
        .and_then(|r| {
            Some(format!(
                "{} on {}",
                r.get("backend")?.as_str()?,
                r.get("device")?.as_str()?
            ))
        })
        .unwrap_or_else(|| "not run".into());
    let checks = if checks.is_empty() {
        String::new()
    } else {
        format!(
            "\nSame function as PyTorch (full and subnet logits on exported weights):\n{}\n",
            checks.join("\n")
        )
    };
    let text = format!(
        "backend {} ({device}); PyTorch: {torch_device_name}\nbatch {}, {}x{} inputs, {} classes, {} warm-up + {} timed steps, subnet pass {}\n\n{}{checks}",
        plan.backend,
        plan.batch,
        plan.image_size,
        plan.image_size,
        plan.classes,
        plan.warmup,
        plan.steps,
        plan.subnet_pass,
        table(&rows)
    );
    println!("{text}");
    let md = plan.out.join("results.md");
    if let Err(e) = std::fs::write(&md, &text) {
        eprintln!("xtask bench: {}: {e}", md.display());
    }
    if rows.iter().all(|r| r.ours.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_are_the_issue_setting() {
        let plan = parse(&[], "cpu").unwrap();
        assert_eq!(plan.models, ["preact-resnet18", "wrn-28-10", "resnet50"]);
        assert_eq!(plan.steps_kinds, ["plain", "ews", "pgd10"]);
        assert_eq!((plan.batch, plan.classes, plan.image_size), (128, 100, 32));
        assert_eq!(plan.backend, "cpu");
    }

    #[test]
    fn flags_override_and_errors_name_the_flag() {
        let plan = parse(
            &args("--backend cuda --model wrn-16-1,wrn-10-1 --step ews --batch=8 --pytorch off --bf16"),
            "cpu",
        )
        .unwrap();
        assert_eq!(plan.backend, "cuda");
        assert_eq!(plan.models, ["wrn-16-1", "wrn-10-1"]);
        assert_eq!(plan.steps_kinds, ["ews"]);
        assert_eq!(plan.batch, 8);
        assert_eq!(plan.pytorch, Toggle::Off);
        assert!(plan.bf16);
        assert!(!plan.cudnn_benchmark);
        assert!(
            parse(&args("--cudnn-benchmark"), "cuda")
                .unwrap()
                .cudnn_benchmark
        );
        assert!(
            parse(&args("--batch 0"), "cpu")
                .unwrap_err()
                .contains("--batch")
        );
        assert!(
            parse(&args("--step fgsm"), "cpu")
                .unwrap_err()
                .contains("fgsm")
        );
        assert!(
            parse(&args("--steps"), "cpu")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse(&args("--frobnicate"), "cpu")
                .unwrap_err()
                .contains("unknown flag")
        );
    }

    #[test]
    fn table_puts_both_sides_and_the_ews_cost_ratio() {
        let report = |ips: f64, step_s: f64| -> Result<Value, String> {
            Ok(serde_json::json!({
                "images_per_s": ips, "step_s": step_s, "first_step_s": 2.0,
                "peak_memory_bytes": 1048576.0 * 3.0,
            }))
        };
        let rows = vec![
            Row {
                model: "m".into(),
                step: "plain".into(),
                ours: report(100.0, 1.0),
                ours_bf16: None,
                pytorch: Some(report(200.0, 0.5)),
                pytorch_bf16: None,
            },
            Row {
                model: "m".into(),
                step: "ews".into(),
                ours: report(62.5, 1.6),
                ours_bf16: None,
                pytorch: Some(Err("timed out after 5 s".into())),
                pytorch_bf16: None,
            },
        ];
        let text = table(&rows);
        assert!(
            text.contains("| m | plain | 100.0 | 200.0 | 0.50x | - | - | 2.0 | 2.0 | 3 | 3 |"),
            "{text}"
        );
        assert!(text.contains("(timed out after 5 s)"), "{text}");
        assert!(
            text.contains("m: EWS step / plain step: ours 1.60x, PyTorch -"),
            "{text}"
        );
    }

    #[test]
    fn limited_commands_time_out_and_json_is_found() {
        let mut slow = Command::new("sleep");
        slow.arg("5");
        let err = run_limited(slow, Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        let mut echo = Command::new("echo");
        echo.arg("noise\n{\"a\": 1}");
        let out = run_limited(echo, Duration::from_secs(5)).unwrap();
        assert_eq!(last_json(&out).unwrap()["a"], 1);
        assert!(last_json("nothing").is_err());
    }
}
