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

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::apgd::{Apgd, ApgdLoss};
use crate::fab::Fab;
use crate::square::Square;
use crate::{AttackError, Classifier, Norm, floats, norm_of, predictions};

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
}

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

    fn apgd(&self, loss: ApgdLoss, classes: usize) -> Apgd {
        let restarts = match (self.version, loss) {
            (Version::Plus, ApgdLoss::CrossEntropy | ApgdLoss::Dlr) => 5,
            _ => 1,
        };
        let loss = match loss {
            ApgdLoss::DlrTargeted { .. } => ApgdLoss::DlrTargeted {
                n_targets: 9.min(classes - 1),
            },
            other => other,
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

    fn fab(&self, targeted: bool, classes: usize) -> Fab {
        let base = if targeted {
            Fab::targeted(self.norm, self.eps)
        } else {
            Fab::untargeted(self.norm, self.eps)
        };
        Fab {
            n_iter: self.n_iter,
            n_targets: base.n_targets.map(|n| n.min(classes - 1)),
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

    /// Checks the settings against the number of classes.
    pub fn validate(&self, classes: usize) -> Result<(), AttackError> {
        if self.batch_size == 0 {
            return Err(AttackError::Config(
                "autoattack batch size must be at least 1".into(),
            ));
        }
        if classes < 4 {
            return Err(AttackError::Config(format!(
                "autoattack needs at least 4 classes (targeted DLR), the model has {classes}"
            )));
        }
        for member in self.members() {
            match member {
                Member::ApgdCe => self
                    .apgd(ApgdLoss::CrossEntropy, classes)
                    .validate(classes)?,
                Member::ApgdDlr => self.apgd(ApgdLoss::Dlr, classes).validate(classes)?,
                Member::ApgdT => self
                    .apgd(ApgdLoss::DlrTargeted { n_targets: 9 }, classes)
                    .validate(classes)?,
                Member::Fab => self.fab(false, classes).validate(classes)?,
                Member::FabT => self.fab(true, classes).validate(classes)?,
                Member::Square => self.square().validate()?,
            }
        }
        Ok(())
    }

    /// Runs the ensemble on `images` (NCHW in [0, 1], `shape`) with `labels`; returns the
    /// report and the adversarial examples (clean images where no attack succeeded).
    /// `progress` hears a line after each member.
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
        let [n, c, h, w] = shape;
        let dim = c * h * w;
        if images.len() != n * dim || labels.len() != n {
            return Err(AttackError::Config(format!(
                "autoattack: {} values and {} labels for shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        let upload = |idx: &[usize]| {
            let values: Vec<f32> = idx
                .iter()
                .flat_map(|&i| images[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(values, [idx.len(), c, h, w]),
                device,
            )
        };
        let mut robust = vec![false; n];
        let mut classes = 0;
        for start in (0..n).step_by(self.batch_size) {
            let idx: Vec<usize> = (start..(start + self.batch_size).min(n)).collect();
            let logits = model.logits(upload(&idx));
            classes = logits.dims()[1];
            for (j, p) in predictions(logits).into_iter().enumerate() {
                robust[idx[j]] = p == labels[idx[j]];
            }
        }
        self.validate(classes)?;
        let percent =
            |flags: &[bool]| 100.0 * flags.iter().filter(|&&r| r).count() as f64 / n.max(1) as f64;
        let clean_accuracy = percent(&robust);
        progress(&format!("clean accuracy: {clean_accuracy:.2}%"));
        let mut adversarial = images.to_vec();
        let mut members = Vec::new();
        for member in self.members() {
            let member_start = Instant::now();
            let todo: Vec<usize> = (0..n).filter(|&i| robust[i]).collect();
            let mut fooled = 0;
            for batch in todo.chunks(self.batch_size) {
                let x = upload(batch);
                let y: Vec<i64> = batch.iter().map(|&i| labels[i]).collect();
                let x_adv = match member {
                    Member::ApgdCe => self
                        .apgd(ApgdLoss::CrossEntropy, classes)
                        .run::<B, C>(model, x, &y),
                    Member::ApgdDlr => self.apgd(ApgdLoss::Dlr, classes).run::<B, C>(model, x, &y),
                    Member::ApgdT => self
                        .apgd(ApgdLoss::DlrTargeted { n_targets: 9 }, classes)
                        .run::<B, C>(model, x, &y),
                    Member::Fab => self.fab(false, classes).run::<B, C>(model, x, &y),
                    Member::FabT => self.fab(true, classes).run::<B, C>(model, x, &y),
                    Member::Square => self.square().run::<B, C>(model, x, &y),
                };
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
        }
        let max_perturbation = (0..n)
            .map(|i| {
                let delta: Vec<f32> = adversarial[i * dim..(i + 1) * dim]
                    .iter()
                    .zip(&images[i * dim..(i + 1) * dim])
                    .map(|(a, b)| a - b)
                    .collect();
                let t = Tensor::<B::InnerBackend, 4>::from_data(
                    TensorData::new(delta, [1, c, h, w]),
                    device,
                );
                floats(norm_of(t, self.norm))[0] as f64
            })
            .fold(0.0, f64::max);
        let report = Report {
            version: self.version,
            norm: self.norm,
            eps: self.eps,
            n,
            clean_accuracy,
            robust_accuracy: percent(&robust),
            members,
            max_perturbation,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((report, adversarial))
    }
}
