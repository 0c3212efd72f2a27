//! AutoAttack's sanity checks (the reference's `checks.py` and `flags_doc.md`): warnings that
//! the evaluation may overestimate robustness. They never stop an evaluation; they go into
//! the report and are printed.
//!
//! - zero gradient: the model's graph does not reach the input, or the DLR loss has an
//!   exactly zero input gradient where APGD starts (input quantisation, detached inputs);
//! - Square lowered the robust accuracy left by the gradient attacks (gradient masking);
//! - randomness: repeated clean passes give different outputs (use version `rand`);
//! - softmax output: the model returns probabilities instead of logits;
//! - too few classes: a member is skipped or attacks fewer target classes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::autoattack::{Member, MemberResult};
use crate::{GradientCheck, agree};

/// Which check raised a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The model's graph does not reach the input: every input gradient is zero.
    NoInputGradient,
    /// Points whose DLR-loss input gradient is exactly zero at APGD's start.
    ZeroGradient,
    /// Square, run after the gradient attacks, still lowered the robust accuracy.
    SquareLoweredAccuracy,
    /// Clean passes over the same images differ: a randomised model.
    Randomized,
    /// The outputs are a probability distribution rather than logits.
    SoftmaxOutput,
    /// Too few classes for a member: skipped, or fewer target classes than the reference.
    TooFewClasses,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 6] = [
        Check::NoInputGradient,
        Check::ZeroGradient,
        Check::SquareLoweredAccuracy,
        Check::Randomized,
        Check::SoftmaxOutput,
        Check::TooFewClasses,
    ];

    /// The kebab-case name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Check::NoInputGradient => "no-input-gradient",
            Check::ZeroGradient => "zero-gradient",
            Check::SquareLoweredAccuracy => "square-lowered-accuracy",
            Check::Randomized => "randomized",
            Check::SoftmaxOutput => "softmax-output",
            Check::TooFewClasses => "too-few-classes",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A warning raised by a check, with a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// The check.
    pub check: Check,
    /// What was seen and what to do about it.
    pub message: String,
}

/// The prefix of flag lines in AutoAttack's progress output.
const PROGRESS_PREFIX: &str = "warning [";

impl Flag {
    fn new(check: Check, message: String) -> Self {
        Self { check, message }
    }

    /// The line AutoAttack's progress callback hears: `warning [<check>]: <message>`.
    pub fn progress_line(&self) -> String {
        format!("{PROGRESS_PREFIX}{}]: {}", self.check, self.message)
    }

    /// Reads back a [`Flag::progress_line`]; `None` for any other line.
    pub fn from_progress_line(line: &str) -> Option<Flag> {
        let rest = line.trim().strip_prefix(PROGRESS_PREFIX)?;
        let (name, message) = rest.split_once("]: ")?;
        let check = Check::ALL.into_iter().find(|c| c.name() == name)?;
        Some(Flag::new(check, message.to_string()))
    }
}

/// A markdown section listing the flags (empty when there are none).
pub fn flags_markdown(flags: &[Flag]) -> String {
    if flags.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n## Warnings (AutoAttack checks)\n\n");
    for flag in flags {
        out += &format!("- **{}**: {}\n", flag.check, flag.message);
    }
    out
}

/// Repeated clean passes of the same images that differ (the reference's
/// `check_randomized`: a changed number of correct points, or L2-normalised outputs that
/// differ by more than 1e-4). `passes` holds the logits `[n * classes]` of each pass.
pub fn randomness_flag(passes: &[Vec<f32>], y: &[i64]) -> Option<Flag> {
    let classes = passes.first()?.len() / y.len().max(1);
    let correct = |logits: &[f32]| {
        let pred: Vec<i64> = logits.chunks(classes).map(argmax).collect();
        agree(&pred, y).iter().filter(|&&c| c).count()
    };
    let unit = |logits: &[f32]| -> Vec<f32> {
        logits
            .chunks(classes)
            .flat_map(|row| {
                let length = row.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-10;
                row.iter().map(move |v| v / length)
            })
            .collect()
    };
    let counts: Vec<usize> = passes.iter().map(|p| correct(p)).collect();
    let units: Vec<Vec<f32>> = passes.iter().map(|p| unit(p)).collect();
    let mut max_diff = 0.0f32;
    for (a, first) in units.iter().enumerate() {
        for second in &units[a + 1..] {
            for (r1, r2) in first.chunks(classes).zip(second.chunks(classes)) {
                let d = r1.iter().zip(r2).map(|(p, q)| (p - q).powi(2)).sum::<f32>();
                max_diff = max_diff.max(d.sqrt());
            }
        }
    }
    let accuracy_changed = counts.iter().any(|&c| c != counts[0]);
    (accuracy_changed || max_diff > 1e-4).then(|| {
        Flag::new(
            Check::Randomized,
            format!(
                "{} clean passes over the same {} images differ (largest distance of the \
                 normalised outputs {max_diff:.2e}, correct counts {counts:?}): the model \
                 seems randomised; evaluate it with version rand (EOT)",
                passes.len(),
                y.len()
            ),
        )
    })
}

fn argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (k, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = k;
        }
    }
    best as i64
}

/// Outputs that are a probability distribution (the reference's `check_range_output`).
pub fn softmax_flag(logits: &[f32], classes: usize) -> Option<Flag> {
    let alpha = 1e-5f32;
    let in_range = logits.iter().all(|&v| v > -alpha && v < 1.0 + alpha);
    let sums_to_one = logits
        .chunks(classes.max(1))
        .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < alpha);
    (in_range && sums_to_one && !logits.is_empty()).then(|| {
        Flag::new(
            Check::SoftmaxOutput,
            "the outputs are a probability distribution: attacks need the logits \
             (pre-softmax outputs)"
                .into(),
        )
    })
}

/// A model whose graph does not reach the input (checked once, on the first batch).
pub fn no_input_gradient_flag(check: GradientCheck) -> Option<Flag> {
    (check.points > 0 && !check.reaches_input).then(|| {
        Flag::new(
            Check::NoInputGradient,
            "the model's graph does not reach the input, so every input gradient is zero and \
             the gradient attacks cannot work (detached or non-differentiable input \
             processing); use BPDA or rely on Square"
                .into(),
        )
    })
}

/// Points with an exactly zero input gradient where `member` started; the reference checks
/// this for the DLR losses (APGD-DLR, APGD-T), as cross-entropy can vanish on confidently
/// classified points for harmless numerical reasons.
pub fn zero_gradient_flag(member: Member, check: GradientCheck) -> Option<Flag> {
    (check.zero > 0).then(|| {
        Flag::new(
            Check::ZeroGradient,
            format!(
                "{member}: {} of {} points have a zero input gradient where the attack \
                 started; gradient attacks make no progress there, the robust accuracy may \
                 be overestimated",
                check.zero, check.points
            ),
        )
    })
}

/// The reference's `check_square_sr`: Square, run after the gradient attacks, lowered the
/// robust accuracy by more than 0.2 percentage points. Measured against the accuracy just
/// before Square (in 'plus' the reference compares with the final accuracy, which Square can
/// never undercut, so its check never fires there).
pub fn square_flag(clean_accuracy: f64, members: &[MemberResult]) -> Option<Flag> {
    let at = members.iter().position(|m| m.attack == Member::Square)?;
    if at == 0 {
        return None;
    }
    let before = members[at - 1].robust_accuracy.min(clean_accuracy);
    let after = members[at].robust_accuracy;
    (before - after > 0.2).then(|| {
        Flag::new(
            Check::SquareLoweredAccuracy,
            format!(
                "Square lowered the robust accuracy left by the gradient attacks from \
                 {before:.2}% to {after:.2}% ({} points): a hint of gradient masking; run \
                 Square with more queries and restarts, or an adaptive attack",
                members[at].fooled
            ),
        )
    })
}

/// A member skipped for lack of classes.
pub(crate) fn skipped_flag(member: Member, needed: usize, classes: usize) -> Flag {
    Flag::new(
        Check::TooFewClasses,
        format!("{member} skipped: it needs at least {needed} classes, the model has {classes}"),
    )
}

/// A targeted member run against fewer classes than the reference's number of targets.
pub(crate) fn fewer_targets_flag(member: Member, wanted: usize, classes: usize) -> Flag {
    Flag::new(
        Check::TooFewClasses,
        format!(
            "{member}: {wanted} target classes need {} classes, the model has {classes}; \
             attacking {} targets",
            wanted + 1,
            classes - 1
        ),
    )
}
