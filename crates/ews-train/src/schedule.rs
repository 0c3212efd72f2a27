//! Learning-rate schedules with linear warm-up.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate over training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant.
    Constant,
    /// Multiplied by `gamma` at each milestone epoch (default: E/3 and 2E/3, as the release).
    Multistep,
    /// Cosine annealing to zero.
    Cosine,
    /// Rice et al.'s piecewise-linear cycle: 0 -> lr at 2/5 of training -> 0.
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
    /// Linear warm-up length in epochs (from lr / (warm-up steps) up to the schedule).
    pub warmup_epochs: f64,
}

impl LrSchedule {
    /// The learning rate at fractional epoch `t` (0 = start of training).
    pub fn at(&self, t: f64) -> f64 {
        let base = match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Multistep => {
                let passed = self.milestones.iter().filter(|&&m| t >= m).count();
                self.lr * self.gamma.powi(passed as i32)
            }
            Schedule::Cosine => {
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * (t / self.epochs).min(1.0)).cos())
            }
            Schedule::Piecewise => {
                let peak = self.epochs * 2.0 / 5.0;
                if t <= peak {
                    self.lr * t / peak
                } else {
                    self.lr * ((self.epochs - t) / (self.epochs - peak)).max(0.0)
                }
            }
        };
        if self.warmup_epochs > 0.0 && t < self.warmup_epochs {
            base * (t / self.warmup_epochs)
        } else {
            base
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
}
