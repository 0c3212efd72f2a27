//! Pieces of adversarial training: TRADES' KL term, adversarial weight perturbation (AWP,
//! Wu et al. 2020) and robust accuracy on a split.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use ews_attack::autoattack::{AutoAttack, MemberResult, Version};
use ews_attack::pgd::{Pgd, PgdLoss, Start};
use ews_attack::{Classifier, EvalNetwork, Norm};
use ews_data::{BatchLoader, LoaderConfig, Split};
use ews_models::{BnMode, Network};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::loss::correct;

/// An AWP weight perturbation: for every convolution and linear weight w_l (parameters with
/// two or more dimensions; batch-norm parameters and biases are left alone),
/// `v_l = gamma * ||w_l|| * g_l / ||g_l||`, g_l the gradient of the proxy's adversarial loss
/// (one ascent step of a proxy copy, normalised per layer as the reference's
/// `diff_in_weights`).
pub struct WeightPerturbation<B: AutodiffBackend> {
    deltas: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

struct DeltaBuilder<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    gamma: f64,
    deltas: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for DeltaBuilder<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if D < 2 {
            return;
        }
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let weight = param.val().inner();
        let ones = [1usize; D];
        let weight_norm = weight.square().sum().sqrt().reshape(ones);
        let grad_norm = grad.clone().square().sum().sqrt().reshape(ones);
        let delta = grad * (weight_norm / (grad_norm + 1e-20)) * self.gamma;
        let n = delta.shape().num_elements();
        self.deltas.insert(param.id, delta.reshape([n]));
    }
}

struct DeltaAdder<'a, B: AutodiffBackend> {
    deltas: &'a HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    sign: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for DeltaAdder<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(delta) = self.deltas.get(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let dims = tensor.dims();
        let moved = tensor.inner() + delta.clone().reshape(dims) * self.sign;
        Param::from_mapped_value(id, Tensor::from_inner(moved).require_grad(), mapper)
    }
}

impl<B: AutodiffBackend> WeightPerturbation<B> {
    /// The perturbation of size `gamma` from the gradients of the proxy loss.
    pub fn new(model: &Network<B>, grads: &GradientsParams, gamma: f64) -> Self {
        let mut builder = DeltaBuilder::<B> {
            grads,
            gamma,
            deltas: HashMap::new(),
        };
        model.visit(&mut builder);
        Self {
            deltas: builder.deltas,
        }
    }

    /// `model` with the perturbation added (`sign` 1) or removed (`sign` -1).
    pub fn apply(&self, model: Network<B>, sign: f64) -> Network<B> {
        model.map(&mut DeltaAdder::<B> {
            deltas: &self.deltas,
            sign,
        })
    }

    /// The perturbed parameters and their perturbations (for checks and logs).
    pub fn deltas(&self) -> &HashMap<ParamId, Tensor<B::InnerBackend, 1>> {
        &self.deltas
    }
}

/// The model as the training attack sees it: batch norm in `mode` (PyTorch's `model.train()`
/// or `model.eval()` before crafting x'), weights excluded from the graph. In
/// [`BnMode::Train`] every attack forward normalises with batch statistics and moves the
/// running statistics, as the references' training-mode attacks do.
pub struct AttackTarget<B: AutodiffBackend> {
    model: Network<B>,
    mode: BnMode,
}

impl<B: AutodiffBackend> AttackTarget<B> {
    /// `model` (sharing its running statistics) with batch norm in `mode`.
    pub fn new(model: &Network<B>, mode: BnMode) -> Self {
        Self {
            model: model.clone().no_grad(),
            mode,
        }
    }
}

impl<B: AutodiffBackend> Classifier<B> for AttackTarget<B> {
    fn logits_grad(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.model.forward(x, self.mode)
    }
    fn logits(&self, x: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 2> {
        self.model.forward(Tensor::from_inner(x), self.mode).inner()
    }
}

/// Clean and PGD accuracy (percent) of `model` (batch norm in evaluation mode) on `split`.
pub fn robust_accuracy<B: AutodiffBackend>(
    model: &Network<B>,
    split: &Split,
    loader: &LoaderConfig,
    attack: &Pgd,
    device: &B::Device,
) -> Result<(f64, f64), TrainError> {
    let settings = EvalAttack::Pgd {
        steps: attack.steps,
        step_size: attack.step_size,
        restarts: attack.restarts,
    };
    let report = attack_split(
        model,
        split,
        loader,
        split.len(),
        settings,
        attack.norm,
        attack.eps,
        attack.seed,
        device,
        |_| {},
    )?;
    Ok((report.clean_accuracy, report.robust_accuracy))
}

/// An evaluation attack.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum EvalAttack {
    /// PGD with `steps` steps of `step_size` and `restarts` random starts.
    Pgd {
        /// Steps.
        steps: usize,
        /// Step size.
        step_size: f64,
        /// Random restarts.
        restarts: usize,
    },
    /// AutoAttack.
    AutoAttack(Version),
}

impl EvalAttack {
    /// A short name for files and tables: `pgd20`, `autoattack`, `autoattack-plus`, ...
    pub fn name(&self) -> String {
        match self {
            EvalAttack::Pgd { steps, .. } => format!("pgd{steps}"),
            EvalAttack::AutoAttack(Version::Standard) => "autoattack".into(),
            EvalAttack::AutoAttack(Version::Plus) => "autoattack-plus".into(),
            EvalAttack::AutoAttack(Version::Rand) => "autoattack-rand".into(),
        }
    }
}

/// The result of `ews attack`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// Attack name (`pgd20`, `autoattack`, ...).
    pub attack: String,
    /// The attack's settings.
    pub settings: EvalAttack,
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Test points attacked (the first n of the test split).
    pub n: usize,
    /// Clean accuracy on them (percent).
    pub clean_accuracy: f64,
    /// Robust accuracy (percent).
    pub robust_accuracy: f64,
    /// AutoAttack: robust accuracy after each member.
    pub members: Vec<MemberResult>,
    /// Largest perturbation norm found (at most eps, up to float32 rounding).
    pub max_perturbation: f64,
    /// Seconds.
    pub seconds: f64,
    /// Warnings of the sanity checks (AutoAttack's `checks.py`; for PGD the input-gradient
    /// check): the robust accuracy may be overestimated.
    #[serde(default)]
    pub flags: Vec<ews_attack::checks::Flag>,
}

impl AttackReport {
    /// A markdown summary.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = format!(
            "# {title}\n\n{} ({}, eps {:.6} = {:.2}/255) on the first {} test images\n\n| | accuracy (%) |\n|---|---|\n| clean | {:.2} |\n",
            self.attack,
            self.norm,
            self.eps,
            self.eps * 255.0,
            self.n,
            self.clean_accuracy
        );
        for m in &self.members {
            out += &format!("| after {} | {:.2} |\n", m.attack, m.robust_accuracy);
        }
        out += &format!(
            "| **robust** | **{:.2}** |\n\nLargest perturbation: {:.6}. Time: {:.1} s.\n",
            self.robust_accuracy, self.max_perturbation, self.seconds
        );
        out += &ews_attack::checks::flags_markdown(&self.flags);
        out
    }
}

/// Attacks the first `n` images of `split` (all if fewer) with `model` in evaluation mode.
#[allow(clippy::too_many_arguments)]
pub fn attack_split<B: AutodiffBackend>(
    model: &Network<B>,
    split: &Split,
    loader: &LoaderConfig,
    n: usize,
    attack: EvalAttack,
    norm: Norm,
    eps: f64,
    seed: u64,
    device: &B::Device,
    progress: impl FnMut(&str),
) -> Result<AttackReport, TrainError> {
    let started = std::time::Instant::now();
    let n = n.min(split.len());
    let first: Vec<usize> = (0..n).collect();
    let split = split.select(&first);
    let (mut images, mut labels, mut shape) = (Vec::new(), Vec::new(), [0usize; 4]);
    for batch in BatchLoader::new(&split, loader, 0) {
        let batch = batch?;
        images.extend_from_slice(&batch.images);
        labels.extend_from_slice(&batch.labels);
        shape = [labels.len(), batch.shape[1], batch.shape[2], batch.shape[3]];
    }
    let target = EvalNetwork::new(model);
    let config_error = |e: ews_attack::AttackError| TrainError::Config(e.to_string());
    match attack {
        EvalAttack::AutoAttack(version) => {
            let aa = AutoAttack {
                seed,
                batch_size: loader.batch_size,
                ..AutoAttack::new(norm, eps, version)
            };
            let (report, _) = aa
                .run::<B, _>(&target, &images, shape, &labels, device, progress)
                .map_err(config_error)?;
            Ok(AttackReport {
                attack: attack.name(),
                settings: attack,
                norm,
                eps,
                n,
                clean_accuracy: report.clean_accuracy,
                robust_accuracy: report.robust_accuracy,
                members: report.members,
                max_perturbation: report.max_perturbation,
                seconds: started.elapsed().as_secs_f64(),
                flags: report.flags,
            })
        }
        EvalAttack::Pgd {
            steps,
            step_size,
            restarts,
        } => {
            let pgd = Pgd {
                norm,
                eps,
                step_size,
                steps,
                restarts,
                start: Start::Uniform,
                loss: PgdLoss::CrossEntropy,
                seed,
            };
            pgd.validate().map_err(config_error)?;
            let [_, c, h, w] = shape;
            let dim = c * h * w;
            // A point counts as broken once any iterate of any restart misclassifies it
            // (Rice et al.'s early-stopped evaluation); its first misclassifying image is kept.
            let (mut clean, mut robust, mut largest) = (0usize, 0usize, 0.0f64);
            let mut gradient = ews_attack::GradientCheck::default();
            for (i, start) in (0..n).step_by(loader.batch_size).enumerate() {
                let end = (start + loader.batch_size).min(n);
                let x = Tensor::<B::InnerBackend, 4>::from_data(
                    TensorData::new(
                        images[start * dim..end * dim].to_vec(),
                        [end - start, c, h, w],
                    ),
                    device,
                );
                let y = Tensor::<B::InnerBackend, 1, burn::tensor::Int>::from_data(
                    TensorData::new(labels[start..end].to_vec(), [end - start]),
                    device,
                );
                clean += correct(target.logits(x.clone()), y.clone());
                let outcome = pgd.evaluate::<B, _>(&target, x.clone(), y, i as u64);
                let sizes = ews_attack::norm_of(outcome.adversarial.clone() - x, norm);
                largest = largest.max(sizes.max().into_scalar().elem::<f64>());
                robust += outcome.robust_count();
                gradient = gradient.merge(outcome.gradient);
            }
            let mut flags = Vec::new();
            flags.extend(ews_attack::checks::no_input_gradient_flag(gradient));
            let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
            Ok(AttackReport {
                attack: attack.name(),
                settings: attack,
                norm,
                eps,
                n,
                clean_accuracy: pct(clean),
                robust_accuracy: pct(robust),
                members: Vec::new(),
                max_perturbation: largest,
                seconds: started.elapsed().as_secs_f64(),
                flags,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::ModuleVisitor;
    use burn::tensor::backend::Backend;
    use ews_models::{BnMode, NetworkConfig};

    type AB = Autodiff<Flex>;

    /// Every float parameter's values by id, flattened.
    struct Collect(HashMap<ParamId, (usize, Vec<f32>)>);

    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values = param.val().into_data().iter::<f32>().collect();
            self.0.insert(param.id, (D, values));
        }
    }

    fn params(model: &Network<AB>) -> HashMap<ParamId, (usize, Vec<f32>)> {
        let mut c = Collect(HashMap::new());
        model.visit(&mut c);
        c.0
    }

    fn norm(v: &[f32]) -> f64 {
        v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn attack_reports_carry_the_check_flags_and_read_old_reports() {
        use ews_attack::checks::{Check, Flag};
        let mut report = AttackReport {
            attack: "pgd20".into(),
            settings: EvalAttack::Pgd {
                steps: 20,
                step_size: 2.0 / 255.0,
                restarts: 1,
            },
            norm: Norm::Linf,
            eps: 8.0 / 255.0,
            n: 8,
            clean_accuracy: 50.0,
            robust_accuracy: 25.0,
            members: Vec::new(),
            max_perturbation: 8.0 / 255.0,
            seconds: 1.0,
            flags: Vec::new(),
        };
        assert!(!report.markdown("t").contains("Warnings"));
        report.flags.push(Flag {
            check: Check::NoInputGradient,
            message: "every input gradient is zero".into(),
        });
        assert!(
            report
                .markdown("t")
                .contains("**no-input-gradient**: every input gradient is zero")
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["flags"][0]["check"], "no-input-gradient");
        // Reports written before the checks existed have no `flags`.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("flags");
        let back: AttackReport = serde_json::from_value(old).unwrap();
        assert!(back.flags.is_empty());
    }

    #[test]
    fn awp_perturbs_each_conv_and_linear_weight_by_gamma_of_its_norm_and_restores() {
        let device = Default::default();
        let model: Network<AB> = NetworkConfig::new("wrn-10-1".parse().unwrap())
            .init(&device)
            .unwrap();
        let x = Tensor::<AB, 4>::random([4, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let y = Tensor::<AB, 1, burn::tensor::Int>::from_data([1, 2, 3, 4], &device);
        let loss = crate::loss::cross_entropy(model.forward(x, BnMode::BatchStats), y, 0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let gamma = 0.01;
        let awp = WeightPerturbation::new(&model, &grads, gamma);
        let before = params(&model);
        let perturbed = awp.apply(model.clone(), 1.0);
        let during = params(&perturbed);
        let mut weights = 0;
        for (id, (dims, w)) in &before {
            let moved: Vec<f32> = during[id].1.iter().zip(w).map(|(a, b)| a - b).collect();
            if *dims >= 2 {
                weights += 1;
                let ratio = norm(&moved) / norm(w);
                assert!(
                    (ratio - gamma).abs() < 1e-4,
                    "layer ratio {ratio}, gamma {gamma}"
                );
            } else {
                assert!(norm(&moved) == 0.0, "a BN parameter or bias moved");
            }
        }
        // Every convolution and the classifier weight, nothing else.
        assert_eq!(weights, awp.deltas().len());
        assert!(weights >= 5);
        let restored = params(&awp.apply(perturbed, -1.0));
        for (id, (_, w)) in &before {
            for (a, b) in restored[id].1.iter().zip(w) {
                assert!((a - b).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn kl_divergence_is_zero_for_equal_logits_and_matches_a_hand_computation() {
        let device = Default::default();
        let a = Tensor::<Flex, 2>::from_data([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], &device);
        let b = Tensor::<Flex, 2>::from_data([[2.0, 1.0, 0.5], [0.0, 1.0, 1.0]], &device);
        let same: f32 = crate::loss::kl_divergence(a.clone(), a.clone()).into_scalar();
        assert!(same.abs() < 1e-6);
        let kl: f32 = crate::loss::kl_divergence(a.clone(), b.clone()).into_scalar();
        // Hand computation: mean over rows of sum p log(p / q).
        let p = |r: &[f32]| {
            let z: f32 = r.iter().map(|v| v.exp()).sum();
            r.iter().map(|v| v.exp() / z).collect::<Vec<f32>>()
        };
        let rows_a = [[1.0f32, 2.0, 0.5], [0.0, 0.0, 3.0]];
        let rows_b = [[2.0f32, 1.0, 0.5], [0.0, 1.0, 1.0]];
        let expected: f32 = rows_a
            .iter()
            .zip(&rows_b)
            .map(|(ra, rb)| {
                let (pa, pb) = (p(ra), p(rb));
                pa.iter()
                    .zip(&pb)
                    .map(|(x, y)| x * (x / y).ln())
                    .sum::<f32>()
            })
            .sum::<f32>()
            / 2.0;
        assert!((kl - expected).abs() < 1e-5, "{kl} vs {expected}");
    }
}
