//! What is fuzzed: each reader of outside bytes, with the folder it reads from (valid files
//! made by our own writers or by the reference tools) and the one file whose bytes are
//! mutated.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use ews_augment::corrupt::Corruption;
use ews_data::cifar::{Cifar, parse_records};
use ews_data::cifar_c::{Job, generate};
use ews_data::{ImageSource, Split, folder, npy, pickle, video};
use ews_models::persist::{export_safetensors, import_safetensors, load_weights, save_weights};
use ews_models::{Network, NetworkConfig};
use ews_train::cifar_c::evaluate_cifar_c_with;
use ews_train::trainer::check_resume;
use ews_train::{Method, TrainConfig, TrainOptions, train};
use image::ImageEncoder;

type B = Flex;
type AB = Autodiff<Flex>;

/// A reader that gets the mutated file's path and returns what it read or its error text.
pub type Reader = Box<dyn FnMut(&Path) -> Result<(), String>>;

/// One fuzzed reader.
pub struct Target {
    /// Short name (also the name of its folder under the fuzzer's work folder).
    pub name: &'static str,
    /// The function under test, for the report.
    pub reader: &'static str,
    /// The folder the reader reads; restored to `files` before every input.
    pub dir: PathBuf,
    /// Every file of the folder with its valid bytes.
    pub files: Vec<(String, Vec<u8>)>,
    /// The file whose bytes are mutated.
    pub file: String,
    /// Valid versions of that file, each a starting point for mutations.
    pub seeds: Vec<Vec<u8>>,
    /// The reader.
    pub read: Reader,
}

impl Target {
    /// The path of the mutated file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Reads the folder with the reader under test.
    pub fn read_file(&mut self) -> Result<(), String> {
        let path = self.path();
        (self.read)(&path)
    }

    /// Writes the folder's valid files and `bytes` as the mutated one.
    pub fn prepare(&self, bytes: &[u8]) -> std::io::Result<()> {
        for (name, valid) in &self.files {
            if *name != self.file {
                std::fs::write(self.dir.join(name), valid)?;
            }
        }
        std::fs::write(self.path(), bytes)
    }
}

/// Every target, with its folder made under `work` (the tiny training run of the run-folder
/// targets takes a few seconds).
pub fn all(work: &Path) -> Result<Vec<Target>, String> {
    let mut targets = vec![cifar_binary(work)?, npy_file(work)?];
    for file in ["meta.json", "labels.npy", "gaussian_noise.npy"] {
        targets.push(cifar_c_folder(work, file)?);
    }
    targets.push(pseudo_labels(work)?);
    targets.push(image_file(work, "png")?);
    targets.push(image_file(work, "jpeg")?);
    #[cfg(feature = "libjpeg-turbo")]
    targets.push(jpeg_window(work)?);
    targets.push(sequence_frames(work)?);
    targets.push(ppm_stream(work)?);
    targets.extend(weights(work)?);
    targets.push(torchvision_weights(work)?);
    targets.push(config_file(work)?);
    targets.extend(run_folder(work)?);
    Ok(targets)
}

fn folder(work: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A target over one file with no neighbours.
fn single(
    work: &Path,
    name: &'static str,
    reader: &'static str,
    file: &str,
    seeds: Vec<Vec<u8>>,
    read: Reader,
) -> Result<Target, String> {
    Ok(Target {
        name,
        reader,
        dir: folder(work, name)?,
        files: Vec::new(),
        file: file.into(),
        seeds,
        read,
    })
}

/// A folder's files (names and bytes), sorted by name.
fn snapshot(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            files.push((name.into_owned(), bytes));
        }
    }
    files.sort();
    Ok(files)
}

fn pixels(count: usize, salt: u8) -> Vec<u8> {
    (0..count)
        .map(|i| (i as u8).wrapping_mul(37) ^ salt)
        .collect()
}

fn cifar_binary(work: &Path) -> Result<Target, String> {
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend(pixels(3072, label));
        r
    };
    let seed: Vec<u8> = [3u8, 0, 9].into_iter().flat_map(record).collect();
    let read: Reader = Box::new(|path| {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        parse_records(Cifar::Ten, &bytes, path).map_err(|e| e.to_string())?;
        Ok(())
    });
    single(
        work,
        "cifar-binary",
        "ews_data::cifar::parse_records",
        "data_batch_1.bin",
        vec![seed],
        read,
    )
}

const NPY_GOLDEN: [&[u8]; 3] = [
    include_bytes!("../../ews-data/tests/golden/images_u8.npy"),
    include_bytes!("../../ews-data/tests/golden/labels_i64.npy"),
    include_bytes!("../../ews-data/tests/golden/labels_u8.npy"),
];

fn npy_file(work: &Path) -> Result<Target, String> {
    let mut seeds: Vec<Vec<u8>> = NPY_GOLDEN.iter().map(|b| b.to_vec()).collect();
    seeds.push(npy::encode_u8(&[2, 4, 4, 3], &pixels(96, 1)));
    let read: Reader = Box::new(|path| npy::read(path).map(drop).map_err(|e| e.to_string()));
    single(work, "npy", "ews_data::npy::read", "array.npy", seeds, read)
}

/// A CIFAR-C folder written by `ews corrupt`'s generator (6 images, 2 severities) with
/// `file` mutated; the reader is the evaluation's, with a classifier that looks at every
/// image.
fn cifar_c_folder(work: &Path, file: &str) -> Result<Target, String> {
    let name = match file {
        "meta.json" => "cifar-c-meta",
        "labels.npy" => "cifar-c-labels",
        _ => "cifar-c-images",
    };
    // A work folder of an earlier run holds mutated files: generate afresh.
    let _ = std::fs::remove_dir_all(work.join(name));
    let dir = folder(work, name)?;
    let split = Split {
        images: ImageSource::Memory {
            pixels: pixels(6 * 32 * 32 * 3, 5).into(),
            height: 32,
            width: 32,
        },
        labels: vec![0, 1, 2, 3, 4, 5].into(),
    };
    let job = Job {
        corruptions: &[Corruption::GaussianNoise],
        severities: &[1, 3],
        seed: 0,
        workers: 1,
        frost: None,
    };
    generate(&split, &dir, &job, &|_| {}).map_err(|e| e.to_string())?;
    let files = snapshot(&dir)?;
    let seeds = files
        .iter()
        .filter(|(n, _)| n == file)
        .map(|(_, b)| b.clone())
        .collect();
    let read_dir = dir.clone();
    let read: Reader = Box::new(move |_| {
        evaluate_cifar_c_with(
            &read_dir,
            &[],
            |_| {},
            |split| {
                for i in 0..split.len() {
                    split.image(i)?;
                }
                Ok(50.0)
            },
        )
        .map(drop)
        .map_err(|e| e.to_string())
    });
    Ok(Target {
        name,
        reader: "ews_train::cifar_c::evaluate_cifar_c_with",
        dir,
        files,
        file: file.into(),
        seeds,
        read,
    })
}

const PICKLES: [&[u8]; 5] = [
    include_bytes!("../../ews-data/tests/golden/pseudo_labeled_p2.pickle"),
    include_bytes!("../../ews-data/tests/golden/pseudo_labeled_p4.pickle"),
    include_bytes!("../../ews-data/tests/golden/pseudo_labeled_p5.pickle"),
    include_bytes!("../../ews-data/tests/golden/pseudo_labeled_numpy1_p2.pickle"),
    include_bytes!("../../ews-data/tests/golden/pseudo_labeled_numpy1_p3.pickle"),
];

fn pseudo_labels(work: &Path) -> Result<Target, String> {
    let read: Reader = Box::new(|path| {
        let split = pickle::load_pseudo_labeled(path, 10).map_err(|e| e.to_string())?;
        for i in 0..split.len() {
            split.image(i).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    single(
        work,
        "pickle",
        "ews_data::pickle::load_pseudo_labeled",
        "ti_500K_pseudo_labeled.pickle",
        PICKLES.iter().map(|b| b.to_vec()).collect(),
        read,
    )
}

/// PNG or JPEG files as the image crate writes them, and a decompression bomb.
fn image_file(work: &Path, format: &str) -> Result<Target, String> {
    let rgb = pixels(12 * 9 * 3, 7);
    let mut seeds = Vec::new();
    let encode_error = |e: image::ImageError| e.to_string();
    if format == "png" {
        for (color, data) in [
            (image::ExtendedColorType::Rgb8, rgb.clone()),
            (image::ExtendedColorType::Rgba8, pixels(12 * 9 * 4, 3)),
            (image::ExtendedColorType::L8, pixels(12 * 9, 9)),
        ] {
            let mut out = Vec::new();
            image::codecs::png::PngEncoder::new(&mut out)
                .write_image(&data, 12, 9, color)
                .map_err(encode_error)?;
            seeds.push(out);
        }
        seeds.push(crate::bomb::png(20_000, 20_000));
    } else {
        for quality in [90, 30] {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .write_image(&rgb, 12, 9, image::ExtendedColorType::Rgb8)
                .map_err(encode_error)?;
            seeds.push(out);
        }
    }
    let (name, file) = match format {
        "png" => ("png", "image.png"),
        _ => ("jpeg", "image.jpg"),
    };
    let read: Reader = Box::new(|path| folder::decode(path).map(drop).map_err(|e| e.to_string()));
    single(work, name, "ews_data::folder::decode", file, seeds, read)
}

/// JPEG seeds of every layout (4:2:0, 4:2:2, 4:4:4, progressive, gray, CMYK), Pillow's.
#[cfg(feature = "libjpeg-turbo")]
const JPEG_FIXTURES: [&[u8]; 6] = [
    include_bytes!("../../ews-data/tests/fixtures/jpeg/yuv420.jpg"),
    include_bytes!("../../ews-data/tests/fixtures/jpeg/yuv422.jpg"),
    include_bytes!("../../ews-data/tests/fixtures/jpeg/yuv444.jpg"),
    include_bytes!("../../ews-data/tests/fixtures/jpeg/progressive.jpg"),
    include_bytes!("../../ews-data/tests/fixtures/jpeg/gray.jpg"),
    include_bytes!("../../ews-data/tests/fixtures/jpeg/cmyk.jpg"),
];

/// libjpeg-turbo's window decoding as the loader's RandomResizedCrop uses it (the middle
/// half of the image), on Pillow's JPEG files of every layout.
#[cfg(feature = "libjpeg-turbo")]
fn jpeg_window(work: &Path) -> Result<Target, String> {
    let seeds = JPEG_FIXTURES.iter().map(|b| b.to_vec()).collect();
    let read: Reader = Box::new(|path| {
        let pick = |h: usize, w: usize| (h / 4, w / 4, h.div_ceil(2), w.div_ceil(2));
        folder::decode_window(path, pick)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    single(
        work,
        "jpeg-window",
        "ews_data::folder::decode_window",
        "image.jpg",
        seeds,
        read,
    )
}

/// An ImageNet-P sequence as `ews corrupt --imagenet-p` stores it (uint8 frames `.npy`).
fn sequence_frames(work: &Path) -> Result<Target, String> {
    let seeds = vec![
        npy::encode_u8(&[3, 4, 5, 3], &pixels(180, 2)),
        npy::encode_u8(&[1, 1, 1, 3], &pixels(3, 4)),
    ];
    let read: Reader = Box::new(|path| {
        video::read_frames(path)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    single(
        work,
        "sequence",
        "ews_data::video::read_frames",
        "frames.npy",
        seeds,
        read,
    )
}

/// FFmpeg's PPM stream of a decoded video, as `decode_video` reads it from the pipe.
fn ppm_stream(work: &Path) -> Result<Target, String> {
    let frame = |w: usize, h: usize, salt: u8| {
        let mut out = format!("P6\n{w} {h}\n255\n").into_bytes();
        out.extend(pixels(w * h * 3, salt));
        out
    };
    let seeds = vec![[frame(4, 3, 1), frame(4, 3, 2)].concat(), frame(1, 1, 3)];
    let read: Reader = Box::new(|path| {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        video::parse_ppm_stream(&bytes)
            .map(drop)
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    single(
        work,
        "ppm-stream",
        "ews_data::video::parse_ppm_stream",
        "frames.ppm",
        seeds,
        read,
    )
}

fn tiny_network() -> Result<Network<B>, String> {
    let arch = "wrn-10-1".parse().map_err(|e| format!("{e}"))?;
    NetworkConfig::new(arch)
        .with_num_classes(10)
        .init::<B>(&Default::default())
        .map_err(|e| e.to_string())
}

/// Safetensors import and the best-model file, on a WRN-10-1.
fn weights(work: &Path) -> Result<Vec<Target>, String> {
    let network = tiny_network()?;
    let dir = folder(work, "safetensors")?;
    let exported = dir.join("weights.safetensors");
    export_safetensors(&network, &exported).map_err(|e| e.to_string())?;
    let seed = std::fs::read(&exported).map_err(|e| e.to_string())?;
    let model = network.clone();
    let read: Reader = Box::new(move |path| {
        import_safetensors(model.clone(), path)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let safetensors = single(
        work,
        "safetensors",
        "ews_models::persist::import_safetensors",
        "weights.safetensors",
        vec![seed],
        read,
    )?;
    let dir = folder(work, "best-model")?;
    let saved = dir.join("best_model.mpk");
    save_weights(&network, &saved).map_err(|e| e.to_string())?;
    let seed = std::fs::read(&saved).map_err(|e| e.to_string())?;
    let read: Reader = Box::new(move |path| {
        load_weights(network.clone(), path, &Default::default())
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let best = single(
        work,
        "best-model",
        "ews_models::persist::load_weights",
        "best_model.mpk",
        vec![seed],
        read,
    )?;
    Ok(vec![safetensors, best])
}

const ALEXNET_ZIP: &[u8] = include_bytes!("../../ews-models/tests/golden/alexnet_tiny.pth");
const ALEXNET_LEGACY: &[u8] =
    include_bytes!("../../ews-models/tests/golden/alexnet_tiny_legacy.pth");

/// torchvision's AlexNet weights (`.pth`, PyTorch's zip and legacy formats), as `ews
/// alexnet` reads them.
fn torchvision_weights(work: &Path) -> Result<Target, String> {
    let read: Reader = Box::new(|path| {
        ews_data::torch_pth::read_alexnet::<B>(path, &Default::default())
            .map(drop)
            .map_err(|e| e.to_string())
    });
    single(
        work,
        "torch-pth",
        "ews_data::torch_pth::read_alexnet",
        "alexnet.pth",
        vec![ALEXNET_ZIP.to_vec(), ALEXNET_LEGACY.to_vec()],
        read,
    )
}

/// The tiny EWS run whose folder the resume targets read.
pub fn tiny_run_config() -> TrainConfig {
    TrainConfig {
        dataset: "synthetic".into(),
        synthetic_size: (32, 16),
        image_size: Some(16),
        model: "wrn-10-1".into(),
        method: Method::Ews,
        epochs: 2,
        batch_size: 16,
        eval_batch_size: 16,
        interval_k: 1,
        log_every: 1,
        workers: 1,
        ..TrainConfig::default()
    }
}

const EXPERIMENT: &[u8] =
    include_bytes!("../../../experiments/table4-preact18-trades-awp-extra-ews.toml");

/// A config file as `ews train --config` reads it.
fn config_file(work: &Path) -> Result<Target, String> {
    let seeds = vec![
        tiny_run_config().to_toml().into_bytes(),
        EXPERIMENT.to_vec(),
    ];
    let read: Reader = Box::new(|path| {
        TrainConfig::from_toml_file(path)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    single(
        work,
        "config",
        "ews_train::TrainConfig::from_toml_file",
        "config.toml",
        seeds,
        read,
    )
}

/// A run folder after one of two epochs, resumed with `check_resume` (what `ews train
/// --resume` reads before training: config, checkpoint, metrics) with one file mutated.
fn run_folder(work: &Path) -> Result<Vec<Target>, String> {
    let config = tiny_run_config();
    let made = work.join("run-made");
    let options = TrainOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    if !made.join("checkpoint.ews").is_file() {
        train::<AB>(&config, &made, &options, &Default::default()).map_err(|e| e.to_string())?;
    }
    let files: Vec<_> = snapshot(&made)?
        .into_iter()
        .filter(|(name, _)| !name.starts_with(".lock"))
        .collect();
    let mut targets = Vec::new();
    for (name, file) in [
        ("run-config", "config.toml"),
        ("checkpoint", "checkpoint.ews"),
        ("metrics", "metrics.jsonl"),
    ] {
        let dir = folder(work, name)?;
        let seed = files
            .iter()
            .find(|(n, _)| n == file)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| format!("the tiny run wrote no {file}"))?;
        let (config, read_dir) = (config.clone(), dir.clone());
        let read: Reader = Box::new(move |_| {
            check_resume::<AB>(&config, &read_dir, &Default::default())
                .map(drop)
                .map_err(|e| e.to_string())
        });
        targets.push(Target {
            name,
            reader: "ews_train::trainer::check_resume",
            dir,
            files: files.clone(),
            file: file.into(),
            seeds: vec![seed],
            read,
        });
    }
    Ok(targets)
}
