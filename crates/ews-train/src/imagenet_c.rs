//! ImageNet-C evaluation (Hendrycks & Dietterich, 2019): `DIR/<corruption>/<1..5>/<class>/`
//! image folders; the corruption error of each corruption is the model's error summed over
//! the severities divided by AlexNet's, and the mCE is their mean over the 15 corruptions;
//! the relative mCE uses the error increase over the clean error instead.

use std::path::Path;

use burn::tensor::backend::Backend;
use ews_data::folder;
use ews_data::{Augmentation, LoaderConfig};
use ews_models::Classifier;
use serde::{Deserialize, Serialize};

use crate::cifar_c::BENCHMARK_CORRUPTIONS;
use crate::{TrainError, evaluate};

/// AlexNet's top-1 error on each benchmark corruption, averaged over the severities (the
/// normaliser of the reference evaluation), in [`BENCHMARK_CORRUPTIONS`] order.
pub const ALEXNET_ERRORS: [f64; 15] = [
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572,
    0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500,
];

/// AlexNet's clean top-1 error on ImageNet (torchvision's AlexNet_Weights.IMAGENET1K_V1:
/// acc@1 56.522%), the clean baseline of the relative mCE.
pub const ALEXNET_CLEAN_ERROR: f64 = 1.0 - 0.56522;

/// The errors and CE of one corruption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorruptionError {
    /// Folder name, e.g. `gaussian_noise`.
    pub corruption: String,
    /// Top-1 error (percent) at each severity found.
    pub errors: Vec<f64>,
    /// Sum of the errors over AlexNet's (percent); with all five severities.
    pub ce: Option<f64>,
    /// Relative CE: the error increase over the clean error, over AlexNet's (percent).
    pub relative_ce: Option<f64>,
}

/// The ImageNet-C evaluation of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImagenetCReport {
    /// The folder that was read.
    pub dir: String,
    /// Per corruption.
    pub corruptions: Vec<CorruptionError>,
    /// Mean CE over the 15 corruptions, when all were present at all 5 severities.
    pub mce: Option<f64>,
    /// The model's clean error (percent) used for the relative mCE, if known.
    pub clean_error: Option<f64>,
    /// Mean relative CE over the 15 corruptions.
    pub relative_mce: Option<f64>,
    /// Corruptions or severities not found.
    pub missing: Vec<String>,
}

impl ImagenetCReport {
    /// A markdown table: errors per severity and CE per corruption (and the relative CE
    /// with a clean error), then the mCE.
    pub fn markdown(&self) -> String {
        let relative = self.clean_error.is_some();
        let mut out = String::from("| corruption | s1 | s2 | s3 | s4 | s5 | CE |");
        out.push_str(if relative {
            " relative CE |\n|---|---|---|---|---|---|---|---|\n"
        } else {
            "\n|---|---|---|---|---|---|---|\n"
        });
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for c in &self.corruptions {
            let mut cells: Vec<String> = c.errors.iter().map(|e| format!("{e:.2}")).collect();
            cells.push(cell(c.ce));
            if relative {
                cells.push(cell(c.relative_ce));
            }
            out.push_str(&format!("| {} | {} |\n", c.corruption, cells.join(" | ")));
        }
        if let (None, Some(clean)) = (self.mce, self.clean_error) {
            out.push_str(&format!("\nClean error {clean:.2}%."));
        }
        match self.mce {
            Some(mce) => {
                out.push_str(&format!("\nmCE {mce:.1}% (AlexNet-normalised)"));
                match (self.relative_mce, self.clean_error) {
                    (Some(r), Some(c)) => {
                        out.push_str(&format!("; relative mCE {r:.1}% (clean error {c:.2}%).\n"))
                    }
                    _ => out.push_str("; no relative mCE without the clean error.\n"),
                }
            }
            None => out.push_str(&format!("\nNo mCE: missing {}.\n", self.missing.join(", "))),
        }
        out
    }
}

/// Evaluates `model` on every benchmark corruption folder in `dir`; the class folders are
/// matched to the model's classes by sorted name (as torchvision's ImageFolder does).
pub fn evaluate_imagenet_c<B: Backend, M: Classifier<B>>(
    model: &M,
    dir: &Path,
    loader: &LoaderConfig,
    device: &B::Device,
    clean_error: Option<f64>,
    mut progress: impl FnMut(&str, usize),
) -> Result<ImagenetCReport, TrainError> {
    // ImageNet-C images are already 224 x 224 centre crops: no resize-and-crop again.
    let loader = LoaderConfig {
        augmentation: Augmentation::None,
        ..*loader
    };
    ews_data::unfinished::check_finished(dir)?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut classes: Option<Vec<String>> = None;
    for name in BENCHMARK_CORRUPTIONS {
        let base = dir.join(name);
        if !base.is_dir() {
            missing.push(name.to_string());
            continue;
        }
        let mut errors = Vec::new();
        for severity in 1..=5 {
            let sdir = base.join(severity.to_string());
            if !sdir.is_dir() {
                missing.push(format!("{name}/{severity}"));
                continue;
            }
            let names =
                classes.get_or_insert_with(|| folder::class_folders(&sdir).unwrap_or_default());
            if names.len() != model.num_classes() {
                return Err(TrainError::Run(format!(
                    "{}: {} class folders, but the model has {} classes",
                    sdir.display(),
                    names.len(),
                    model.num_classes()
                )));
            }
            progress(name, severity);
            let split = folder::read_split(&sdir, names)?;
            errors.push(100.0 - evaluate(model, &split, &loader, device)?);
        }
        found.push((name.to_string(), errors));
    }
    Ok(imagenet_c_report(
        dir.display().to_string(),
        found,
        missing,
        clean_error,
    ))
}

/// The CE and relative CE of every corruption and the (relative) mCE, from the top-1 errors
/// (percent) of each benchmark corruption at the severities found (`missing` names what was
/// not found). A corruption's CE is its mean error over AlexNet's, in percent, with all five
/// severities; its relative CE the mean error minus `clean_error` (percent) over AlexNet's
/// mean error minus AlexNet's clean error. The mCE needs all 15 corruptions and nothing
/// missing; a name outside [`BENCHMARK_CORRUPTIONS`] gets no CE.
pub fn imagenet_c_report(
    dir: String,
    found: Vec<(String, Vec<f64>)>,
    missing: Vec<String>,
    clean_error: Option<f64>,
) -> ImagenetCReport {
    let corruptions: Vec<CorruptionError> = found
        .into_iter()
        .map(|(name, errors)| {
            let alexnet = BENCHMARK_CORRUPTIONS
                .iter()
                .position(|c| *c == name)
                .map(|ci| ALEXNET_ERRORS[ci])
                .filter(|_| errors.len() == 5);
            let mean_error = errors.iter().sum::<f64>() / 5.0;
            let ce = alexnet.map(|alexnet| mean_error / alexnet);
            let relative_ce = alexnet
                .zip(clean_error)
                .map(|(alexnet, clean)| (mean_error - clean) / (alexnet - ALEXNET_CLEAN_ERROR));
            CorruptionError {
                corruption: name,
                errors,
                ce,
                relative_ce,
            }
        })
        .collect();
    let all = missing.is_empty()
        && corruptions.len() == 15
        && BENCHMARK_CORRUPTIONS.iter().all(|n| {
            corruptions
                .iter()
                .any(|c| c.corruption == *n && c.ce.is_some())
        });
    let mce = all.then(|| corruptions.iter().filter_map(|c| c.ce).sum::<f64>() / 15.0);
    let relative_mce = mce.and(clean_error).map(|_| {
        corruptions
            .iter()
            .filter_map(|c| c.relative_ce)
            .sum::<f64>()
            / 15.0
    });
    ImagenetCReport {
        dir,
        corruptions,
        mce,
        clean_error,
        relative_mce,
        missing,
    }
}
