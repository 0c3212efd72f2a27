//! AutoAttack (Croce & Hein 2020): an ensemble of parameter-free attacks, each run only on
//! the points that every earlier attack failed to fool.
//!
//! - 'standard': APGD-CE (1 restart) -> APGD-T (9 targets) -> FAB-T (9 targets) ->
//!   Square (5000 queries).
//! - 'plus': APGD-CE (5 restarts) -> APGD-DLR (5 restarts) -> FAB (5 restarts) -> Square ->
//!   APGD-T -> FAB-T.
//! - 'rand' (randomised defences): APGD-CE and APGD-DLR with 20 EOT gradient samples.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::apgd::{Apgd, ApgdLoss};
use crate::checks::{self, Flag};
use crate::fab::Fab;
use crate::square::Square;
use crate::{
    AttackError, Classifier, GradientCheck, Norm, cross_entropy_each, floats, input_gradient,
    predictions,
};

/// Which AutoAttack version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// APGD-CE, APGD-T, FAB-T, Square.
    Standard,
    /// Adds restarts, APGD-DLR and untargeted FAB.
    Plus,
    /// APGD-CE and APGD-DLR with EOT over 20 samples.
    Rand,
}

impl FromStr for Version {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(Version::Standard),
            "plus" => Ok(Version::Plus),
            "rand" => Ok(Version::Rand),
            _ => Err(AttackError::Config(format!(
                "autoattack version `{s}`: expected standard, plus or rand"
            ))),
        }
    }
}

/// One member attack of the ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Member {
    /// APGD on cross-entropy.
    #[serde(rename = "apgd-ce")]
    ApgdCe,
    /// APGD on the DLR loss.
    #[serde(rename = "apgd-dlr")]
    ApgdDlr,
    /// APGD on the targeted DLR loss.
    #[serde(rename = "apgd-t")]
    ApgdT,
    /// Untargeted FAB.
    #[serde(rename = "fab")]
    Fab,
    /// Targeted FAB.
    #[serde(rename = "fab-t")]
    FabT,
    /// Square attack.
    #[serde(rename = "square")]
    Square,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Member::ApgdCe => "apgd-ce",
            Member::ApgdDlr => "apgd-dlr",
            Member::ApgdT => "apgd-t",
            Member::Fab => "fab",
            Member::FabT => "fab-t",
            Member::Square => "square",
        })
    }
}

/// AutoAttack settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoAttack {
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Version.
    pub version: Version,
    /// Seed shared by all members (as the reference).
    pub seed: u64,
    /// Points per attack batch.
    pub batch_size: usize,
    /// Iterations of APGD and FAB (100).
    pub n_iter: usize,
    /// Square's query budget (5000).
    pub square_queries: usize,
}

/// Robust accuracy after one member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberResult {
    /// The member.
    pub attack: Member,
    /// Robust accuracy (percent) after it and all earlier members.
    pub robust_accuracy: f64,
    /// Points it fooled.
    pub fooled: usize,
    /// Seconds it took.
    pub seconds: f64,
}

/// The outcome of an AutoAttack evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Version run.
    pub version: Version,
    /// Norm.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Points evaluated.
    pub n: usize,
    /// Clean accuracy (percent).
    pub clean_accuracy: f64,
    /// Per member, in order.
    pub members: Vec<MemberResult>,
    /// Final robust accuracy (percent).
    pub robust_accuracy: f64,
    /// Largest perturbation norm over the adversarial examples (at most eps, up to float32
    /// rounding).
    pub max_perturbation: f64,
    /// Total seconds.
    pub seconds: f64,
    /// Warnings of the sanity checks (see [`crate::checks`]); empty when all passed.
    #[serde(default)]
    pub flags: Vec<Flag>,
}

/// The settings a member runs with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum MemberSettings {
    /// APGD (CE, DLR or targeted DLR).
    Apgd(Apgd),
    /// FAB or FAB-T.
    Fab(Fab),
    /// Square.
    Square(Square),
}

/// Passes of the randomness check (the reference's `check_randomized`).
const RANDOMNESS_PASSES: usize = 5;

impl AutoAttack {
    /// The reference settings of a version.
    pub fn new(norm: Norm, eps: f64, version: Version) -> Self {
        Self {
            norm,
            eps,
            version,
            seed: 0,
            batch_size: 250,
            n_iter: 100,
            square_queries: 5000,
        }
    }

    /// The members of this version, in order.
    pub fn members(&self) -> Vec<Member> {
        match self.version {
            Version::Standard => vec![Member::ApgdCe, Member::ApgdT, Member::FabT, Member::Square],
            Version::Plus => vec![
                Member::ApgdCe,
                Member::ApgdDlr,
                Member::Fab,
                Member::Square,
                Member::ApgdT,
                Member::FabT,
            ],
            Version::Rand => vec![Member::ApgdCe, Member::ApgdDlr],
        }
    }

    /// The members that run against a model with `classes` classes, with their settings,
    /// and the flags for members skipped (APGD-DLR needs 3 classes, APGD-T 4) or given fewer
    /// target classes than the reference's 9 (at most `classes - 1`).
    pub fn plan(&self, classes: usize) -> (Vec<(Member, MemberSettings)>, Vec<Flag>) {
        let mut plan = Vec::new();
        let mut flags = Vec::new();
        let targets = |member: Member, flags: &mut Vec<Flag>| {
            let possible = classes.saturating_sub(1);
            if possible < 9 {
                flags.push(checks::fewer_targets_flag(member, 9, classes));
            }
            9.min(possible)
        };
        for member in self.members() {
            let settings = match member {
                Member::ApgdCe => MemberSettings::Apgd(self.apgd(ApgdLoss::CrossEntropy)),
                Member::ApgdDlr if classes < 3 => {
                    flags.push(checks::skipped_flag(member, 3, classes));
                    continue;
                }
                Member::ApgdDlr => MemberSettings::Apgd(self.apgd(ApgdLoss::Dlr)),
                Member::ApgdT if classes < 4 => {
                    flags.push(checks::skipped_flag(member, 4, classes));
                    continue;
                }
                Member::ApgdT => {
                    let n_targets = targets(member, &mut flags);
                    MemberSettings::Apgd(self.apgd(ApgdLoss::DlrTargeted { n_targets }))
                }
                Member::Fab => MemberSettings::Fab(self.fab(None)),
                Member::FabT => MemberSettings::Fab(self.fab(Some(targets(member, &mut flags)))),
                Member::Square => MemberSettings::Square(self.square()),
            };
            plan.push((member, settings));
        }
        (plan, flags)
    }

    fn apgd(&self, loss: ApgdLoss) -> Apgd {
        let restarts = match (self.version, loss) {
            (Version::Plus, ApgdLoss::CrossEntropy | ApgdLoss::Dlr) => 5,
            _ => 1,
        };
        Apgd {
            n_iter: self.n_iter,
            restarts,
            loss,
            eot_iter: if self.version == Version::Rand { 20 } else { 1 },
            seed: self.seed,
            ..Apgd::ce(self.norm, self.eps)
        }
    }

    /// FAB-T with `n_targets` targets, or untargeted FAB for `None`.
    fn fab(&self, n_targets: Option<usize>) -> Fab {
        let base = match n_targets {
            Some(_) => Fab::targeted(self.norm, self.eps),
            None => Fab::untargeted(self.norm, self.eps),
        };
        Fab {
            n_iter: self.n_iter,
            n_targets,
            seed: self.seed,
            ..base
        }
    }

    fn square(&self) -> Square {
        Square {
            n_queries: self.square_queries,
            seed: self.seed,
            ..Square::autoattack(self.norm, self.eps)
        }
    }

    /// Checks the settings against the number of classes (at least 2; members that need
    /// more are skipped with a flag, see [`AutoAttack::plan`]).
    pub fn validate(&self, classes: usize) -> Result<(), AttackError> {
        if self.batch_size == 0 {
            return Err(AttackError::Config(
                "autoattack batch size must be at least 1".into(),
            ));
        }
        if classes < 2 {
            return Err(AttackError::Config(format!(
                "autoattack needs at least 2 classes, the model has {classes}"
            )));
        }
        for (_, settings) in self.plan(classes).0 {
            match settings {
                MemberSettings::Apgd(a) => a.validate(classes)?,
                MemberSettings::Fab(f) => f.validate(classes)?,
                MemberSettings::Square(s) => s.validate()?,
            }
        }
        Ok(())
    }

    /// Runs the ensemble on `images` (NCHW in [0, 1], `shape`) with `labels`; returns the
    /// report and the adversarial examples (clean images where no attack succeeded).
    /// `progress` hears a line after each member and each flag's
    /// [`Flag::progress_line`].
    pub fn run<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        images: &[f32],
        shape: [usize; 4],
        labels: &[i64],
        device: &burn::tensor::Device<B::InnerBackend>,
        mut progress: impl FnMut(&str),
    ) -> Result<(Report, Vec<f32>), AttackError> {
        let started = Instant::now();
        let data = Data::<B::InnerBackend>::new(images, shape, labels, device)?;
        let n = shape[0];
        let (mut robust, classes) = self.clean_pass::<B, C>(model, &data);
        self.validate(classes)?;
        let percent =
            |flags: &[bool]| 100.0 * flags.iter().filter(|&&r| r).count() as f64 / n.max(1) as f64;
        let clean_accuracy = percent(&robust);
        progress(&format!("clean accuracy: {clean_accuracy:.2}%"));
        let (plan, mut flags) = self.plan(classes);
        let first: Vec<usize> = (0..n.min(self.batch_size)).collect();
        flags.extend(self.model_checks::<B, C>(model, data.upload(&first), &labels[..first.len()]));
        for flag in &flags {
            progress(&flag.progress_line());
        }
        let mut adversarial = images.to_vec();
        let mut members = Vec::new();
        for (member, settings) in plan {
            let member_start = Instant::now();
            let (fooled, gradient) =
                self.attack_member::<B, C>(model, &data, settings, &mut robust, &mut adversarial);
            let result = MemberResult {
                attack: member,
                robust_accuracy: percent(&robust),
                fooled,
                seconds: member_start.elapsed().as_secs_f64(),
            };
            progress(&format!(
                "robust accuracy after {}: {:.2}% ({:.1} s)",
                member, result.robust_accuracy, result.seconds
            ));
            members.push(result);
            let dlr = matches!(member, Member::ApgdDlr | Member::ApgdT);
            if let Some(flag) = checks::zero_gradient_flag(member, gradient).filter(|_| dlr) {
                progress(&flag.progress_line());
                flags.push(flag);
            }
        }
        if let Some(flag) = checks::square_flag(clean_accuracy, &members) {
            progress(&flag.progress_line());
            flags.push(flag);
        }
        let report = Report {
            version: self.version,
            norm: self.norm,
            eps: self.eps,
            n,
            clean_accuracy,
            robust_accuracy: percent(&robust),
            members,
            max_perturbation: self.max_perturbation(images, &adversarial, data.dim()),
            seconds: started.elapsed().as_secs_f64(),
            flags,
        };
        Ok((report, adversarial))
    }

    /// Runs one member on the points still `robust`, batch by batch; fooled points leave
    /// `robust` and get their image in `adversarial`. Returns how many it fooled and the
    /// start gradients it saw (APGD only).
    fn attack_member<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        data: &Data<B::InnerBackend>,
        settings: MemberSettings,
        robust: &mut [bool],
        adversarial: &mut [f32],
    ) -> (usize, GradientCheck) {
        let dim = data.dim();
        let todo: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
        let mut fooled = 0;
        let mut gradient = GradientCheck::default();
        for batch in todo.chunks(self.batch_size) {
            let y: Vec<i64> = batch.iter().map(|&i| data.labels[i]).collect();
            let (x_adv, check) = run_member::<B, C>(settings, model, data.upload(batch), &y);
            gradient = gradient.merge(check);
            let pred = predictions(model.logits(x_adv.clone()));
            let values = floats(x_adv);
            for (j, &i) in batch.iter().enumerate() {
                if pred[j] != y[j] {
                    robust[i] = false;
                    fooled += 1;
                    adversarial[i * dim..(i + 1) * dim]
                        .copy_from_slice(&values[j * dim..(j + 1) * dim]);
                }
            }
        }
        (fooled, gradient)
    }

    /// Which points the model classifies correctly, and its number of classes.
    fn clean_pass<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        data: &Data<B::InnerBackend>,
    ) -> (Vec<bool>, usize) {
        let n = data.labels.len();
        let mut correct = vec![false; n];
        let mut classes = 0;
        for start in (0..n).step_by(self.batch_size) {
            let idx: Vec<usize> = (start..(start + self.batch_size).min(n)).collect();
            let logits = model.logits(data.upload(&idx));
            classes = logits.dims()[1];
            for (j, p) in predictions(logits).into_iter().enumerate() {
                correct[idx[j]] = p == data.labels[idx[j]];
            }
        }
        (correct, classes)
    }

    /// The checks on the model itself, on the first batch `x`: randomness (not for version
    /// rand, as the reference), softmax outputs, and whether the graph reaches the input.
    fn model_checks<B: AutodiffBackend, C: Classifier<B>>(
        &self,
        model: &C,
        x: Tensor<B::InnerBackend, 4>,
        y: &[i64],
    ) -> Vec<Flag> {
        let mut flags = Vec::new();
        if y.is_empty() {
            return flags;
        }
        let passes: Vec<Vec<f32>> = (0..RANDOMNESS_PASSES)
            .map(|_| floats(model.logits(x.clone())))
            .collect();
        if self.version != Version::Rand {
            flags.extend(checks::randomness_flag(&passes, y));
        }
        flags.extend(checks::softmax_flag(&passes[0], passes[0].len() / y.len()));
        let y_dev = crate::labels::<B::InnerBackend>(y, &x.device());
        let g = input_gradient::<B, C>(model, &x, |logits| {
            cross_entropy_each(logits, Tensor::from_inner(y_dev.clone()))
        });
        flags.extend(checks::no_input_gradient_flag(g.check()));
        flags
    }

    /// The largest perturbation norm between `images` and `adversarial` (`dim` values per
    /// image).
    fn max_perturbation(&self, images: &[f32], adversarial: &[f32], dim: usize) -> f64 {
        let size = |(a, b): (&[f32], &[f32])| {
            let diffs = a.iter().zip(b).map(|(p, q)| (p - q) as f64);
            match self.norm {
                Norm::Linf => diffs.fold(0.0f64, |m, d| m.max(d.abs())),
                Norm::L2 => diffs.map(|d| d * d).sum::<f64>().sqrt(),
            }
        };
        adversarial
            .chunks(dim.max(1))
            .zip(images.chunks(dim.max(1)))
            .map(size)
            .fold(0.0, f64::max)
    }
}

/// Runs one member on a batch; APGD also reports its start gradients.
fn run_member<B: AutodiffBackend, C: Classifier<B>>(
    settings: MemberSettings,
    model: &C,
    x: Tensor<B::InnerBackend, 4>,
    y: &[i64],
) -> (Tensor<B::InnerBackend, 4>, GradientCheck) {
    match settings {
        MemberSettings::Apgd(apgd) => {
            let (x_adv, traces) = apgd.run_traced::<B, C>(model, x, y);
            // The first run starts from every point APGD attacks; later ones redo subsets.
            let check = traces.first().map(|t| t.gradient).unwrap_or_default();
            (x_adv, check)
        }
        MemberSettings::Fab(fab) => (fab.run::<B, C>(model, x, y), GradientCheck::default()),
        MemberSettings::Square(square) => {
            (square.run::<B, C>(model, x, y), GradientCheck::default())
        }
    }
}

/// The images under attack, uploaded batch by batch.
struct Data<'a, IB: Backend> {
    images: &'a [f32],
    labels: &'a [i64],
    shape: [usize; 4],
    device: &'a IB::Device,
}

impl<'a, IB: Backend> Data<'a, IB> {
    fn new(
        images: &'a [f32],
        shape: [usize; 4],
        labels: &'a [i64],
        device: &'a IB::Device,
    ) -> Result<Self, AttackError> {
        let [n, c, h, w] = shape;
        if images.len() != n * c * h * w || labels.len() != n {
            return Err(AttackError::Config(format!(
                "autoattack: {} values and {} labels for shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        Ok(Self {
            images,
            labels,
            shape,
            device,
        })
    }

    /// Values per image.
    fn dim(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// The images `idx` as one tensor.
    fn upload(&self, idx: &[usize]) -> Tensor<IB, 4> {
        let dim = self.dim();
        let values: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.images[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let [_, c, h, w] = self.shape;
        Tensor::from_data(TensorData::new(values, [idx.len(), c, h, w]), self.device)
    }
}
