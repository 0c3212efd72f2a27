//! Learning-rate schedules with linear warm-up.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate over training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant.
    Constant,
    /// Multiplied by `gamma` at each milestone epoch (default: E // 3 and E // 3 * 2, as the
    /// release).
    Multistep,
    /// Cosine annealing to zero.
    Cosine,
    /// Rice et al.'s piecewise-linear cycle: 0 -> lr at epoch floor(2E / 5) -> 0, evaluated
    /// at the end of each step as their `lr_schedule(epoch + (i + 1) / steps)`.
    Piecewise,
}

/// A schedule with its parameters, evaluated at a fractional epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Shape.
    pub schedule: Schedule,
    /// Total epochs.
    pub epochs: f64,
    /// Milestones in epochs (multistep).
    pub milestones: Vec<f64>,
    /// Factor per milestone (multistep).
    pub gamma: f64,
    /// Linear warm-up length in epochs: step s (from 0) of the warm-up runs at
    /// `(s + 1) / warm-up steps` of the schedule's rate, so it starts at lr / (warm-up steps),
    /// as the release's ImageNet warm-up (Goyal et al.).
    pub warmup_epochs: f64,
}

impl LrSchedule {
    /// The learning rate of step `step` (from 0) of epoch `epoch` (from 0), an epoch having
    /// `steps` steps: warm-up as documented on [`warmup_epochs`](Self::warmup_epochs), the
    /// piecewise schedule at the step's end, the others at its start.
    pub fn at_step(&self, epoch: usize, step: usize, steps: usize) -> f64 {
        let steps = steps.max(1) as f64;
        let start = epoch as f64 + step as f64 / steps;
        let t = match self.schedule {
            Schedule::Piecewise => start + 1.0 / steps,
            _ => start,
        };
        let warmup_steps = self.warmup_epochs * steps;
        let done = epoch as f64 * steps + step as f64;
        if warmup_steps > 0.0 && done < warmup_steps {
            self.base(t) * (done + 1.0) / warmup_steps.ceil()
        } else {
            self.base(t)
        }
    }

    /// The learning rate at fractional epoch `t` (0 = start of training), with a warm-up
    /// that rises linearly from 0 over `warmup_epochs`: a continuous view of the schedule for
    /// plots; training and its metric lines use [`at_step`](Self::at_step).
    pub fn at(&self, t: f64) -> f64 {
        if self.warmup_epochs > 0.0 && t < self.warmup_epochs {
            self.base(t) * (t / self.warmup_epochs)
        } else {
            self.base(t)
        }
    }

    /// The schedule without warm-up at fractional epoch `t`.
    fn base(&self, t: f64) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Multistep => {
                let passed = self.milestones.iter().filter(|&&m| t >= m).count();
                self.lr * self.gamma.powi(passed as i32)
            }
            Schedule::Cosine => {
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * (t / self.epochs).min(1.0)).cos())
            }
            Schedule::Piecewise => {
                // Rice et al.: np.interp(t, [0, epochs * 2 // 5, epochs], [0, lr, 0]).
                let peak = (self.epochs * 2.0 / 5.0).floor();
                if t <= peak && peak > 0.0 {
                    self.lr * t / peak
                } else {
                    self.lr * ((self.epochs - t) / (self.epochs - peak)).max(0.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: Schedule) -> LrSchedule {
        LrSchedule {
            lr: 0.1,
            schedule: kind,
            epochs: 30.0,
            milestones: vec![10.0, 20.0],
            gamma: 0.1,
            warmup_epochs: 0.0,
        }
    }

    #[test]
    fn schedules_match_their_formulas() {
        let m = schedule(Schedule::Multistep);
        assert_eq!(m.at(0.0), 0.1);
        assert!((m.at(10.0) - 0.01).abs() < 1e-12 && (m.at(25.0) - 0.001).abs() < 1e-12);
        let c = schedule(Schedule::Cosine);
        assert!((c.at(15.0) - 0.05).abs() < 1e-12 && c.at(30.0).abs() < 1e-12);
        let p = schedule(Schedule::Piecewise);
        assert!(
            (p.at(12.0) - 0.1).abs() < 1e-12
                && (p.at(6.0) - 0.05).abs() < 1e-12
                && p.at(30.0).abs() < 1e-12
        );
        let w = LrSchedule {
            warmup_epochs: 5.0,
            ..schedule(Schedule::Constant)
        };
        assert!((w.at(2.5) - 0.05).abs() < 1e-12 && w.at(5.0) == 0.1);
    }

    #[test]
    fn warmup_starts_at_lr_over_warmup_steps_and_reaches_the_schedule() {
        let w = LrSchedule {
            warmup_epochs: 2.0,
            ..schedule(Schedule::Constant)
        };
        // 2 epochs of 50 steps: step s runs at (s + 1) / 100 of lr, never at 0.
        assert!((w.at_step(0, 0, 50) - 0.1 / 100.0).abs() < 1e-15);
        assert!((w.at_step(0, 49, 50) - 0.1 * 50.0 / 100.0).abs() < 1e-15);
        assert!((w.at_step(1, 49, 50) - 0.1).abs() < 1e-15);
        assert_eq!(w.at_step(2, 0, 50), 0.1);
        // Multistep after the warm-up follows its milestones.
        let m = LrSchedule {
            warmup_epochs: 1.0,
            ..schedule(Schedule::Multistep)
        };
        assert!((m.at_step(0, 0, 10) - 0.01).abs() < 1e-15);
        assert!((m.at_step(10, 0, 10) - 0.01).abs() < 1e-15);
    }

    #[test]
    fn piecewise_matches_rice_et_al_on_both_slopes() {
        // np.interp(t, [0, 30 * 2 // 5, 30], [0, 0.1, 0]) at t = epoch + (i + 1) / steps.
        let p = schedule(Schedule::Piecewise);
        let interp = |t: f64| {
            if t <= 12.0 {
                0.1 * t / 12.0
            } else {
                0.1 * (30.0 - t) / 18.0
            }
        };
        for (epoch, i) in [(0, 0), (5, 3), (11, 9), (12, 0), (20, 4), (29, 9)] {
            let t = epoch as f64 + (i + 1) as f64 / 10.0;
            assert!(
                (p.at_step(epoch, i, 10) - interp(t)).abs() < 1e-12,
                "epoch {epoch} step {i}"
            );
        }
        assert!((p.at(21.0) - 0.05).abs() < 1e-12 && (p.at(25.5) - 0.025).abs() < 1e-12);
        // The peak sits at the integer epoch floor(2E / 5): 8 epochs peak at 3, not 3.2.
        let short = LrSchedule { epochs: 8.0, ..p };
        assert!((short.at(3.0) - 0.1).abs() < 1e-12);
        assert!((short.at(5.5) - 0.05).abs() < 1e-12);
    }
}
