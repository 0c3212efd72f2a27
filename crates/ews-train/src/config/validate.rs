//! The range of every field, checked before any work starts; each error names the field
//! and what it allows.

use super::{Adversarial, Method, TrainConfig};
use crate::TrainError;

/// The error for `field`.
fn bad(field: &str, why: String) -> Result<(), TrainError> {
    Err(TrainError::Config(format!("{field}: {why}")))
}

/// `value` must be finite and at least 0.
fn non_negative(field: &str, value: f64) -> Result<(), TrainError> {
    match value >= 0.0 && value.is_finite() {
        true => Ok(()),
        false => bad(field, format!("must be finite and >= 0, got {value}")),
    }
}

/// `value` must be finite and above 0.
fn positive(field: &str, value: f64) -> Result<(), TrainError> {
    match value > 0.0 && value.is_finite() {
        true => Ok(()),
        false => bad(field, format!("must be finite and > 0, got {value}")),
    }
}

/// `value` must be in [0, 1).
fn fraction(field: &str, value: f64) -> Result<(), TrainError> {
    match (0.0..1.0).contains(&value) {
        true => Ok(()),
        false => bad(field, format!("must be in [0, 1), got {value}")),
    }
}

/// `value` must be at least 1.
fn at_least_one(field: &str, value: usize) -> Result<(), TrainError> {
    match value {
        0 => bad(field, "must be at least 1".into()),
        _ => Ok(()),
    }
}

impl TrainConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.architecture()?;
        self.explicit_normalization()?;
        self.validate_data()?;
        self.validate_search()?;
        self.validate_optimizer()?;
        self.validate_augmentation()?;
        self.validate_adversarial()?;
        self.validate_extra_data()?;
        self.validate_devices()?;
        at_least_one("workers", self.workers)?;
        at_least_one("log_every", self.log_every)?;
        self.validate_integer_range()
    }

    /// Every integer must fit TOML's (a signed 64-bit integer), so `config.toml` can be
    /// written and read back.
    fn validate_integer_range(&self) -> Result<(), TrainError> {
        let value = serde_json::to_value(self).expect("a config serialises to JSON");
        for (field, v) in value.as_object().into_iter().flatten() {
            let items = v.as_array().map_or(std::slice::from_ref(v), Vec::as_slice);
            if let Some(n) = items
                .iter()
                .find_map(|i| i.as_u64().filter(|&n| n > i64::MAX as u64))
            {
                return bad(
                    field,
                    format!("{n} is beyond the largest integer a TOML file holds (2^63 - 1)"),
                );
            }
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<(), TrainError> {
        let known = ["cifar10", "cifar100", "synthetic"];
        if !known.contains(&self.dataset.as_str()) && !self.dataset.starts_with("folder:") {
            return bad(
                "dataset",
                format!(
                    "`{}` is not cifar10, cifar100, synthetic or folder:PATH",
                    self.dataset
                ),
            );
        }
        if !self.extra_train_folders.is_empty() && !self.dataset.starts_with("folder:") {
            return bad(
                "extra_train_folders",
                format!(
                    "extra training folders join an image-folder dataset (folder:ROOT), not `{}`",
                    self.dataset
                ),
            );
        }
        if let Some(size) = self.image_size
            && size < 8
        {
            return bad(
                "image_size",
                format!("must be at least 8 pixels, got {size}"),
            );
        }
        for (field, limit) in [
            ("train_limit", self.train_limit),
            ("test_limit", self.test_limit),
        ] {
            if limit == Some(0) {
                return bad(
                    field,
                    "must be at least 1 (leave it unset for all images)".into(),
                );
            }
        }
        if self.batch_size < 2 {
            return bad(
                "batch_size",
                "must be at least 2 (batch norm needs batch statistics)".into(),
            );
        }
        at_least_one("eval_batch_size", self.eval_batch_size)?;
        if self.synthetic_size.0 < self.batch_size.min(2) || self.synthetic_size.1 == 0 {
            return bad("synthetic_size", "needs training and test images".into());
        }
        Ok(())
    }

    fn validate_search(&self) -> Result<(), TrainError> {
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            return bad("rho", format!("must be in (0, 1], got {}", self.rho));
        }
        non_negative("lambda", self.lambda)?;
        at_least_one("interval_k", self.interval_k)?;
        at_least_one("subnets_per_update", self.subnets_per_update)?;
        positive("controller_lr", self.controller_lr)?;
        non_negative("controller_entropy", self.controller_entropy)?;
        if !(0.0..=1.0).contains(&self.baseline_decay) {
            return bad(
                "baseline_decay",
                format!("must be in [0, 1], got {}", self.baseline_decay),
            );
        }
        fraction("dropout", self.dropout)?;
        if self.method == Method::Dropout && self.dropout == 0.0 {
            return bad(
                "dropout",
                "the dropout method needs dropout > 0 (e.g. 0.1)".into(),
            );
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<(), TrainError> {
        at_least_one("epochs", self.epochs)?;
        positive("lr", self.lr)?;
        fraction("momentum", self.momentum)?;
        if self.nesterov && self.momentum == 0.0 {
            return bad("nesterov", "needs momentum > 0".into());
        }
        non_negative("weight_decay", self.weight_decay)?;
        if let Some(c) = self.grad_clip {
            positive("grad_clip", c)?;
        }
        fraction("label_smoothing", self.label_smoothing)?;
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            return bad("warmup_epochs", "must be between 0 and epochs".into());
        }
        positive("gamma", self.gamma)?;
        let increasing = self.milestones.windows(2).all(|w| w[0] < w[1]);
        if !increasing || self.milestones.iter().any(|m| !(*m > 0.0 && m.is_finite())) {
            return bad(
                "milestones",
                format!(
                    "must be positive epochs in increasing order, got {:?}",
                    self.milestones
                ),
            );
        }
        Ok(())
    }

    fn validate_augmentation(&self) -> Result<(), TrainError> {
        if self.randaugment_magnitude > 30 {
            return bad(
                "randaugment_magnitude",
                format!(
                    "must be a bin in 0..=30, got {}",
                    self.randaugment_magnitude
                ),
            );
        }
        if let Err(why) = self.augmix().validate() {
            // "augmix severity must ...": name the config field, augmix_severity.
            return Err(TrainError::Config(why.replacen("augmix ", "augmix_", 1)));
        }
        non_negative("jsd_weight", self.jsd_weight)
    }

    fn validate_adversarial(&self) -> Result<(), TrainError> {
        non_negative("attack_eps", self.attack_eps)?;
        non_negative("attack_step", self.attack_step)?;
        non_negative("trades_beta", self.trades_beta)?;
        non_negative("awp_gamma", self.awp_gamma)?;
        let adversarial = self.adversarial != Adversarial::None;
        if adversarial && (self.attack_eps == 0.0 || self.attack_steps == 0) {
            return bad(
                "attack_eps",
                "adversarial training needs attack_eps > 0 and attack_steps >= 1".into(),
            );
        }
        if self.awp_gamma > 0.0 && !adversarial {
            return bad("awp_gamma", "AWP needs adversarial = pgd or trades".into());
        }
        if adversarial && self.uses_jsd() {
            return bad(
                "adversarial",
                "cannot be combined with AugMix's JSD views".into(),
            );
        }
        if self.holdout > 0 && self.holdout_pgd_steps == 0 && adversarial {
            return bad("holdout_pgd_steps", "must be at least 1".into());
        }
        Ok(())
    }

    fn validate_extra_data(&self) -> Result<(), TrainError> {
        if !(self.extra_fraction > 0.0 && self.extra_fraction < 1.0) {
            return bad(
                "extra_fraction",
                format!("must be in (0, 1), got {}", self.extra_fraction),
            );
        }
        if self.extra_data.is_some() && self.uses_jsd() {
            return bad(
                "extra_data",
                "cannot be combined with AugMix's JSD views".into(),
            );
        }
        let extra = self.extra_batch_size();
        if self.extra_data.is_some() && (extra == 0 || extra >= self.batch_size) {
            return bad(
                "extra_fraction",
                "leaves no room for both data sources in a batch".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An invalid value of every field that has one (TOML), or `None` for fields where
    /// every value that parses is valid.
    const INVALID: &[(&str, Option<&str>)] = &[
        ("dataset", Some("\"imagenet21k\"")),
        ("data_dir", None),
        ("extra_train_folders", Some("[\"datasets/EDSR\"]")),
        ("image_size", Some("4")),
        ("synthetic_size", Some("[100, 0]")),
        ("train_limit", Some("0")),
        ("test_limit", Some("0")),
        ("model", Some("\"wrn-7-1\"")),
        ("dropout", Some("1.5")),
        ("normalization", Some("\"imagenet21k\"")),
        ("method", Some("\"bogus\"")),
        ("searcher", Some("\"bogus\"")),
        ("rho", Some("0.0")),
        ("subnet_rounding", Some("\"bogus\"")),
        ("lambda", Some("-1.0")),
        ("interval_k", Some("0")),
        ("subnets_per_update", Some("0")),
        ("kl_reduction", Some("\"bogus\"")),
        ("subnet_pass", Some("\"bogus\"")),
        ("precision", Some("\"bogus\"")),
        ("controller_lr", Some("0.0")),
        ("controller_entropy", Some("-0.1")),
        ("controller_log_prob", Some("\"bogus\"")),
        ("baseline_decay", Some("1.5")),
        ("baseline_update", Some("\"bogus\"")),
        ("epochs", Some("0")),
        ("batch_size", Some("1")),
        ("eval_batch_size", Some("0")),
        ("lr", Some("-0.1")),
        ("momentum", Some("1.0")),
        ("nesterov", None),
        ("weight_decay", Some("-1.0")),
        ("grad_clip", Some("0.0")),
        ("schedule", Some("\"bogus\"")),
        ("milestones", Some("[50.0, 10.0]")),
        ("gamma", Some("0.0")),
        ("warmup_epochs", Some("-1.0")),
        ("label_smoothing", Some("1.0")),
        ("aug", Some("\"bogus\"")),
        ("autoaugment_policy", Some("\"bogus\"")),
        ("randaugment_ops", None),
        ("randaugment_magnitude", Some("31")),
        ("augmix_severity", Some("11")),
        ("augmix_width", Some("0")),
        ("augmix_depth", Some("0")),
        ("augmix_alpha", Some("-1.0")),
        ("augmix_all_ops", None),
        ("augmix_variant", Some("\"bogus\"")),
        ("jsd", None),
        ("jsd_weight", Some("-1.0")),
        ("adversarial", Some("\"bogus\"")),
        ("attack_eps", Some("-1.0")),
        ("attack_step", Some("-1.0")),
        ("attack_steps", None),
        ("attack_bn", Some("\"bogus\"")),
        ("on_nonfinite", Some("\"bogus\"")),
        ("trades_beta", Some("-1.0")),
        ("awp_gamma", Some("0.01")),
        ("awp_warmup", None),
        ("extra_data", None),
        ("extra_fraction", Some("1.0")),
        ("holdout", None),
        ("holdout_pgd_steps", None),
        ("workers", Some("0")),
        ("devices", Some("0")),
        ("nodes", Some("0")),
        ("seed", None),
        ("log_every", Some("0")),
    ];

    /// The default config with `field = value`, parsed and checked as a config file is.
    fn check(field: &str, value: &str) -> Result<(), TrainError> {
        let mut table: toml::Table = TrainConfig::default().to_toml().parse().unwrap();
        let value = format!("x = {value}").parse::<toml::Table>().unwrap()["x"].clone();
        table.insert(field.into(), value);
        let config: TrainConfig =
            toml::from_str(&table.to_string()).map_err(|e| TrainError::Config(e.to_string()))?;
        config.validate()
    }

    #[test]
    fn every_field_is_checked_and_its_error_names_it() {
        let table: toml::Table = TrainConfig::default().to_toml().parse().unwrap();
        // Fields left unset by default (options) are not in the TOML; list them all.
        let mut fields: Vec<&str> = table.keys().map(String::as_str).collect();
        for (field, _) in INVALID {
            if !fields.contains(field) {
                fields.push(field);
            }
        }
        for field in &fields {
            let entry = INVALID.iter().find(|(f, _)| f == field);
            let Some((_, invalid)) = entry else {
                panic!("{field}: add an invalid value (or None) to INVALID");
            };
            let Some(value) = invalid else { continue };
            let err = check(field, value).expect_err(field).to_string();
            assert!(err.contains(field), "{field} = {value}: {err}");
        }
        TrainConfig::default().validate().unwrap();
    }
}
