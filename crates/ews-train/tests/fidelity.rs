//! Training details that must follow the references (issue "results we can trust"): the
//! training attack's batch norm, the AugMix controller pass, the AWP warm-up boundary and the
//! KL teacher side.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use ews_attack::pgd::Pgd;
use ews_models::{BnMode, Network, NetworkConfig, SubnetExecution};
use ews_train::adversarial::AttackTarget;
use ews_train::config::{Adversarial, AttackBn};
use ews_train::loss::{KlReduction, kl_to_teacher};
use ews_train::trainer::subnet_accuracy;
use ews_train::{Method, TrainConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

type AB = Autodiff<Flex>;

fn network<Bk: Backend>(device: &Bk::Device) -> Network<Bk> {
    Bk::seed(device, 3);
    NetworkConfig::new("wrn-10-1".parse().unwrap())
        .init(device)
        .unwrap()
}

fn images<Bk: Backend>(n: usize, device: &Bk::Device) -> Tensor<Bk, 4> {
    Tensor::random([n, 3, 8, 8], Distribution::Uniform(0.0, 1.0), device)
}

fn labels<Bk: Backend>(n: usize, device: &Bk::Device) -> Tensor<Bk, 1, Int> {
    let y: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    Tensor::from_data(TensorData::new(y, [n]), device)
}

fn running_mean(model: &Network<AB>) -> Vec<f32> {
    let bn = model.head_bn.as_ref().expect("WideResNet has a head BN");
    bn.running_mean.value_sync().into_data().to_vec().unwrap()
}

#[test]
fn training_attack_batch_norm_follows_each_methods_reference() {
    let _rng = ews_models::rng_lock();
    let pgd = TrainConfig {
        adversarial: Adversarial::Pgd,
        ..TrainConfig::default()
    };
    let trades = TrainConfig {
        adversarial: Adversarial::Trades,
        ..TrainConfig::default()
    };
    assert_eq!(pgd.resolved_attack_bn(), AttackBn::Train);
    assert_eq!(trades.resolved_attack_bn(), AttackBn::Eval);
    let forced = TrainConfig {
        attack_bn: Some(AttackBn::Eval),
        ..pgd
    };
    assert_eq!(forced.resolved_attack_bn(), AttackBn::Eval);
}

#[test]
fn train_mode_attacks_use_batch_statistics_and_move_the_running_ones() {
    let _rng = ews_models::rng_lock();
    let d = Default::default();
    let model = network::<AB>(&d);
    // Running statistics deliberately off: training-mode passes on shifted, scaled inputs.
    for _ in 0..20 {
        let _ = model.forward(images::<AB>(8, &d) * 6.0 + 4.0, BnMode::Train);
    }
    let (x, y) = (images::<Flex>(8, &d), labels::<Flex>(8, &d));
    let attack = Pgd {
        steps: 3,
        ..Pgd::linf_training()
    };
    let before = running_mean(&model);
    let eval_x = attack.run::<AB, _>(
        &AttackTarget::new(&model, BnMode::Eval),
        x.clone(),
        y.clone(),
        0,
    );
    assert_eq!(
        running_mean(&model),
        before,
        "eval-mode attacks leave the statistics"
    );
    let train_x = attack.run::<AB, _>(&AttackTarget::new(&model, BnMode::Train), x.clone(), y, 0);
    assert_ne!(
        running_mean(&model),
        before,
        "train-mode attacks move the running statistics, as PyTorch's model.train()"
    );
    let diff = (eval_x.clone() - train_x.clone())
        .abs()
        .max()
        .into_scalar()
        .elem::<f32>();
    assert!(
        diff > 1e-3,
        "x' must depend on the batch-norm mode (max diff {diff})"
    );
    for x_adv in [eval_x, train_x] {
        let linf = (x_adv - x.clone()).abs().max().into_scalar().elem::<f32>();
        assert!(linf <= 8.0 / 255.0 + 1e-6);
    }
}

#[test]
fn the_augmix_controller_pass_sees_all_views_and_scores_the_clean_part() {
    let _rng = ews_models::rng_lock();
    let d = Default::default();
    let model = network::<Flex>(&d);
    let space = model.subnet_space();
    let subnet = space.random(0.5, &mut StdRng::seed_from_u64(1));
    let masks = subnet
        .to_masks_as::<Flex>(&space, &d, SubnetExecution::Sliced)
        .unwrap();
    let n = 12;
    let clean = images::<Flex>(n, &d);
    // The augmented views come from another distribution, so batch statistics over all three
    // views differ from those of the clean part alone.
    let views = Tensor::cat(
        vec![
            clean.clone(),
            clean.clone() * 0.2,
            clean.clone() * 0.2 + 0.8,
        ],
        0,
    );
    let all = model.forward_subnet(views.clone(), &masks, BnMode::BatchStats);
    let clean_rows = all.clone().narrow(0, 0, n);
    let alone = model.forward_subnet(clean, &masks, BnMode::BatchStats);
    let gap = (clean_rows.clone() - alone)
        .abs()
        .max()
        .into_scalar()
        .elem::<f32>();
    assert!(
        gap > 1e-3,
        "statistics over 3n must matter here (gap {gap})"
    );
    // Labels equal to the clean rows' predictions: accuracy 1 on the clean part, whatever the
    // augmented rows predict.
    let y = clean_rows.argmax(1).reshape([n]);
    let acc = subnet_accuracy(&model, views, &y, &masks);
    assert_eq!(acc, 1.0);
}

#[test]
fn awp_turns_on_in_the_warmup_epoch_counted_from_one() {
    let _rng = ews_models::rng_lock();
    let config = TrainConfig {
        method: Method::Vanilla,
        adversarial: Adversarial::Trades,
        awp_gamma: 0.005,
        awp_warmup: 10,
        ..TrainConfig::default()
    };
    // Epochs here count from 0: the 10th epoch is index 9.
    assert!(!config.awp_active(8));
    assert!(config.awp_active(9));
    assert!(config.awp_active(10));
    let from_start = TrainConfig {
        awp_warmup: 0,
        ..config.clone()
    };
    assert!(from_start.awp_active(0));
    let off = TrainConfig {
        awp_gamma: 0.0,
        ..config
    };
    assert!(!off.awp_active(50));
}

#[test]
fn the_kl_teacher_side_gets_no_gradient() {
    let _rng = ews_models::rng_lock();
    let d = Default::default();
    let logits = || Tensor::<AB, 2>::random([4, 10], Distribution::Normal(0.0, 2.0), &d);
    let (teacher, student) = (logits().require_grad(), logits().require_grad());
    for reduction in [KlReduction::BatchMean, KlReduction::Official] {
        let kl = kl_to_teacher(teacher.clone(), student.clone(), reduction);
        let grads = kl.backward();
        let teacher_grad = teacher.grad(&grads);
        assert!(
            teacher_grad.is_none_or(|g| g.abs().max().into_scalar().elem::<f32>() == 0.0),
            "{reduction:?}: the teacher must be detached"
        );
        let student_grad = student.grad(&grads).expect("the student gets a gradient");
        assert!(student_grad.abs().max().into_scalar().elem::<f32>() > 0.0);
    }
}
