//! Accuracy on CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich): one `<corruption>.npy`
//! per corruption (uint8, `(5 n, 32, 32, 3)`, severity-major) and `labels.npy`; the
//! corruption error is 100 minus the mean accuracy over the 15 benchmark corruptions.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use ews_data::npy;
use ews_data::{ImageSource, LoaderConfig, Split};
use ews_models::Network;
use serde::{Deserialize, Serialize};

use crate::{TrainError, evaluate};

/// The 15 benchmark corruptions, in the order of the paper's tables.
pub const BENCHMARK_CORRUPTIONS: [&str; 15] = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
];

/// The four extra corruptions (held out from the benchmark mean).
pub const EXTRA_CORRUPTIONS: [&str; 4] = ["speckle_noise", "gaussian_blur", "spatter", "saturate"];

/// Accuracy on one corruption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorruptionAccuracy {
    /// File stem, e.g. `gaussian_noise`.
    pub corruption: String,
    /// Top-1 accuracy (percent) per severity (the report's `severity_levels`).
    pub severities: Vec<f64>,
    /// Mean over the severities.
    pub mean: f64,
    /// Whether it counts towards the corruption error.
    pub benchmark: bool,
}

/// The CIFAR-C evaluation of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CifarCReport {
    /// The folder that was read.
    pub dir: String,
    /// Test images per severity.
    pub images_per_severity: usize,
    /// The severities in the files (1..=5 for the official sets; `meta.json` of a folder
    /// written by `ews corrupt` may name fewer).
    pub severity_levels: Vec<u8>,
    /// Every corruption evaluated.
    pub corruptions: Vec<CorruptionAccuracy>,
    /// Mean accuracy over the benchmark corruptions present.
    pub mean_accuracy: Option<f64>,
    /// 100 - mean accuracy, when all 15 benchmark corruptions at all 5 severities were
    /// present.
    pub corruption_error: Option<f64>,
    /// Benchmark corruptions without a file in the folder.
    pub missing: Vec<String>,
}

impl CifarCReport {
    /// A markdown table: one row per corruption, accuracy per severity and the mean.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| corruption | s1 | s2 | s3 | s4 | s5 | mean |\n|---|---|---|---|---|---|---|\n",
        );
        for c in &self.corruptions {
            let cells: Vec<String> = c.severities.iter().map(|a| format!("{a:.2}")).collect();
            let name = if c.benchmark {
                c.corruption.clone()
            } else {
                format!("{} (extra)", c.corruption)
            };
            out.push_str(&format!(
                "| {name} | {} | {:.2} |\n",
                cells.join(" | "),
                c.mean
            ));
        }
        match (self.corruption_error, self.mean_accuracy) {
            (Some(ce), Some(acc)) => out.push_str(&format!(
                "\nMean accuracy over the 15 benchmark corruptions: {acc:.2}%; corruption error {ce:.2}%.\n"
            )),
            (None, Some(acc)) => {
                let present = 15 - self.missing.len();
                let mut why = Vec::new();
                if !self.missing.is_empty() {
                    why.push(format!("missing: {}", self.missing.join(", ")));
                }
                if self.severity_levels.len() != 5 {
                    why.push(format!("severities {:?} only", self.severity_levels));
                }
                out.push_str(&format!(
                    "\nMean accuracy over {present} of the 15 benchmark corruptions: {acc:.2}% ({}); \
                     the corruption error needs all 15 at all 5 severities.\n",
                    why.join("; ")
                ));
            }
            _ => {}
        }
        out
    }
}

fn bad(path: &Path, message: String) -> TrainError {
    TrainError::Data(ews_data::DataError::BadFile {
        path: path.display().to_string(),
        message,
    })
}

/// Evaluates `model` on every `<corruption>.npy` in `dir` (or only `only`, if given) with
/// `labels.npy`; shapes and lengths are checked and errors name the file.
pub fn evaluate_cifar_c<B: Backend>(
    model: &Network<B>,
    dir: &Path,
    loader: &LoaderConfig,
    only: &[String],
    device: &B::Device,
    progress: impl FnMut(&str),
) -> Result<CifarCReport, TrainError> {
    evaluate_cifar_c_with(dir, only, progress, |split| {
        evaluate(model, split, loader, device)
    })
}

/// [`evaluate_cifar_c`] with any classifier: `accuracy` gets the images and labels of one
/// corruption at one severity (rows `(s - 1) n .. s n` of the severity-major files, `n`
/// images per severity) and returns its top-1 accuracy in percent.
pub fn evaluate_cifar_c_with(
    dir: &Path,
    only: &[String],
    mut progress: impl FnMut(&str),
    mut accuracy: impl FnMut(&Split) -> Result<f64, TrainError>,
) -> Result<CifarCReport, TrainError> {
    ews_data::unfinished::check_finished(dir)?;
    let labels_path = dir.join("labels.npy");
    if !labels_path.is_file() {
        return Err(TrainError::Data(ews_data::DataError::Missing {
            path: labels_path.display().to_string(),
            hint: "a CIFAR-C folder holds labels.npy and <corruption>.npy files (`ews corrupt` \
                   writes one; the official sets are on Zenodo, records 2535967 and 3555552)"
                .into(),
        }));
    }
    let labels_array = npy::read(&labels_path)?;
    if labels_array.shape.len() != 1 {
        return Err(bad(
            &labels_path,
            format!(
                "labels must be one-dimensional, got shape {:?}",
                labels_array.shape
            ),
        ));
    }
    let labels = labels_array.to_i64();
    let total = labels.len();
    if total == 0 {
        return Err(bad(&labels_path, "no labels".into()));
    }
    // A folder written by `ews corrupt` says which severities it holds.
    let meta_path = dir.join("meta.json");
    let levels: Vec<u8> = if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(|e| TrainError::Io {
            path: meta_path.display().to_string(),
            source: e,
        })?;
        let meta: ews_data::cifar_c::CifarCMeta = serde_json::from_str(&text)
            .map_err(|e| bad(&meta_path, format!("not a CIFAR-C meta file: {e}")))?;
        let mut distinct = meta.severities.clone();
        distinct.sort();
        distinct.dedup();
        if meta.severities.is_empty()
            || distinct.len() != meta.severities.len()
            || distinct.iter().any(|s| !(1..=5).contains(s))
        {
            return Err(bad(
                &meta_path,
                format!(
                    "severities {:?}: expected distinct severities in 1..=5",
                    meta.severities
                ),
            ));
        }
        meta.severities
    } else {
        vec![1, 2, 3, 4, 5]
    };
    let k = levels.len();
    if k == 0 || !total.is_multiple_of(k) {
        return Err(bad(
            &labels_path,
            format!("{total} labels do not split into {k} severities"),
        ));
    }
    let per_severity = total / k;
    if let Some(bad_label) = labels.iter().find(|&&l| l < 0 || l > u32::MAX as i64) {
        return Err(bad(&labels_path, format!("label {bad_label} out of range")));
    }
    let labels: Vec<u32> = labels.into_iter().map(|l| l as u32).collect();

    let known: Vec<&str> = BENCHMARK_CORRUPTIONS
        .iter()
        .chain(EXTRA_CORRUPTIONS.iter())
        .copied()
        .collect();
    let names: Vec<String> = if only.is_empty() {
        known
            .iter()
            .filter(|n| dir.join(format!("{n}.npy")).is_file())
            .map(|n| n.to_string())
            .collect()
    } else {
        only.to_vec()
    };
    if names.is_empty() {
        return Err(bad(dir, "no <corruption>.npy files found".into()));
    }

    let mut corruptions = Vec::new();
    for name in &names {
        let path = dir.join(format!("{name}.npy"));
        progress(name);
        let array = npy::read(&path)?;
        let [n, h, w, c] = array.shape[..] else {
            return Err(bad(
                &path,
                format!(
                    "expected shape (n, height, width, 3), got {:?}",
                    array.shape
                ),
            ));
        };
        if c != 3 || array.dtype != npy::Dtype::U8 {
            return Err(bad(&path, "expected uint8 RGB images".into()));
        }
        if n != total {
            return Err(bad(
                &path,
                format!("{n} images but labels.npy has {total} labels"),
            ));
        }
        let pixels = Arc::new(array.data);
        let plane = h * w * 3;
        let mut severities = Vec::with_capacity(k);
        for s in 0..k {
            let range = s * per_severity..(s + 1) * per_severity;
            let split = Split {
                images: ImageSource::Memory {
                    pixels: Arc::new(pixels[range.start * plane..range.end * plane].to_vec()),
                    height: h,
                    width: w,
                },
                labels: Arc::new(labels[range].to_vec()),
            };
            severities.push(accuracy(&split)?);
        }
        let mean = severities.iter().sum::<f64>() / k as f64;
        corruptions.push(CorruptionAccuracy {
            corruption: name.clone(),
            severities,
            mean,
            benchmark: BENCHMARK_CORRUPTIONS.contains(&name.as_str()),
        });
    }
    let bench: Vec<f64> = corruptions
        .iter()
        .filter(|c| c.benchmark)
        .map(|c| c.mean)
        .collect();
    let missing: Vec<String> = BENCHMARK_CORRUPTIONS
        .iter()
        .filter(|n| !corruptions.iter().any(|c| c.corruption == **n))
        .map(|n| n.to_string())
        .collect();
    let mean_accuracy = (!bench.is_empty()).then(|| bench.iter().sum::<f64>() / bench.len() as f64);
    Ok(CifarCReport {
        dir: dir.display().to_string(),
        images_per_severity: per_severity,
        corruption_error: mean_accuracy
            .filter(|_| missing.is_empty() && k == 5)
            .map(|a| 100.0 - a),
        severity_levels: levels,
        mean_accuracy,
        missing,
        corruptions,
    })
}
