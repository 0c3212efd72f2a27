//! End-to-end tests of the `ews` binary.

use std::process::Command;

mod common;

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
fn backend_names_what_computes_convolutions_and_batch_norms() {
    let (ok, stdout, stderr) = ews(&["backend"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "flex (cpu)");
    let fast = std::env::var("EWS_KERNELS").map_or(true, |v| !v.eq_ignore_ascii_case("burn"));
    let (conv, norm) = if fast {
        (
            "ews im2col + gemm (f32, CPU)",
            "ews fused kernel (f32, CPU)",
        )
    } else {
        (
            "burn's conv2d (EWS_KERNELS=burn)",
            "burn's tensor operations (EWS_KERNELS=burn)",
        )
    };
    assert_eq!(lines[1], format!("convolutions: {conv}"));
    assert_eq!(lines[2], format!("batch norm: {norm}"));
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

#[test]
fn train_eval_and_export_a_tiny_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let (ok, stdout, stderr) = ews(&[
        "train",
        "--out",
        run_s,
        "--model",
        "wrn-10-1",
        "--synthetic-size",
        "64,32",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--interval-k",
        "2",
        "--lr",
        "0.05",
        "--lr",
        "0.02",
        "--aug",
        "augmix",
        "--augmix-variant",
        "torchvision",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("final test accuracy"), "{stdout}");
    assert!(stderr.contains("flex"), "the backend is named: {stderr}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("lr = 0.02"),
        "the later flag wins:\n{config}"
    );
    assert!(
        config.contains("aug = \"augmix\"") && config.contains("augmix_variant = \"torchvision\""),
        "{config}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"jsd\""),
        "AugMix trains with its JSD term"
    );

    let (ok, stdout, stderr) = ews(&["eval", "--run", run_s]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("clean accuracy") && run.join("eval.json").is_file(),
        "{stdout}"
    );
    let (ok, _, stderr) = ews(&["eval", "--run", run_s, "--weights", "last"]);
    assert!(ok, "{stderr}");

    let out = dir.path().join("w.safetensors");
    let (ok, _, stderr) = ews(&["export", "--run", run_s, "--out", out.to_str().unwrap()]);
    assert!(ok && out.is_file(), "{stderr}");

    // The same folder again without --resume is refused; resuming a finished run is a no-op.
    let (ok, _, stderr) = ews(&["train", "--out", run_s, "--quiet"]);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    let (ok, stdout, stderr) = ews(&["train", "--out", run_s, "--resume", "--quiet"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("nothing left to train"), "{stdout}");
}

#[test]
fn train_on_two_peers_with_checkpointing_writes_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("peers");
    let (ok, _, stderr) = ews(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--model",
        "wrn-10-1",
        "--synthetic-size",
        "64,16",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--devices",
        "2",
        "--checkpointing",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        !config.contains("checkpointing"),
        "an execution option: {config}"
    );
    assert!(config.contains("devices = 2"), "{config}");
    assert!(run.join("checkpoint.ews").is_file() && run.join("summary.json").is_file());
    let (ok, _, stderr) = ews(&[
        "train",
        "--out",
        dir.path().join("odd").to_str().unwrap(),
        "--batch-size",
        "18",
        "--devices",
        "4",
        "--quiet",
    ]);
    assert!(!ok && stderr.contains("devices"), "{stderr}");
}

#[test]
fn train_reports_bad_configs_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let (ok, _, stderr) = ews(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--rho",
        "0",
        "--quiet",
    ]);
    assert!(!ok && stderr.contains("rho"), "{stderr}");
    let (ok, _, stderr) = ews(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--aug",
        "augmix",
        "--augmix-severity",
        "11",
        "--quiet",
    ]);
    assert!(!ok && stderr.contains("augmix_severity"), "{stderr}");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "lr = 0.1\nlearning_rate = 3\n").unwrap();
    let (ok, _, stderr) = ews(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("learning_rate") && stderr.contains("c.toml"),
        "{stderr}"
    );
    let (ok, _, stderr) = ews(&[
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("ews download cifar10"), "{stderr}");
}

#[test]
fn corrupt_then_evaluate_a_tiny_model_on_the_generated_cifar_c() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar");
    std::fs::create_dir_all(&cifar).unwrap();
    common::write_cifar_test_batch(&cifar, 24);
    let c = dir.path().join("c");
    let (c_s, cifar_s) = (c.to_str().unwrap(), cifar.to_str().unwrap());
    let (ok, stdout, stderr) = ews(&[
        "corrupt",
        "--cifar-dir",
        cifar_s,
        "--out",
        c_s,
        "--corruption",
        "gaussian_noise",
        "--corruption",
        "contrast",
        "--corruption",
        "pixelate",
        "--limit",
        "20",
        "--workers",
        "2",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("3 corruptions x 5 severities x 20 images"),
        "{stdout}"
    );
    let noise = ews_data::npy::read(&c.join("gaussian_noise.npy")).unwrap();
    assert_eq!(noise.shape, vec![100, 32, 32, 3]);
    let (ok, _, stderr) = ews(&[
        "corrupt",
        "--cifar-dir",
        cifar_s,
        "--out",
        c_s,
        "--corruption",
        "rain",
    ]);
    assert!(
        !ok && stderr.contains("unknown corruption `rain`"),
        "{stderr}"
    );

    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let (ok, _, stderr) = ews(&[
        "train",
        "--out",
        run_s,
        "--model",
        "wrn-10-1",
        "--synthetic-size",
        "64,16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--method",
        "vanilla",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = ews(&["eval", "--run", run_s, "--cifar-c", c_s]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| gaussian_noise |") && stdout.contains("missing:"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("cifar_c.json")).unwrap()).unwrap();
    assert_eq!(report["corruptions"].as_array().unwrap().len(), 3);
    assert_eq!(report["images_per_severity"], 20);
    assert!(
        report["corruption_error"].is_null(),
        "12 benchmark corruptions are missing"
    );
    for c in report["corruptions"].as_array().unwrap() {
        for acc in c["severities"].as_array().unwrap() {
            assert!((0.0..=100.0).contains(&acc.as_f64().unwrap()));
        }
    }
    assert!(run.join("cifar_c.md").is_file());
    // A truncated file is reported by name.
    let bytes = std::fs::read(c.join("contrast.npy")).unwrap();
    std::fs::write(c.join("contrast.npy"), &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, stderr) = ews(&["eval", "--run", run_s, "--cifar-c", c_s]);
    assert!(!ok && stderr.contains("contrast.npy"), "{stderr}");

    // ImageNet-C layout: <corruption>/<severity>/<class>/<image>, 10 classes as the model.
    let inc = dir.path().join("inc");
    let ds = ews_data::synthetic::generate(ews_data::synthetic::SyntheticConfig {
        train: 2,
        test: 10,
        seed: 2,
    });
    for severity in 1..=5 {
        for class in 0..10 {
            let folder = inc.join(format!("contrast/{severity}/class{class:02}"));
            std::fs::create_dir_all(&folder).unwrap();
            let img = ds.test.image(class).unwrap();
            image::RgbImage::from_raw(32, 32, img.pixels)
                .unwrap()
                .save(folder.join("a.png"))
                .unwrap();
        }
    }
    let (ok, stdout, stderr) = ews(&[
        "eval",
        "--run",
        run_s,
        "--imagenet-c",
        inc.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| contrast |") && stdout.contains("No mCE"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("imagenet_c.json")).unwrap())
            .unwrap();
    let contrast = &report["corruptions"][0];
    assert_eq!(contrast["errors"].as_array().unwrap().len(), 5);
    let errors: f64 = contrast["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap())
        .sum();
    let ce = contrast["ce"].as_f64().unwrap();
    assert!(
        (ce - errors / (5.0 * 0.853204)).abs() < 1e-9,
        "CE normalised by AlexNet's contrast error"
    );

    // ImageNet-P layout: <perturbation>/<class>/<video>, here lossless .npy frames of the
    // generated images: still sequences (no flips) for every test perturbation.
    let inp = dir.path().join("inp");
    for p in ews_train::imagenet_p::TEST_PERTURBATIONS {
        let folder = inp.join(p).join("class00");
        std::fs::create_dir_all(&folder).unwrap();
        for v in 0..2 {
            let frames = ds.test.image(v).unwrap().pixels.repeat(5);
            let npy = ews_data::npy::encode_u8(&[5, 32, 32, 3], &frames);
            std::fs::write(folder.join(format!("v{v}.npy")), npy).unwrap();
        }
    }
    let alexnet = alexnet_normalizers(dir.path());
    let inp_s = inp.to_str().unwrap();
    let args = ["eval", "--run", run_s, "--imagenet-p", inp_s, "--alexnet-p"];
    let (ok, stdout, stderr) = ews(&[&args[..], &[alexnet.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| translate | 2 | 0.00 | 0.0 |") && stdout.contains("mFR 0.0%"),
        "{stdout}"
    );
    let report = read_json(&run.join("imagenet_p.json"));
    assert_eq!(report["perturbations"].as_array().unwrap().len(), 10);
    // Bad requests are named: a difficulty the dataset lacks, an unknown or absent name.
    for (extra, message) in [
        (["--difficulty", "5"], "difficulties 1, 2 and 3"),
        (["--perturbation", "tlit"], "unknown perturbation `tlit`"),
        (["--perturbation", "shear"], "shear: not found"),
    ] {
        let (ok, _, stderr) = ews(&[&args[..5], &extra[..]].concat());
        assert!(!ok && stderr.contains(message), "{stderr}");
    }
    let (ok, _, stderr) = ews(&["eval", "--run", run_s, "--imagenet-p", c_s]);
    assert!(!ok && stderr.contains("none of gaussian_noise"), "{stderr}");

    let sheet = dir.path().join("sheet.png");
    let (ok, _, stderr) = ews(&[
        "corrupt",
        "--preview",
        sheet.to_str().unwrap(),
        "--cifar-dir",
        cifar_s,
    ]);
    assert!(ok, "{stderr}");
    let png = image::open(&sheet).unwrap().to_rgb8();
    // 19 corruptions x (clean + 5 severities), 32 px magnified 4x, 6 px gaps, the
    // corruption names in 180 px on the left and the severities in 80 px above.
    assert_eq!(
        (png.width(), png.height()),
        (180 + 6 * 134 + 6, 80 + 19 * 134 + 6)
    );
    let ink = |xs: std::ops::Range<u32>, ys: std::ops::Range<u32>| {
        ys.flat_map(|y| xs.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| png.get_pixel(x, y).0 != [255, 255, 255])
            .count()
    };
    assert!(ink(0..170, 86..214) > 50, "the first row is labelled");
    assert!(ink(186..314, 40..80) > 50, "the first column is labelled");
}

/// `ews alexnet` with the narrow AlexNet of ews-models' golden files on formula-made 64 px
/// sequences (those of make_alexnet_golden.py, whose flip probability PyTorch puts at 0.375
/// for noise and motion alike) of the ten test perturbations: writes and returns
/// DIR/alexnet-p.json, after checking the file, the report and the errors for weights that
/// are absent and frames that are too small.
fn alexnet_normalizers(dir: &std::path::Path) -> std::path::PathBuf {
    let seqs = dir.join("alexnet-inp");
    for p in ews_train::imagenet_p::TEST_PERTURBATIONS {
        let class = seqs.join(p).join("n01");
        std::fs::create_dir_all(&class).unwrap();
        for v in 0..2usize {
            let frames: Vec<u8> = (0..5usize)
                .flat_map(|f| {
                    (0..64 * 64 * 3usize).map(move |i| {
                        let base = (i * 7919 + v * 104_729) % 1009 * 255 / 1008;
                        ((base + (i * 31 + f * 17 * (v + 1)) % 97) % 256) as u8
                    })
                })
                .collect();
            let npy = ews_data::npy::encode_u8(&[5, 64, 64, 3], &frames);
            std::fs::write(class.join(format!("v{v}.npy")), npy).unwrap();
        }
    }
    let weights = concat!(env!("CARGO_MANIFEST_DIR"), "/../ews-models/tests/golden");
    let weights = format!("{weights}/alexnet_tiny.pth");
    let out = dir.join("alexnet-p.json");
    let args = ["alexnet", "--imagenet-p", seqs.to_str().unwrap(), "--out"];
    let (ok, stdout, stderr) =
        ews(&[&args[..], &[out.to_str().unwrap(), "--weights", &weights]].concat());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| rotate | 2 | 37.50 |") && stdout.contains("--alexnet-p"),
        "{stdout}"
    );
    let written = read_json(&out);
    assert_eq!(written["difficulty"], 1);
    let fps = written["flip_probability"].as_object().unwrap();
    assert_eq!(fps.len(), 10);
    assert!(
        fps.values()
            .all(|v| (v.as_f64().unwrap() - 0.375).abs() < 1e-12)
    );
    assert!(out.with_extension("md").is_file());
    let (ok, _, stderr) = ews(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(!ok && stderr.contains("ews download alexnet"), "{stderr}");
    let small = dir.join("small-inp").join("rotate").join("n01");
    std::fs::create_dir_all(&small).unwrap();
    let npy = ews_data::npy::encode_u8(&[2, 32, 32, 3], &[7; 2 * 32 * 32 * 3]);
    std::fs::write(small.join("a.npy"), npy).unwrap();
    let small_dir = dir.join("small-inp");
    let (ok, _, stderr) = ews(&[
        "alexnet",
        "--imagenet-p",
        small_dir.to_str().unwrap(),
        "--weights",
        &weights,
        "--out",
        dir.join("never.json").to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("a.npy") && stderr.contains("at least 63 x 63"),
        "{stderr}"
    );
    out
}

#[test]
fn alexnet_on_imagenet_c_is_normalised_by_the_built_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    // Ten classes, as the narrow AlexNet of the golden files has.
    for c in 0..10u32 {
        let class = val.join(format!("n{c:02}"));
        std::fs::create_dir_all(&class).unwrap();
        let img = image::RgbImage::from_fn(90, 70, |x, y| {
            image::Rgb([(x * 2 + c * 25) as u8, (y * 3) as u8, ((x * y) % 251) as u8])
        });
        img.save(class.join("a.JPEG")).unwrap();
    }
    let inc = dir.path().join("inc");
    let (ok, _, stderr) = ews(&[
        "corrupt",
        "--folder",
        val.to_str().unwrap(),
        "--out",
        inc.to_str().unwrap(),
        "--corruption",
        "fog",
    ]);
    assert!(ok, "{stderr}");
    let weights = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ews-models/tests/golden/alexnet_tiny.pth"
    );
    let out = dir.path().join("c.json");
    let args = [
        "alexnet",
        "--imagenet-c",
        inc.to_str().unwrap(),
        "--weights",
        weights,
        "--clean",
    ];
    let (ok, stdout, stderr) = ews(&[
        &args[..],
        &[val.to_str().unwrap(), "--out", out.to_str().unwrap()],
    ]
    .concat());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| fog |")
            && stdout.contains("CE of 100%")
            && stdout.contains("AlexNet's clean error")
            && stdout.contains("relative CE |"),
        "{stdout}"
    );
    let report = read_json(&out);
    let fog = &report["corruptions"][0];
    let errors = floats(&fog["errors"]);
    assert_eq!(errors.len(), 5);
    // One image per class: every error is a multiple of 10%.
    assert!(
        errors
            .iter()
            .all(|e| (e / 10.0 - (e / 10.0).round()).abs() < 1e-9),
        "{errors:?}"
    );
    let ce = fog["ce"].as_f64().unwrap();
    let mean: f64 = errors.iter().sum::<f64>() / 5.0;
    assert!(
        (ce - mean / 0.819324).abs() < 1e-9,
        "CE by AlexNet's fog error"
    );
    // The clean error of the ten centre-cropped originals, and the relative CE from it.
    let clean = report["clean_error"].as_f64().unwrap();
    assert!(
        (clean / 10.0 - (clean / 10.0).round()).abs() < 1e-9,
        "{clean}"
    );
    let relative = fog["relative_ce"].as_f64().unwrap();
    assert!(
        (relative - (mean - clean) / (0.819324 - (1.0 - 0.56522))).abs() < 1e-9,
        "relative CE {relative} from clean error {clean}"
    );
    assert!(out.with_extension("md").is_file());
    // A clean folder of other classes is refused by name.
    std::fs::remove_dir_all(val.join("n09")).unwrap();
    let (ok, _, stderr) = ews(&[&args[..], &[val.to_str().unwrap()]].concat());
    assert!(!ok && stderr.contains("9 class folders"), "{stderr}");
    // Neither benchmark, or both: clap says what is needed.
    let (ok, _, stderr) = ews(&["alexnet", "--weights", weights]);
    assert!(!ok && stderr.contains("--imagenet-p"), "{stderr}");
}

#[test]
fn corrupt_an_image_folder_into_the_imagenet_c_layout_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("val");
    for (class, shade, ext) in [("n01", 40u8, "png"), ("n02", 200u8, "JPEG")] {
        std::fs::create_dir_all(src.join(class)).unwrap();
        for k in 0..2u8 {
            let img = image::RgbImage::from_fn(300, 260, |x, y| {
                image::Rgb([
                    shade,
                    (x % 256) as u8,
                    (y as u8).wrapping_mul(3).wrapping_add(k),
                ])
            });
            let format = if ext == "png" {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            img.save_with_format(src.join(class).join(format!("img{k}.{ext}")), format)
                .unwrap();
        }
    }
    let out = dir.path().join("inc");
    let args = [
        "corrupt",
        "--folder",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--corruption",
        "contrast",
        "--corruption",
        "shot_noise",
        "--severity",
        "1",
        "--severity",
        "5",
        "--workers",
        "2",
    ];
    let (ok, stdout, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote 16 images"), "{stdout}");
    let file = out.join("shot_noise/5/n02/img1.JPEG");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "saved as JPEG, as ImageNet-C");
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (224, 224));
    let png = image::open(out.join("contrast/1/n01/img1.png")).unwrap();
    assert_eq!((png.width(), png.height()), (224, 224));
    // A second run keeps what exists (a killed run resumes).
    std::fs::remove_file(out.join("contrast/1/n01/img0.png")).unwrap();
    let (ok, stdout, stderr) = ews(&args);
    assert!(ok && stdout.contains("wrote 1 images"), "{stdout}{stderr}");

    // ImageNet-P sequences of the same folder: .npy frames, 41 for translate, 31 otherwise.
    let inp = dir.path().join("inp");
    let p_args = [
        "corrupt",
        "--folder",
        src.to_str().unwrap(),
        "--imagenet-p",
        inp.to_str().unwrap(),
        "--perturbation",
        "translate",
        "--perturbation",
        "gaussian_noise",
    ];
    let (ok, stdout, stderr) = ews(&p_args);
    assert!(
        ok && stdout.contains("wrote 8 of 8 sequences"),
        "{stdout}{stderr}"
    );
    let seq = ews_data::video::read_frames(&inp.join("translate/n02/img1.npy")).unwrap();
    assert_eq!((seq.len(), seq[0].height, seq[0].width), (41, 224, 224));
    let noise = ews_data::video::read_frames(&inp.join("gaussian_noise/n01/img0.npy")).unwrap();
    assert_eq!(noise.len(), 31);
    std::fs::remove_file(inp.join("translate/n01/img0.npy")).unwrap();
    let (ok, stdout, stderr) = ews(&p_args);
    assert!(
        ok && stdout.contains("wrote 1 of 8 sequences"),
        "{stdout}{stderr}"
    );
    let again = ews_data::video::read_frames(&inp.join("translate/n01/img0.npy")).unwrap();
    assert_eq!(again.len(), 41);
    let hard = [&p_args[..5], &["--difficulty", "2"]].concat();
    let (ok, _, stderr) = ews(&hard);
    assert!(
        !ok && stderr.contains("only the noise sequences"),
        "{stderr}"
    );
    let unknown = [&p_args[..5], &["--perturbation", "fog"]].concat();
    let (ok, _, stderr) = ews(&unknown);
    assert!(
        !ok && stderr.contains("unknown perturbation `fog`"),
        "{stderr}"
    );
}

#[test]
fn adversarial_training_then_pgd_and_autoattack_reports() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("at");
    let run_s = run.to_str().unwrap();
    let (ok, _, stderr) = ews(&[
        "train",
        "--out",
        run_s,
        "--model",
        "wrn-10-1",
        "--synthetic-size",
        "64,24",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--adversarial",
        "pgd",
        "--attack-eps",
        "8/255",
        "--attack-step",
        "2/255",
        "--attack-steps",
        "2",
        "--awp-gamma",
        "0.01",
        "--holdout",
        "16",
        "--holdout-pgd-steps",
        "2",
        "--lambda",
        "0.1",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("adversarial = \"pgd\"") && config.contains("awp_gamma = 0.01"),
        "{config}"
    );

    let (ok, stdout, stderr) = ews(&["attack", "--run", run_s, "--attack", "pgd5", "--n", "20"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("robust"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("attack_pgd5.json")).unwrap())
            .unwrap();
    assert_eq!(report["n"], 20);
    let eps = report["eps"].as_f64().unwrap();
    assert!((eps - 8.0 / 255.0).abs() < 1e-12);
    assert!(report["max_perturbation"].as_f64().unwrap() <= eps * (1.0 + 1e-5));
    assert!(
        report["robust_accuracy"].as_f64().unwrap() <= report["clean_accuracy"].as_f64().unwrap()
    );
    assert!(run.join("attack_pgd5.md").is_file());

    // AutoAttack at a small radius (its members run only on points still robust).
    let (ok, _, stderr) = ews(&[
        "attack",
        "--run",
        run_s,
        "--attack",
        "autoattack",
        "--eps",
        "1/255",
        "--n",
        "8",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("attack_autoattack.json")).unwrap())
            .unwrap();
    let members: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["attack"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["apgd-ce", "apgd-t", "fab-t", "square"]);
    let md = std::fs::read_to_string(run.join("attack_autoattack.md")).unwrap();
    assert!(
        md.contains("after apgd-t") && md.contains("**robust**"),
        "{md}"
    );

    // L2 PGD with its default radius 0.5.
    let (ok, _, stderr) = ews(&[
        "attack", "--run", run_s, "--attack", "pgd3", "--norm", "l2", "--n", "8",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("attack_pgd3.json")).unwrap())
            .unwrap();
    assert_eq!(
        (report["norm"].as_str(), report["eps"].as_f64()),
        (Some("L2"), Some(0.5))
    );
    assert!(report["max_perturbation"].as_f64().unwrap() <= 0.5 * (1.0 + 1e-5));

    // Bad flags name what is wrong.
    let (ok, _, stderr) = ews(&["attack", "--run", run_s, "--attack", "fgsm"]);
    assert!(!ok && stderr.contains("--attack fgsm"), "{stderr}");
    let (ok, _, stderr) = ews(&["attack", "--run", run_s, "--eps", "8/0x"]);
    assert!(!ok && stderr.contains("eps"), "{stderr}");
    let (ok, _, stderr) = ews(&["attack", "--run", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("not a run folder"), "{stderr}");
}

#[test]
fn bench_prints_a_json_report_and_the_subnet_for_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let subnet = dir.path().join("subnet.json");
    let out = dir.path().join("report.json");
    let (ok, stdout, stderr) = ews(&[
        "bench",
        "--model",
        "wrn-10-1",
        "--step",
        "ews",
        "--batch",
        "4",
        "--image-size",
        "8",
        "--classes",
        "10",
        "--warmup",
        "0",
        "--steps",
        "2",
        "--subnet-pass",
        "masked",
        "--subnet-out",
        subnet.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["step"], "ews");
    assert_eq!(report["subnet_pass"], "masked");
    assert_eq!(report["params"], 77_850);
    assert!(report["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(saved, report);
    let subnet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&subnet).unwrap()).unwrap();
    assert_eq!(subnet["blocks"].as_array().unwrap().len(), 3);

    let (ok, _, stderr) = ews(&["bench", "--step", "fgsm"]);
    assert!(!ok && stderr.contains("plain, ews or pgdN"), "{stderr}");
}

#[test]
fn a_second_writer_is_refused_and_a_killed_run_leaves_no_lock_behind() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let tiny = [&["train", "--out", run_s][..], &common::TINY_RUN].concat();
    let mut first = Command::new(env!("CARGO_BIN_EXE_ews"))
        .args(&tiny)
        .args(["--epochs", "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !run.join("checkpoint.ews").is_file() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (ok, _, stderr) = ews(&[&tiny[..], &["--epochs", "1000", "--resume"]].concat());
    assert!(!ok, "a second writer must be refused");
    let pid = first.id().to_string();
    assert!(
        stderr.contains("in use by another training process") && stderr.contains(&pid),
        "{stderr}"
    );
    // SIGKILL: the lock goes with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    let (ok, _, stderr) = ews(&[
        &tiny[..],
        &["--epochs", "1000", "--resume", "--stop-after", "2"],
    ]
    .concat());
    assert!(ok, "{stderr}");
}

#[cfg(target_os = "linux")]
#[test]
fn failing_writes_stop_training_with_a_clear_error_and_keep_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out_dir = run.to_str().unwrap();
    let tiny = [
        &["train", "--out", out_dir][..],
        &common::TINY_RUN,
        &["--epochs", "3"],
    ]
    .concat();
    let (ok, _, stderr) = ews(&[&tiny[..], &["--stop-after", "1"]].concat());
    assert!(ok, "{stderr}");
    let checkpoint = run.join("checkpoint.ews");
    let good = std::fs::read(&checkpoint).unwrap();
    // Files limited to half a checkpoint (bash counts 1024-byte blocks), SIGXFSZ ignored: a
    // write past the limit fails with EFBIG, as on a full disk.
    let limit = format!(
        "ulimit -f {}; trap '' XFSZ; exec \"$0\" \"$@\"",
        good.len() / 2 / 1024
    );
    let out = Command::new("bash")
        .args(["-c", &limit, env!("CARGO_BIN_EXE_ews")])
        .args(&tiny)
        .arg("--resume")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("File too large") && stderr.contains(run.to_str().unwrap()),
        "{stderr}"
    );
    // The last good checkpoint is untouched, no half-written file is left, and the run
    // resumes from it once writes work again.
    assert_eq!(std::fs::read(&checkpoint).unwrap(), good);
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (ok, stdout, stderr) = ews(&[&tiny[..], &["--resume"]].concat());
    assert!(ok && stdout.contains("done: 3 epochs"), "{stderr}");
}

/// `ews train` on a folder of 32 px images says that it trains at 32 px, with which
/// normalisation (folders used to be upscaled to 224 px silently).
#[test]
fn train_on_a_folder_of_small_images_says_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    for split in ["train", "val"] {
        for (class, shade) in [("cat", 30u8), ("dog", 220u8)] {
            std::fs::create_dir_all(root.join(split).join(class)).unwrap();
            for i in 0..3u8 {
                let img = image::RgbImage::from_fn(32, 32, |x, y| {
                    image::Rgb([shade, (x as u8).wrapping_mul(i + 1), y as u8])
                });
                img.save(root.join(split).join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let dataset = format!("folder:{}", root.display());
    let run = dir.path().join("run");
    let (ok, _, stderr) = ews(&[
        "train",
        "--dataset",
        &dataset,
        "--model",
        "wrn-10-1",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--quiet",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("all 32x32: training at 32 px") && stderr.contains("normalisation"),
        "{stderr}"
    );

    // A DeepAugment-like copy joins the training split: twice the steps per epoch.
    let copy = dir.path().join("EDSR");
    for class in ["cat", "dog"] {
        let from = root.join("train").join(class);
        std::fs::create_dir_all(copy.join(class)).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, copy.join(class).join(path.file_name().unwrap())).unwrap();
        }
    }
    let steps_of = |run: &std::path::Path, extra: &std::path::Path| {
        let args = [
            "train",
            "--dataset",
            &dataset,
            "--model",
            "wrn-10-1",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--log-every",
            "1",
            "--quiet",
            "--extra-train-folder",
            extra.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ];
        let (ok, _, stderr) = ews(&args);
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
        let steps = text
            .lines()
            .filter(|l| l.contains("\"type\":\"step\""))
            .count();
        (ok, stderr, steps)
    };
    let (ok, stderr, steps) = steps_of(&dir.path().join("deep"), &copy);
    assert!(ok && stderr.contains("+ training images of"), "{stderr}");
    assert_eq!(steps, 6, "(6 images + 6 copies) / batch 2");
    std::fs::create_dir_all(copy.join("bird")).unwrap();
    let (ok, stderr, _) = steps_of(&dir.path().join("bad"), &copy);
    assert!(
        !ok && stderr.contains("EDSR") && stderr.contains("bird"),
        "{stderr}"
    );
}

/// Trains a tiny run of `method` for one epoch into `run`.
fn tiny_run(run: &std::path::Path, method: &str) {
    let mut args = vec!["train", "--out", run.to_str().unwrap(), "--epochs", "1"];
    args.extend(["--method", method, "--interval-k", "1", "--log-every", "1"]);
    args.extend(common::TINY_RUN);
    let (ok, _, stderr) = ews(&args);
    assert!(ok, "{stderr}");
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Decodes OUT/STEM.png and reads OUT/STEM.svg.
fn figure_files(out: &std::path::Path, stem: &str) -> (image::RgbImage, String) {
    let png = image::open(out.join(format!("{stem}.png")))
        .unwrap()
        .to_rgb8();
    let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
    (png, svg)
}

#[test]
fn analyze_subnets_blocks_and_plot_curves_of_tiny_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (vanilla, ews_run) = (dir.path().join("vanilla"), dir.path().join("ews"));
    tiny_run(&vanilla, "vanilla");
    tiny_run(&ews_run, "ews");
    let runs = [vanilla.to_str().unwrap(), ews_run.to_str().unwrap()];
    let out = dir.path().join("analysis");
    let out_s = out.to_str().unwrap();
    let mut args = vec![
        "analyze", "subnets", "--run", runs[0], runs[1], "--out", out_s,
    ];
    args.extend([
        "--count",
        "6",
        "--controller-samples",
        "3",
        "--images",
        "16",
    ]);
    args.extend(["--inputs", "clean,gaussian_noise:3,pgd:2/255"]);
    let (ok, stdout, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| ews | ews | PGD-10 (eps 2/255) |"),
        "{stdout}"
    );
    let reports = read_json(&out.join("subnets.json"));
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2, "one report per run");
    for (report, method) in reports.iter().zip(["vanilla", "ews"]) {
        assert_eq!(report["method"], method);
        let inputs = report["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), 3, "one distribution per input");
        for d in inputs {
            let accs = floats(&d["accuracies"]);
            assert_eq!(accs.len(), 6);
            // 16 test images: every accuracy is a multiple of 6.25%.
            for a in accs.iter().chain([&d["full_accuracy"].as_f64().unwrap()]) {
                assert!((a / 6.25 - (a / 6.25).round()).abs() < 1e-9, "{a}");
            }
            let mean = accs.iter().sum::<f64>() / 6.0;
            assert!((d["stats"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
            assert_eq!(d["weakest_found"].is_null(), method == "vanilla");
        }
    }
    let (png, svg) = figure_files(&out, "subnets");
    assert_eq!(
        (png.width(), png.height()),
        (3 * 520, 450),
        "three panels in a row"
    );
    for text in [
        "vanilla subnets",
        "ews weakest found",
        "gaussian_noise (severity 3)",
    ] {
        assert!(svg.contains(text), "the figure shows `{text}`");
    }
    std::fs::remove_file(out.join("subnets.svg")).unwrap();
    let (ok, _, stderr) = ews(&[
        "analyze", "subnets", "--redraw", "--bins", "5", "--out", out_s,
    ]);
    assert!(
        ok && out.join("subnets.svg").is_file(),
        "redrawn from the JSON: {stderr}"
    );
    let empty = dir.path().join("empty");
    let (ok, _, stderr) = ews(&[
        "analyze",
        "blocks",
        "--redraw",
        "--out",
        empty.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("run the analysis first"), "{stderr}");

    // At rho = 1 every subnet is the full network, in both batch-norm modes.
    for bn in ["batch", "running"] {
        let all = dir.path().join(format!("all-{bn}"));
        let mut args = vec![
            "analyze", "subnets", "--run", runs[0], "--rho", "1", "--bn", bn,
        ];
        args.extend([
            "--count",
            "3",
            "--inputs",
            "clean",
            "--out",
            all.to_str().unwrap(),
        ]);
        let (ok, _, stderr) = ews(&args);
        assert!(ok, "{stderr}");
        let d = &read_json(&all.join("subnets.json"))[0]["inputs"][0];
        let full = d["full_accuracy"].as_f64().unwrap();
        assert_eq!(floats(&d["accuracies"]), vec![full; 3], "{bn}");
        if bn == "running" {
            let (ok, _, stderr) = ews(&["eval", "--run", runs[0]]);
            assert!(ok, "{stderr}");
            let clean = read_json(&vanilla.join("eval.json"))["clean_accuracy"].as_f64();
            assert_eq!(
                clean,
                Some(full),
                "running statistics give `ews eval`'s accuracy"
            );
        }
    }

    let mut args = vec![
        "analyze", "blocks", "--run", runs[0], runs[1], "--out", out_s,
    ];
    args.extend(["--count", "4", "--images", "16"]);
    let (ok, _, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    let blocks = read_json(&out.join("blocks.json"));
    for report in blocks.as_array().unwrap() {
        let blocks = report["blocks"].as_array().unwrap();
        let names: Vec<&str> = blocks
            .iter()
            .map(|b| b["block"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["block1.layer.0", "block2.layer.0", "block3.layer.0"]
        );
        let downsampling: Vec<bool> = blocks.iter().map(|b| b["downsamples"] == true).collect();
        assert_eq!(downsampling, [false, true, true]);
        assert!(blocks.iter().all(|b| floats(&b["errors"]).len() == 4));
    }
    let (png, svg) = figure_files(&out, "blocks");
    assert_eq!(png.width(), 700);
    assert!(svg.contains("block2.layer.0") && svg.contains("test error (%)"));
    let mut args = vec![
        "analyze", "blocks", "--run", runs[0], "--keep", "1", "--count", "2",
    ];
    args.extend(["--out", out_s]);
    let (ok, _, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    let report = &read_json(&out.join("blocks.json"))[0];
    let full = report["full_error"].as_f64().unwrap();
    for b in report["blocks"].as_array().unwrap() {
        assert_eq!(
            floats(&b["errors"]),
            vec![full; 2],
            "keeping all of a block changes nothing"
        );
    }

    let curves = dir.path().join("curves");
    let args = [
        "plot",
        "--run",
        runs[0],
        runs[1],
        "--out",
        curves.to_str().unwrap(),
    ];
    let (ok, _, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    let (png, svg) = figure_files(dir.path(), "curves");
    assert!(png.width() >= 1040);
    for text in [
        "test accuracy",
        "KL(full || subnet)",
        "controller entropy",
        "learning rate",
    ] {
        assert!(svg.contains(text), "a `{text}` panel");
    }
    let (ok, _, stderr) = ews(&["plot", "--run", runs[0]]);
    assert!(ok, "{stderr}");
    let (_, svg) = figure_files(&vanilla, "curves");
    assert!(!svg.contains("KL(full"), "a vanilla run has no KL panel");
    let (ok, _, stderr) = ews(&["analyze", "subnets", "--run", runs[0], "--inputs", "fogg:2"]);
    assert!(
        !ok && stderr.contains("unknown corruption `fogg`"),
        "{stderr}"
    );
}

#[test]
fn experiments_train_their_runs_once_then_report_or_analyse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        "method = \"ews\"\nepochs = 1\n",
    )
    .unwrap();
    let tiny: Vec<String> = common::TINY_RUN
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect();
    let scale = format!("[scales.tiny]\ntrain = [{}]\n", tiny.join(", "));
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        format!(
            r#"title = "A tiny lambda sweep"
produces = "report"
sweep = "lambda"
[[runs]]
name = "lambda0"
config = "base.toml"
flags = ["--lambda", "0"]
paper = {{ clean_error = 50.0 }}
row = "no KL"
column = "tiny"
[[runs]]
name = "lambda1"
config = "base.toml"
flags = ["--lambda", "1"]
[[runs]]
name = "only-at-paper-scale"
config = "base.toml"
scales = ["paper"]
{scale}"#
        ),
    )
    .unwrap();
    let root = dir.path().join("runs");
    let args = [
        "experiment",
        sweep.to_str().unwrap(),
        "--scale",
        "tiny",
        "--root",
        root.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| clean error | clean error (paper) |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| | tiny: clean error |"),
        "the paper's layout: {stdout}"
    );
    assert!(
        stdout.contains(" (50.00) |"),
        "ours (paper) cells: {stdout}"
    );
    let out = root.join("tiny/sweep");
    let rows = read_json(&out.join("report.json"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "the paper-scale run is left out");
    for (row, lambda) in rows.iter().zip([0.0, 1.0]) {
        assert_eq!(row["config"]["lambda"].as_f64(), Some(lambda));
        let run = root.join("tiny").join(row["run"].as_str().unwrap());
        let acc = read_json(&run.join("eval.json"))["clean_accuracy"]
            .as_f64()
            .unwrap();
        assert_eq!(row["clean_error"].as_f64(), Some(100.0 - acc));
        assert_eq!(row["epochs"], 1);
    }
    assert_eq!(rows[0]["paper"]["clean_error"].as_f64(), Some(50.0));
    let (_, svg) = figure_files(&out, "sweep");
    assert!(
        svg.contains("clean error (%) against lambda"),
        "the sweep figure"
    );
    assert!(out.join("curves.png").is_file(), "the training curves");
    // Finished runs are kept: a second call trains nothing and reports the same.
    let metrics =
        |name: &str| std::fs::read(root.join("tiny").join(name).join("metrics.jsonl")).unwrap();
    let before = metrics("lambda1");
    let (ok, _, stderr) = ews(&args);
    assert!(ok, "{stderr}");
    assert_eq!(metrics("lambda1"), before, "nothing retrained");
    assert_eq!(
        read_json(&out.join("report.json")).as_array().unwrap(),
        rows
    );

    let fig = dir.path().join("fig.toml");
    let text = format!(
        "title = \"Subnets\"\nproduces = \"subnets\"\nanalysis = [\"--count\", \"2\", \"--inputs\", \"clean\"]\n\
         [[runs]]\nname = \"lambda1\"\nconfig = \"base.toml\"\nflags = [\"--lambda\", \"1\"]\n{scale}"
    );
    std::fs::write(&fig, text).unwrap();
    let (ok, _, stderr) = ews(&[
        "experiment",
        fig.to_str().unwrap(),
        "--scale",
        "tiny",
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        metrics("lambda1"),
        before,
        "runs are shared between experiments"
    );
    let report = read_json(&root.join("tiny/fig/subnets.json"));
    assert_eq!(floats(&report[0]["inputs"][0]["accuracies"]).len(), 2);
    let (ok, _, stderr) = ews(&["experiment", fig.to_str().unwrap(), "--scale", "huge"]);
    assert!(!ok && stderr.contains("no scale `huge`"), "{stderr}");
    // The same run name with other settings is refused, not silently reused.
    let other = std::fs::read_to_string(&fig)
        .unwrap()
        .replace("\"1\"]", "\"2\"]");
    std::fs::write(&fig, other).unwrap();
    let fig_s = fig.to_str().unwrap();
    let args = [
        "experiment",
        fig_s,
        "--scale",
        "tiny",
        "--root",
        root.to_str().unwrap(),
    ];
    let (ok, _, stderr) = ews(&args);
    assert!(!ok && stderr.contains("config differs"), "{stderr}");
}

/// An ImageNet-shaped run end to end: a folder of photos of several sizes (64-224 px), the
/// torchvision ResNet-18 layout, a few steps; then evaluation, ImageNet-C and ImageNet-P made
/// from the validation folder and evaluated.
#[test]
fn imagenet_shaped_run_through_train_eval_imagenet_c_and_imagenet_p() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imagenet");
    let sizes = [(64u32, 80u32), (120, 96), (224, 160), (150, 224)];
    for split in ["train", "val"] {
        for (c, class) in ["n01", "n02"].iter().enumerate() {
            std::fs::create_dir_all(root.join(split).join(class)).unwrap();
            for (k, &(w, h)) in sizes.iter().enumerate() {
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let v = if c == 0 { x } else { y };
                    image::Rgb([(v * 3 + k as u32 * 20) as u8, (x ^ y) as u8, 90])
                });
                img.save(root.join(split).join(class).join(format!("{k}.JPEG")))
                    .unwrap();
            }
        }
    }
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let dataset = format!("folder:{}", root.display());
    let (ok, _, stderr) = ews(&[
        "train",
        "--dataset",
        &dataset,
        "--model",
        "imagenet-resnet18",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--out",
        run_s,
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("differ in size: training at 224 px"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = ews(&["eval", "--run", run_s]);
    assert!(
        ok && stdout.contains("on 8 test images"),
        "{stdout}{stderr}"
    );

    let val = root.join("val");
    let inc = dir.path().join("inc");
    let args = ["corrupt", "--folder", val.to_str().unwrap(), "--out"];
    let (ok, _, stderr) =
        ews(&[&args[..], &[inc.to_str().unwrap(), "--corruption", "fog"]].concat());
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = ews(&[
        "eval",
        "--run",
        run_s,
        "--imagenet-c",
        inc.to_str().unwrap(),
    ]);
    assert!(ok && stdout.contains("| fog |"), "{stdout}{stderr}");

    let inp = dir.path().join("inp");
    let p_args = ["corrupt", "--folder", val.to_str().unwrap(), "--imagenet-p"];
    let (ok, _, stderr) = ews(&[
        &p_args[..],
        &[
            inp.to_str().unwrap(),
            "--perturbation",
            "rotate",
            "--limit",
            "2",
        ],
    ]
    .concat());
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = ews(&[
        "eval",
        "--run",
        run_s,
        "--imagenet-p",
        inp.to_str().unwrap(),
    ]);
    assert!(ok && stdout.contains("| rotate | 2 |"), "{stdout}{stderr}");
    let report = read_json(&run.join("imagenet_p.json"));
    let fp = report["perturbations"][0]["flip_probability"]
        .as_f64()
        .unwrap();
    assert!((0.0..=100.0).contains(&fp), "{fp}");
    assert_eq!(report["missing"].as_array().unwrap().len(), 9);
}

/// A folder of 32 px images (as the JPEG copy of CIFAR-10) into the CIFAR-C layout: labels
/// by sorted class name, severity-major rows.
#[test]
fn corrupt_a_folder_of_small_images_into_the_cifar_c_layout() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("test");
    for (class, shade) in [("cat", 40u8), ("airplane", 200u8)] {
        std::fs::create_dir_all(test.join(class)).unwrap();
        for k in 0..2u8 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                image::Rgb([shade, (x * 7) as u8, (y as u8).wrapping_add(k)])
            });
            img.save(test.join(class).join(format!("{k}.png"))).unwrap();
        }
    }
    let out = dir.path().join("c10c");
    let (ok, _, stderr) = ews(&[
        "corrupt",
        "--cifar-folder",
        test.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--corruption",
        "contrast",
        "--severity",
        "1",
        "--severity",
        "2",
    ]);
    assert!(ok, "{stderr}");
    let labels = ews_data::npy::read(&out.join("labels.npy")).unwrap();
    assert_eq!(labels.to_i64(), vec![0, 0, 1, 1, 0, 0, 1, 1]);
    let contrast = ews_data::npy::read(&out.join("contrast.npy")).unwrap();
    assert_eq!(contrast.shape, vec![8, 32, 32, 3]);
    // airplane (label 0) is the bright class: its contrast-reduced rows stay brighter.
    let mean = |row: usize| {
        let plane = 32 * 32 * 3;
        let px = &contrast.data[row * plane..(row + 1) * plane];
        px.iter().step_by(3).map(|&v| v as f64).sum::<f64>() / (32.0 * 32.0)
    };
    assert!(mean(0) > mean(2), "{} {}", mean(0), mean(2));
}
