//! `ews attack`: robust accuracy of a trained run.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use ews_attack::Norm;
use ews_attack::autoattack::Version;
use ews_train::adversarial::EvalAttack;

/// Robust accuracy of a trained run under PGD or AutoAttack (batch norm in evaluation mode);
/// writes RUN/attack_<name>.json and RUN/attack_<name>.md.
#[derive(Args, Debug)]
pub struct AttackArgs {
    /// The run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// `pgd<steps>` (e.g. pgd20, pgd10) or `autoattack`.
    #[arg(long, default_value = "pgd20")]
    pub attack: String,
    /// AutoAttack version: standard, plus or rand.
    #[arg(long, default_value = "standard")]
    pub version: String,
    /// Threat model: linf or l2.
    #[arg(long, default_value = "linf")]
    pub norm: String,
    /// Radius, a number or a fraction (default: 8/255 for linf, 0.5 for l2).
    #[arg(long)]
    pub eps: Option<String>,
    /// PGD step size (default: eps / 4, i.e. 2/255 at 8/255).
    #[arg(long)]
    pub step_size: Option<String>,
    /// PGD random restarts.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Attack the first N test images (default: all).
    #[arg(long)]
    pub n: Option<usize>,
    /// Points per batch (default: the run's evaluation batch size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of the random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl AttackArgs {
    /// The norm, radius and attack the flags describe.
    pub fn resolve(&self) -> Result<(Norm, f64, EvalAttack)> {
        let norm: Norm = self.norm.parse()?;
        let eps = match &self.eps {
            Some(text) => ews_attack::parse_eps(text)?,
            None => match norm {
                Norm::Linf => 8.0 / 255.0,
                Norm::L2 => 0.5,
            },
        };
        let attack = if let Some(steps) = self.attack.strip_prefix("pgd") {
            let steps: usize = match steps.parse() {
                Ok(s) if s > 0 => s,
                _ => bail!("--attack {}: expected pgd<steps>, e.g. pgd20", self.attack),
            };
            if self.restarts == 0 {
                bail!("--restarts must be at least 1");
            }
            let step_size = match &self.step_size {
                Some(text) => ews_attack::parse_eps(text)?,
                None => eps / 4.0,
            };
            EvalAttack::Pgd {
                steps,
                step_size,
                restarts: self.restarts,
            }
        } else if self.attack == "autoattack" {
            EvalAttack::AutoAttack(self.version.parse::<Version>()?)
        } else {
            bail!(
                "--attack {}: expected pgd<steps> or autoattack",
                self.attack
            );
        };
        Ok((norm, eps, attack))
    }
}
