//! ImageNet-P evaluation (Hendrycks & Dietterich, 2019; the reference `ImageNet-P/test.py`):
//! `DIR/<perturbation>/<class>/<video>` sequences of frames; the flip probability (FP) of a
//! perturbation is the share of compared frame pairs whose top-1 class differs, averaged
//! per video and then over videos; the top-5 distance (T5D) compares the top-5 rankings of
//! the same pairs. Noise perturbations compare every frame with the first; the others
//! compare frames `difficulty` apart. The mean flip rate (mFR) averages FP / AlexNet's FP
//! over the ten test perturbations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ews_augment::Image;
use ews_data::folder;
use ews_data::sequence_reader::read_ahead;
use ews_models::Classifier;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The ten test perturbations of ImageNet-P, in the order of the paper's Table 3.
pub const TEST_PERTURBATIONS: [&str; 10] = [
    "gaussian_noise",
    "shot_noise",
    "motion_blur",
    "zoom_blur",
    "snow",
    "brightness",
    "translate",
    "rotate",
    "tilt",
    "scale",
];

/// The four validation perturbations of ImageNet-P (the reference `test.py` reads them too).
pub const VALIDATION_PERTURBATIONS: [&str; 4] =
    ["speckle_noise", "gaussian_blur", "spatter", "shear"];

/// Whether the reference treats `perturbation` as noise (every frame against the first).
pub fn is_noise(perturbation: &str) -> bool {
    perturbation.contains("noise")
}

/// The folder of `perturbation` at `difficulty`: noise sequences above 1 are `NAME_D`.
pub fn folder_of(perturbation: &str, difficulty: usize) -> String {
    match is_noise(perturbation) && difficulty > 1 {
        true => format!("{perturbation}_{difficulty}"),
        false => perturbation.to_string(),
    }
}

/// The frame pairs the reference compares in a sequence of `frames` frames: (0, k) for
/// noise, (j, j + difficulty) otherwise.
pub fn compared_pairs(frames: usize, noise: bool, difficulty: usize) -> Vec<(usize, usize)> {
    match noise {
        true => (1..frames).map(|k| (0, k)).collect(),
        false => (difficulty..frames).map(|k| (k - difficulty, k)).collect(),
    }
}

/// The classes of `logits` ordered by descending score, ties by index (SciPy's
/// `rankdata(-x, method='ordinal')`, as the reference ranks).
fn ranking(logits: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]).then(i.cmp(&j)));
    order
}

/// One frame's ranking: its classes by descending score (`order`) and each class's 0-based
/// rank (`rank`).
struct FrameRanking {
    order: Vec<usize>,
    rank: Vec<usize>,
}

impl FrameRanking {
    fn new(logits: &[f32]) -> Self {
        let order = ranking(logits);
        let mut rank = vec![0usize; logits.len()];
        for (r, &class) in order.iter().enumerate() {
            rank[class] = r;
        }
        Self { order, rank }
    }

    /// The top-5 distance from this frame (a) to `b`.
    fn top5_distance(&self, b: &FrameRanking) -> f64 {
        self.order
            .iter()
            .take(5)
            .enumerate()
            .map(|(k, &class)| k.abs_diff(b.rank[class].min(5)) as f64)
            .sum()
    }
}

/// The reference's top-5 distance between two frames: for the k-th class of frame `a`'s
/// top 5 (k = 0..4), |k - min(its 1-based rank in frame b - 1, 5)|, summed.
pub fn top5_distance(a: &[f32], b: &[f32]) -> f64 {
    FrameRanking::new(a).top5_distance(&FrameRanking::new(b))
}

/// (flip probability, top-5 distance) of one video from its frames' logits (`frames` rows
/// of `classes` values); every frame is ranked once.
pub fn video_scores(
    logits: &[f32],
    classes: usize,
    noise: bool,
    difficulty: usize,
) -> Option<(f64, f64)> {
    let frames: Vec<FrameRanking> = logits
        .chunks_exact(classes)
        .map(FrameRanking::new)
        .collect();
    let pairs = compared_pairs(frames.len(), noise, difficulty);
    if pairs.is_empty() {
        return None;
    }
    let flips = pairs
        .iter()
        .filter(|&&(a, b)| frames[a].order[0] != frames[b].order[0])
        .count();
    let t5d: f64 = pairs
        .iter()
        .map(|&(a, b)| frames[a].top5_distance(&frames[b]))
        .sum();
    let n = pairs.len() as f64;
    Some((flips as f64 / n, t5d / n))
}

/// AlexNet's flip probability (and top-5 distance) per perturbation: the normalisers of the
/// mFR (and mT5D), read from a JSON file `{"flip_probability": {"gaussian_noise": 0.x,
/// ...}, "top5_distance": {...}, "difficulty": 1}` as `ews alexnet --imagenet-p` writes it
/// (torchvision's pretrained AlexNet evaluated as the reference `test.py -m alexnet` does).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalizers {
    /// AlexNet's flip probability (a fraction) per perturbation.
    pub flip_probability: BTreeMap<String, f64>,
    /// AlexNet's top-5 distance per perturbation.
    #[serde(default)]
    pub top5_distance: BTreeMap<String, f64>,
    /// The difficulty the values were measured at (absent: not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<usize>,
}

impl Normalizers {
    /// Reads and checks a normaliser file; errors name it.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))?;
        let n: Self = serde_json::from_str(&text)
            .map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))?;
        let values = n.flip_probability.iter().chain(&n.top5_distance);
        if let Some((name, v)) = values
            .into_iter()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0))
        {
            return Err(TrainError::Run(format!(
                "{}: `{name}` must be a positive number, got {v}",
                path.display()
            )));
        }
        Ok(n)
    }

    /// AlexNet's evaluation as normalisers (fractions, by perturbation name).
    ///
    /// # Errors
    /// When AlexNet never flipped (or never changed its top 5) on a perturbation: a value
    /// of 0 normalises nothing, so the folder needs more videos.
    pub fn from_report(report: &ImagenetPReport) -> Result<Self, TrainError> {
        let mut out = Self {
            difficulty: Some(report.difficulty),
            ..Self::default()
        };
        for p in &report.perturbations {
            if p.flip_probability <= 0.0 || p.top5_distance <= 0.0 {
                return Err(TrainError::Run(format!(
                    "{}/{}: the model never changed its prediction over {} videos, so it \
                     cannot normalise flip rates; evaluate more videos",
                    report.dir, p.perturbation, p.videos
                )));
            }
            let name = base_name(&p.perturbation, report.difficulty).to_string();
            out.flip_probability
                .insert(name.clone(), p.flip_probability / 100.0);
            out.top5_distance.insert(name, p.top5_distance);
        }
        Ok(out)
    }
}

/// The perturbation of a folder name: `gaussian_noise_2` at difficulty 2 is `gaussian_noise`.
fn base_name(folder: &str, difficulty: usize) -> &str {
    folder
        .strip_suffix(format!("_{difficulty}").as_str())
        .unwrap_or(folder)
}

/// The scores of one perturbation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerturbationScore {
    /// Folder name, e.g. `translate` or `gaussian_noise_2`.
    pub perturbation: String,
    /// Videos evaluated.
    pub videos: usize,
    /// Flip probability (percent).
    pub flip_probability: f64,
    /// Top-5 distance.
    pub top5_distance: f64,
    /// Flip rate: FP over AlexNet's (percent), with a normaliser.
    pub flip_rate: Option<f64>,
    /// T5D over AlexNet's (percent), with a normaliser.
    pub relative_t5d: Option<f64>,
}

/// The ImageNet-P evaluation of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImagenetPReport {
    /// The folder that was read.
    pub dir: String,
    /// Frames `difficulty` apart are compared (non-noise perturbations).
    pub difficulty: usize,
    /// Per perturbation found.
    pub perturbations: Vec<PerturbationScore>,
    /// Mean flip rate over the ten test perturbations (percent), with every one present
    /// and normalised.
    pub mfr: Option<f64>,
    /// Mean flip probability over the test perturbations found (percent).
    pub mean_flip_probability: f64,
    /// Mean top-5 distance over the test perturbations found.
    pub mean_t5d: f64,
    /// Mean relative T5D (percent), with every one present and normalised.
    pub mt5d: Option<f64>,
    /// Test perturbations not found.
    pub missing: Vec<String>,
}

/// The report from each perturbation's (name, videos, mean FP fraction, mean T5D).
pub fn imagenet_p_report(
    dir: String,
    difficulty: usize,
    found: Vec<(String, usize, f64, f64)>,
    normalizers: Option<&Normalizers>,
) -> ImagenetPReport {
    let base = |name: &str| base_name(name, difficulty).to_string();
    let perturbations: Vec<PerturbationScore> = found
        .into_iter()
        .map(|(name, videos, fp, t5d)| {
            let key = base(&name);
            let norm = |m: Option<&BTreeMap<String, f64>>| m.and_then(|m| m.get(&key)).copied();
            PerturbationScore {
                flip_rate: norm(normalizers.map(|n| &n.flip_probability)).map(|a| 100.0 * fp / a),
                relative_t5d: norm(normalizers.map(|n| &n.top5_distance)).map(|a| 100.0 * t5d / a),
                perturbation: name,
                videos,
                flip_probability: 100.0 * fp,
                top5_distance: t5d,
            }
        })
        .collect();
    let tests: Vec<&PerturbationScore> = perturbations
        .iter()
        .filter(|p| TEST_PERTURBATIONS.contains(&base(&p.perturbation).as_str()))
        .collect();
    let missing: Vec<String> = TEST_PERTURBATIONS
        .iter()
        .filter(|t| !tests.iter().any(|p| base(&p.perturbation) == **t))
        .map(|t| t.to_string())
        .collect();
    let mean = |values: Vec<f64>| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let complete = |values: Vec<Option<f64>>| {
        let all: Option<Vec<f64>> = values.into_iter().collect();
        all.filter(|v| v.len() == TEST_PERTURBATIONS.len() && missing.is_empty())
            .map(mean)
    };
    ImagenetPReport {
        dir,
        difficulty,
        mfr: complete(tests.iter().map(|p| p.flip_rate).collect()),
        mt5d: complete(tests.iter().map(|p| p.relative_t5d).collect()),
        mean_flip_probability: mean(tests.iter().map(|p| p.flip_probability).collect()),
        mean_t5d: mean(tests.iter().map(|p| p.top5_distance).collect()),
        perturbations,
        missing,
    }
}

impl ImagenetPReport {
    /// A markdown table of FP, FR and T5D per perturbation, then the means.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "ImageNet-P, difficulty {}: flip probability (FP), flip rate (FR = FP / AlexNet's FP), top-5 distance (T5D).\n\n| perturbation | videos | FP % | FR % | T5D |\n|---|---|---|---|---|\n",
            self.difficulty
        );
        for p in &self.perturbations {
            let fr = p.flip_rate.map_or("-".to_string(), |v| format!("{v:.1}"));
            out.push_str(&format!(
                "| {} | {} | {:.2} | {fr} | {:.3} |\n",
                p.perturbation, p.videos, p.flip_probability, p.top5_distance
            ));
        }
        out.push_str(&format!(
            "\nMean FP {:.2}%, mean T5D {:.3} over the test perturbations found.\n",
            self.mean_flip_probability, self.mean_t5d
        ));
        match (self.mfr, self.missing.is_empty()) {
            (Some(mfr), _) => out.push_str(&format!("mFR {mfr:.1}% (AlexNet-normalised).\n")),
            (None, true) => out.push_str(
                "No mFR: pass AlexNet's flip probabilities (--alexnet-p FILE) to normalise.\n",
            ),
            (None, false) => {
                out.push_str(&format!("No mFR: missing {}.\n", self.missing.join(", ")))
            }
        }
        if let Some(mt5d) = self.mt5d {
            out.push_str(&format!("mT5D {mt5d:.1}% (AlexNet-normalised).\n"));
        }
        out
    }
}

/// The sequence files (`.mp4` or `.npy`) of `DIR/<class>/`, sorted.
fn sequence_files(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let mut files = Vec::new();
    for class in folder::sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
    {
        for f in folder::sorted_entries(&class)? {
            if f.extension().is_some_and(|e| e == "mp4" || e == "npy") {
                files.push(f);
            }
        }
    }
    Ok(files)
}

/// Threads that read sequences ahead of the model: one per core (each runs an FFmpeg
/// process on videos).
fn read_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The model's logits for every frame of a sequence (one batch), `frames x classes`.
fn frame_logits<B: Backend, M: Classifier<B>>(
    model: &M,
    frames: &[Image],
    path: &Path,
    device: &B::Device,
) -> Result<Vec<f32>, TrainError> {
    let (h, w) = (frames[0].height, frames[0].width);
    if frames.iter().any(|f| (f.height, f.width) != (h, w)) {
        return Err(TrainError::Run(format!(
            "{}: frames of different sizes",
            path.display()
        )));
    }
    let min = model.min_input_size();
    if h.min(w) < min {
        return Err(TrainError::Run(format!(
            "{}: frames of {w} x {h}, the model needs at least {min} x {min}",
            path.display()
        )));
    }
    let plane = 3 * h * w;
    let mut pixels = vec![0f32; frames.len() * plane];
    for (frame, out) in frames.iter().zip(pixels.chunks_exact_mut(plane)) {
        frame.write_chw_unit(out);
    }
    let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [frames.len(), 3, h, w]), device);
    let logits = model.logits(x).into_data();
    logits
        .to_vec::<f32>()
        .map_err(|e| TrainError::Run(format!("logits: {e:?}")))
}

/// Evaluates `model` on the `perturbations` folders of `dir` (noise folders `NAME_D` at a
/// difficulty D above 1, as the dataset names them), with `progress(perturbation, videos
/// done, videos)` after every video.
pub fn evaluate_imagenet_p<B: Backend, M: Classifier<B>>(
    model: &M,
    dir: &Path,
    perturbations: &[String],
    difficulty: usize,
    normalizers: Option<&Normalizers>,
    device: &B::Device,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<ImagenetPReport, TrainError> {
    if difficulty == 0 {
        return Err(TrainError::Run("difficulty must be at least 1".into()));
    }
    if let Some(measured) = normalizers.and_then(|n| n.difficulty)
        && measured != difficulty
    {
        return Err(TrainError::Run(format!(
            "the AlexNet normalisers were measured at difficulty {measured}, this evaluation \
             is at difficulty {difficulty}: measure them at {difficulty} (ews alexnet \
             --imagenet-p DIR --difficulty {difficulty})"
        )));
    }
    ews_data::unfinished::check_finished(dir)?;
    let mut found = Vec::new();
    for name in perturbations {
        let noise = is_noise(name);
        let folder = folder_of(name, difficulty);
        if !dir.join(&folder).is_dir() {
            continue;
        }
        let files = sequence_files(&dir.join(&folder))?;
        let (mut fp, mut t5d) = (0.0, 0.0);
        let reader = read_ahead(&files, read_workers());
        for ((i, path), frames) in files.iter().enumerate().zip(reader) {
            let logits = frame_logits(model, &frames?, path, device)?;
            let (f, t) =
                video_scores(&logits, model.num_classes(), noise, difficulty).ok_or_else(|| {
                    TrainError::Run(format!(
                        "{}: too few frames to compare at difficulty {difficulty}",
                        path.display()
                    ))
                })?;
            fp += f;
            t5d += t;
            progress(&folder, i + 1, files.len());
        }
        if files.is_empty() {
            return Err(TrainError::Run(format!(
                "{}: no .mp4 or .npy sequences in <class> folders",
                dir.join(&folder).display()
            )));
        }
        let n = files.len() as f64;
        found.push((folder, files.len(), fp / n, t5d / n));
    }
    Ok(imagenet_p_report(
        dir.display().to_string(),
        difficulty,
        found,
        normalizers,
    ))
}
