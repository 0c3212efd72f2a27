//! Attack invariants on a tiny network with the CPU backend.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use ews_attack::apgd::{Apgd, ApgdLoss};
use ews_attack::autoattack::{AutoAttack, Member, Version};
use ews_attack::fab::{Fab, project_onto_hyperplane};
use ews_attack::pgd::{Pgd, PgdLoss, Start};
use ews_attack::square::Square;
use ews_attack::{
    Classifier, EvalNetwork, Norm, dlr_loss, dlr_targeted_loss, norm_of, parse_eps, predictions,
};
use ews_models::persist::record_bytes;
use ews_models::{Architecture, BnMode, Network, NetworkConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type AB = Autodiff<Flex>;
type Inner = Flex;

/// The tiny network every test attacks (the test holds burn's generator lock: the same
/// network whatever the thread order).
fn tiny_model() -> Network<AB> {
    let device = Default::default();
    <AB as burn::tensor::backend::Backend>::seed(&device, 7);
    let model: Network<AB> = NetworkConfig::new("wrn-10-1".parse::<Architecture>().unwrap())
        .with_num_classes(10)
        .init(&device)
        .unwrap();
    // Running statistics close to the batch statistics of such inputs (as after training),
    // so evaluation mode normalises properly and the logits depend on the input.
    for seed in 0..30 {
        let _ = model.forward(Tensor::from_inner(images(32, 100 + seed)), BnMode::Train);
    }
    model
}

fn images(n: usize, seed: u64) -> Tensor<Inner, 4> {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..n * 3 * 16 * 16).map(|_| rng.random::<f32>()).collect();
    Tensor::from_data(TensorData::new(values, [n, 3, 16, 16]), &Default::default())
}

fn labels(values: &[i64]) -> Tensor<Inner, 1, Int> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        &Default::default(),
    )
}

/// Points and labels the model classifies correctly (its own predictions).
fn problem(model: &EvalNetwork<AB>, n: usize) -> (Tensor<Inner, 4>, Vec<i64>) {
    let x = images(n, 5);
    let y = predictions(model.logits(x.clone()));
    (x, y)
}

fn accuracy(model: &EvalNetwork<AB>, x: Tensor<Inner, 4>, y: &[i64]) -> f64 {
    let pred = predictions(model.logits(x));
    pred.iter().zip(y).filter(|(p, t)| p == t).count() as f64 / y.len() as f64
}

fn assert_in_ball(x: &Tensor<Inner, 4>, x_adv: &Tensor<Inner, 4>, eps: f64, norm: Norm) {
    let sizes: Vec<f32> = norm_of(x_adv.clone() - x.clone(), norm)
        .into_data()
        .iter::<f32>()
        .collect();
    for s in sizes {
        assert!(
            s as f64 <= eps * (1.0 + 1e-5) + 1e-6,
            "perturbation {s} exceeds eps {eps}"
        );
    }
    let values: Vec<f32> = x_adv.clone().into_data().iter::<f32>().collect();
    assert!(
        values.iter().all(|v| (0.0..=1.0).contains(v)),
        "values leave [0, 1]"
    );
}

#[test]
fn eps_parses_fractions() {
    let _rng = ews_models::rng_lock();
    assert!((parse_eps("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-12);
    assert_eq!(parse_eps("0.5").unwrap(), 0.5);
    assert!(parse_eps("x/255").is_err());
    assert!(parse_eps("-1").is_err());
}

#[test]
fn dlr_and_targeted_dlr_match_hand_computed_values() {
    let _rng = ews_models::rng_lock();
    let device = Default::default();
    let logits =
        Tensor::<Inner, 2>::from_data([[3.0, 1.0, 2.0, 0.5], [1.0, 4.0, 2.0, 0.0]], &device);
    let y = labels(&[0, 0]);
    let dlr: Vec<f32> = dlr_loss(logits.clone(), y.clone())
        .into_data()
        .iter::<f32>()
        .collect();
    // Row 0: y is the top class, so the runner-up (2) counts: -(3 - 2) / (3 - 1).
    // Row 1: -(1 - 4) / (4 - 1).
    assert!(
        (dlr[0] + 0.5).abs() < 1e-6 && (dlr[1] - 1.0).abs() < 1e-6,
        "{dlr:?}"
    );
    let t = labels(&[2, 2]);
    let targeted: Vec<f32> = dlr_targeted_loss(logits, y, t)
        .into_data()
        .iter::<f32>()
        .collect();
    // -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    let expected = [
        -(3.0 - 2.0) / (3.0 - 0.5 * (1.0 + 0.5)),
        -(1.0 - 2.0) / (4.0 - 0.5 * (1.0 + 0.0)),
    ];
    for (a, b) in targeted.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{targeted:?} vs {expected:?}");
    }
}

#[test]
fn pgd_stays_in_the_ball_and_fools_an_undefended_model() {
    let _rng = ews_models::rng_lock();
    let model = EvalNetwork::new(&tiny_model());
    let (x, y) = problem(&model, 24);
    for norm in [Norm::Linf, Norm::L2] {
        let eps = match norm {
            Norm::Linf => 8.0 / 255.0,
            Norm::L2 => 1.0,
        };
        let attack = Pgd {
            restarts: 2,
            ..Pgd::evaluation(norm, eps, 10)
        };
        let x_adv = attack.run::<AB, _>(&model, x.clone(), labels(&y), 0);
        assert_in_ball(&x, &x_adv, eps, norm);
        let acc = accuracy(&model, x_adv, &y);
        assert!(acc <= 0.1, "{norm}: PGD left accuracy {acc}");
    }
    // TRADES' KL objective and Gaussian start also stay in the ball.
    let trades = Pgd {
        start: Start::Gaussian(0.001),
        loss: PgdLoss::KlToClean,
        ..Pgd::trades()
    };
    let x_adv = trades.run::<AB, _>(&model, x.clone(), labels(&y), 0);
    assert_in_ball(&x, &x_adv, 0.031, Norm::Linf);
    assert!(accuracy(&model, x_adv, &y) < 1.0);
}

#[test]
fn apgd_checkpoints_follow_the_reference_schedule() {
    let _rng = ews_models::rng_lock();
    let apgd = Apgd::ce(Norm::Linf, 8.0 / 255.0);
    let one_based: Vec<usize> = apgd.checkpoints().iter().map(|i| i + 1).collect();
    assert_eq!(one_based, vec![22, 41, 57, 70, 80, 87, 93, 99]);
}

#[test]
fn apgd_targeted_is_at_least_as_strong_as_apgd_ce_and_pgd() {
    let _rng = ews_models::rng_lock();
    let model = EvalNetwork::new(&tiny_model());
    let (x, y) = problem(&model, 32);
    // A small radius leaves some points robust so the comparison means something.
    let eps = 2.0 / 255.0;
    let pgd = Pgd::evaluation(Norm::Linf, eps, 20).run::<AB, _>(&model, x.clone(), labels(&y), 0);
    let ce = Apgd {
        n_iter: 20,
        ..Apgd::ce(Norm::Linf, eps)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    let targeted = Apgd {
        n_iter: 20,
        ..Apgd::targeted(Norm::Linf, eps)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    for adv in [&pgd, &ce, &targeted] {
        assert_in_ball(&x, adv, eps, Norm::Linf);
    }
    let (a_pgd, a_ce, a_t) = (
        accuracy(&model, pgd, &y),
        accuracy(&model, ce, &y),
        accuracy(&model, targeted, &y),
    );
    assert!(
        a_t <= a_ce && a_t <= a_pgd,
        "APGD-T {a_t}, APGD-CE {a_ce}, PGD {a_pgd}"
    );
    assert!(a_t < 1.0, "APGD-T fooled nothing");
    // L2 and the DLR loss stay in the ball too.
    let l2 = Apgd {
        n_iter: 10,
        loss: ApgdLoss::Dlr,
        ..Apgd::ce(Norm::L2, 0.5)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    assert_in_ball(&x, &l2, 0.5, Norm::L2);
}

#[test]
fn hyperplane_projection_reaches_the_plane_with_the_smallest_step() {
    let _rng = ews_models::rng_lock();
    let mut rng = StdRng::seed_from_u64(3);
    for norm in [Norm::Linf, Norm::L2] {
        for _ in 0..50 {
            let dim = 12;
            let t: Vec<f32> = (0..dim).map(|_| rng.random()).collect();
            let w: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
            let wt: f32 = w.iter().zip(&t).map(|(a, b)| a * b).sum();
            let b = wt + (rng.random::<f32>() - 0.5) * 0.6;
            let d = project_onto_hyperplane(&t, &w, b, norm);
            let reached: f32 = w
                .iter()
                .zip(&t)
                .zip(&d)
                .map(|((a, x), s)| a * (x + s))
                .sum();
            for (x, s) in t.iter().zip(&d) {
                assert!((-1e-6..=1.0 + 1e-6).contains(&(x + s)), "left the box");
            }
            // Per coordinate: how far it can move in the useful direction.
            let down = wt > b;
            let reach: Vec<f32> = w
                .iter()
                .zip(&t)
                .map(|(a, x)| if (*a > 0.0) == down { *x } else { 1.0 - x })
                .collect();
            let total: f32 = w.iter().zip(&reach).map(|(a, r)| a.abs() * r).sum();
            if total < (wt - b).abs() {
                continue;
            }
            assert!(
                (reached - b).abs() < 1e-4,
                "{norm}: w.(t+d) = {reached}, b = {b}"
            );
            match norm {
                Norm::Linf => {
                    // No step of a slightly smaller L-inf size can remove the gap.
                    let size = d.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let best: f32 = w
                        .iter()
                        .zip(&reach)
                        .map(|(a, r)| a.abs() * r.min(0.99 * size))
                        .sum();
                    assert!(best < (wt - b).abs(), "a smaller L-inf step suffices");
                }
                Norm::L2 => {
                    // KKT: unclipped coordinates move proportionally to w.
                    let ratios: Vec<f32> = d
                        .iter()
                        .zip(&w)
                        .zip(&reach)
                        .filter(|((s, _), r)| s.abs() < **r - 1e-6)
                        .map(|((s, a), _)| s / a)
                        .collect();
                    for r in &ratios {
                        assert!(
                            (r - ratios[0]).abs() < 1e-4,
                            "L2 step not proportional to w"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn fab_and_square_respect_eps_and_fool_some_points() {
    let _rng = ews_models::rng_lock();
    let model = EvalNetwork::new(&tiny_model());
    let (x, y) = problem(&model, 16);
    let eps = 8.0 / 255.0;
    let fab = Fab {
        n_iter: 10,
        n_targets: Some(3),
        ..Fab::targeted(Norm::Linf, eps)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    assert_in_ball(&x, &fab, eps, Norm::Linf);
    assert!(accuracy(&model, fab, &y) < 1.0, "FAB-T fooled nothing");
    let fab_l2 = Fab {
        n_iter: 5,
        restarts: 2,
        ..Fab::untargeted(Norm::L2, 1.0)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    assert_in_ball(&x, &fab_l2, 1.0, Norm::L2);
    // Score-based and given only 60 queries: a larger radius.
    let square_eps = 16.0 / 255.0;
    let square = Square {
        n_queries: 60,
        ..Square::autoattack(Norm::Linf, square_eps)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    assert_in_ball(&x, &square, square_eps, Norm::Linf);
    assert!(accuracy(&model, square, &y) < 1.0, "Square fooled nothing");
    let square_l2 = Square {
        n_queries: 60,
        ..Square::autoattack(Norm::L2, 1.0)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    assert_in_ball(&x, &square_l2, 1.0, Norm::L2);
    assert!(
        accuracy(&model, square_l2, &y) < 1.0,
        "Square L2 fooled nothing"
    );
    assert_eq!(Square::autoattack(Norm::Linf, eps).p_at(0), 0.8);
    assert_eq!(Square::autoattack(Norm::Linf, eps).p_at(11), 0.4);
    assert_eq!(Square::autoattack(Norm::Linf, eps).p_at(9000), 0.8 / 512.0);
}

#[test]
fn attacks_leave_weights_and_batch_norm_statistics_unchanged() {
    let _rng = ews_models::rng_lock();
    let network = tiny_model();
    let before = record_bytes(&network).unwrap();
    let model = EvalNetwork::new(&network);
    let (x, y) = problem(&model, 8);
    let eps = 8.0 / 255.0;
    let _ = Pgd::evaluation(Norm::Linf, eps, 3).run::<AB, _>(&model, x.clone(), labels(&y), 0);
    let _ = Apgd {
        n_iter: 3,
        ..Apgd::targeted(Norm::Linf, eps)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    let _ = Fab {
        n_iter: 2,
        n_targets: Some(2),
        ..Fab::targeted(Norm::Linf, eps)
    }
    .run::<AB, _>(&model, x.clone(), &y);
    let _ = Square {
        n_queries: 5,
        ..Square::autoattack(Norm::Linf, eps)
    }
    .run::<AB, _>(&model, x, &y);
    let after = record_bytes(&network).unwrap();
    assert!(
        before == after,
        "an attack changed weights or running statistics"
    );
    // The wrapped copy has no trainable parameters left in the graph.
    assert_eq!(network.clone().no_grad().num_params(), network.num_params());
}

#[test]
fn autoattack_reports_monotone_robust_accuracy_within_eps() {
    let _rng = ews_models::rng_lock();
    let model = EvalNetwork::new(&tiny_model());
    let (x, y) = problem(&model, 12);
    let eps = 1.0 / 255.0;
    let mut attack = AutoAttack::new(Norm::Linf, eps, Version::Standard);
    attack.n_iter = 5;
    attack.square_queries = 20;
    attack.batch_size = 5;
    let shape = x.dims();
    let values: Vec<f32> = x.into_data().iter::<f32>().collect();
    let mut lines = Vec::new();
    let (report, adversarial) = attack
        .run::<AB, _>(&model, &values, shape, &y, &Default::default(), |l| {
            lines.push(l.to_string())
        })
        .unwrap();
    assert_eq!(report.clean_accuracy, 100.0);
    let order: Vec<Member> = report.members.iter().map(|m| m.attack).collect();
    assert_eq!(
        order,
        vec![Member::ApgdCe, Member::ApgdT, Member::FabT, Member::Square]
    );
    let mut last = report.clean_accuracy;
    for m in &report.members {
        assert!(m.robust_accuracy <= last);
        last = m.robust_accuracy;
    }
    assert_eq!(report.robust_accuracy, last);
    assert!(report.max_perturbation <= eps * (1.0 + 1e-5));
    assert_eq!(adversarial.len(), values.len());
    assert_eq!(lines.len(), 5 + report.flags.len(), "{lines:?}");
    // The returned images, fed back, give the reported robust accuracy and stay in the ball.
    let x_adv =
        Tensor::<Inner, 4>::from_data(TensorData::new(adversarial, shape), &Default::default());
    let reproduced = 100.0 * accuracy(&model, x_adv.clone(), &y);
    assert!(
        (reproduced - report.robust_accuracy).abs() < 1e-9,
        "{reproduced} vs {report:?}"
    );
    let x =
        Tensor::<Inner, 4>::from_data(TensorData::new(values.clone(), shape), &Default::default());
    assert_in_ball(&x, &x_adv, eps, Norm::Linf);
    // The plus and rand versions run their members.
    let plus = AutoAttack::new(Norm::Linf, eps, Version::Plus);
    assert_eq!(plus.members().len(), 6);
    assert_eq!(
        AutoAttack::new(Norm::Linf, eps, Version::Rand).members(),
        vec![Member::ApgdCe, Member::ApgdDlr]
    );
    // A single class is refused; with 3 classes the targeted members adapt (tests/trust.rs).
    assert!(attack.validate(1).is_err());
    assert!(attack.validate(3).is_ok());
}

#[test]
fn autoattack_plus_and_rand_run_their_members() {
    let _rng = ews_models::rng_lock();
    let model = EvalNetwork::new(&tiny_model());
    let (x, y) = problem(&model, 6);
    let shape = x.dims();
    let values: Vec<f32> = x.into_data().iter::<f32>().collect();
    for (norm, eps, version) in [
        (Norm::Linf, 0.5 / 255.0, Version::Plus),
        (Norm::Linf, 0.5 / 255.0, Version::Rand),
        (Norm::L2, 0.05, Version::Standard),
    ] {
        let mut attack = AutoAttack::new(norm, eps, version);
        attack.n_iter = 3;
        attack.square_queries = 5;
        let (report, _) = attack
            .run::<AB, _>(&model, &values, shape, &y, &Default::default(), |_| {})
            .unwrap();
        assert_eq!(report.members.len(), attack.members().len(), "{version:?}");
        assert!(report.max_perturbation <= eps * (1.0 + 1e-5));
        let fooled: usize = report.members.iter().map(|m| m.fooled).sum();
        let robust = (report.robust_accuracy / 100.0 * 6.0).round() as usize;
        assert_eq!(
            fooled + robust,
            6,
            "every point is fooled once or stays robust"
        );
    }
}
