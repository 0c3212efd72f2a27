//! Results we can trust next to the paper: PGD evaluation over all iterates, AutoAttack's
//! sanity checks, the reference settings of every version, APGD's step halving inside the
//! loop, and attack strength on classifiers whose minimal adversarial distance is known.
//! Everything runs on hand-made classifiers with tiny inputs (CPU backend, a few seconds).

use std::cell::{Cell, RefCell};

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ews_attack::apgd::{Apgd, ApgdLoss};
use ews_attack::autoattack::{AutoAttack, Member, MemberResult, MemberSettings, Report, Version};
use ews_attack::checks::{Check, Flag, square_flag};
use ews_attack::fab::Fab;
use ews_attack::pgd::{Pgd, PgdLoss, Start};
use ews_attack::square::Square;
use ews_attack::{Classifier, Norm, predictions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type AB = Autodiff<Flex>;
type Inner = Flex;

fn device() -> burn::tensor::Device<Inner> {
    Default::default()
}

fn tensor4(values: Vec<f32>, shape: [usize; 4]) -> Tensor<Inner, 4> {
    Tensor::from_data(TensorData::new(values, shape), &device())
}

fn labels(values: &[i64]) -> Tensor<Inner, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &device())
}

fn host<const D: usize>(t: Tensor<Inner, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

// ---------------------------------------------------------------------------------------
// Hand-made classifiers.

/// Two classes on a single pixel: logit 1 is `100 (0.05^2 - (x - 0.5)^2)`, positive (class
/// 1 wins) only on (0.45, 0.55); logit 0 is zero.
struct Bump;

fn bump_logits<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, ..] = x.dims();
    let v = x.reshape([n, 1]);
    let g = (v.sub_scalar(0.5).powi_scalar(2).neg().add_scalar(0.0025)).mul_scalar(100.0);
    Tensor::cat(vec![g.zeros_like(), g], 1)
}

impl Classifier<AB> for Bump {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        bump_logits(x)
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        bump_logits(x)
    }
}

/// A linear classifier `z = W^T vec(x) + b` on `[n, 1, 4, 4]` images.
#[derive(Clone)]
struct Linear {
    /// `[DIM, classes]`, row-major.
    w: Vec<f32>,
    b: Vec<f32>,
    classes: usize,
}

const SIDE: usize = 4;
const DIM: usize = SIDE * SIDE;

impl Linear {
    fn random(classes: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = (0..DIM * classes)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        Self {
            w,
            b: vec![0.0; classes],
            classes,
        }
    }

    fn apply<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, ..] = x.dims();
        let device = x.device();
        let w = Tensor::<B, 2>::from_data(
            TensorData::new(self.w.clone(), [DIM, self.classes]),
            &device,
        );
        let b =
            Tensor::<B, 2>::from_data(TensorData::new(self.b.clone(), [1, self.classes]), &device);
        x.reshape([n, DIM]).matmul(w) + b
    }

    fn host_logits(&self, x: &[f32]) -> Vec<f32> {
        (0..self.classes)
            .map(|k| {
                let dot: f32 = x
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * self.w[i * self.classes + k])
                    .sum();
                dot + self.b[k]
            })
            .collect()
    }

    /// A linear model for the strength tests: weights of amplitude 4 (a peaked softmax, so
    /// cross-entropy's gradient follows the runner-up class), zero on the last pixel row and
    /// column. (Square, like the reference's `random_int(0, h - s)`, never places a square
    /// smaller than the image on the last row or column, so those pixels keep their random
    /// stripe start; the model ignores them to make the exact optimum reachable.)
    fn for_strength(seed: u64) -> Self {
        let mut model = Self::random(10, seed);
        for (i, w) in model.w.iter_mut().enumerate() {
            let pixel = i / model.classes;
            let (row, col) = (pixel / SIDE, pixel % SIDE);
            *w = if row == SIDE - 1 || col == SIDE - 1 {
                0.0
            } else {
                4.0 * *w
            };
        }
        model
    }

    /// `||w_a - w_b||_1`, the dual norm of L-inf.
    fn dual(&self, a: usize, b: usize) -> f32 {
        (0..DIM)
            .map(|i| (self.w[i * self.classes + a] - self.w[i * self.classes + b]).abs())
            .sum()
    }

    /// The prediction y, the nearest other class k and the exact smallest L-inf distance to
    /// a point of class k's region, `min_k (z_y - z_k) / ||w_y - w_k||_1` (the [0, 1] box
    /// does not bind for the points used here).
    fn nearest(&self, x: &[f32]) -> (usize, usize, f32) {
        let z = self.host_logits(x);
        let y = (0..self.classes)
            .max_by(|a, b| z[*a].total_cmp(&z[*b]))
            .unwrap();
        (0..self.classes)
            .filter(|&k| k != y)
            .map(|k| (y, k, (z[y] - z[k]) / self.dual(y, k)))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .unwrap()
    }

    /// Whether class `k` stays ahead of every class but `y` by at least 1 anywhere in the
    /// `eps`-ball around `x`: the margin is then linear in the ball, and the runner-up
    /// dominates the softmax's other classes.
    fn dominates(&self, x: &[f32], y: usize, k: usize, eps: f32) -> bool {
        let z = self.host_logits(x);
        (0..self.classes)
            .filter(|&j| j != y && j != k)
            .all(|j| z[k] - z[j] - eps * self.dual(k, j) >= 1.0)
    }
}

impl Classifier<AB> for Linear {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        self.apply(x)
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        self.apply(x)
    }
}

/// A linear classifier whose input is detached from the graph (e.g. preprocessing done
/// outside autodiff): the graph never reaches the input.
struct Detached(Linear);

impl Classifier<AB> for Detached {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        self.0.apply(Tensor::<AB, 4>::from_inner(x.inner()))
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        self.0.apply(x)
    }
}

/// A linear classifier on inputs quantised to 64 levels: the graph reaches the input but
/// rounding has a zero derivative.
struct Quantised(Linear);

fn quantise<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.mul_scalar(64.0).round().div_scalar(64.0)
}

impl Classifier<AB> for Quantised {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        self.0.apply(quantise(x))
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        self.0.apply(quantise(x))
    }
}

/// A linear classifier with fresh Gaussian noise on its logits at every pass.
struct Noisy(Linear, RefCell<StdRng>);

impl Noisy {
    fn noise<B: Backend>(&self, n: usize, device: &B::Device) -> Tensor<B, 2> {
        let mut rng = self.1.borrow_mut();
        let values: Vec<f32> = (0..n * self.0.classes)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        Tensor::from_data(TensorData::new(values, [n, self.0.classes]), device)
    }
}

impl Classifier<AB> for Noisy {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        let n = x.dims()[0];
        let noise = self.noise::<AB>(n, &x.device());
        self.0.apply(x) + noise
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        let n = x.dims()[0];
        let noise = self.noise::<Inner>(n, &x.device());
        self.0.apply(x) + noise
    }
}

/// A linear classifier returning probabilities instead of logits.
struct Probabilities(Linear);

impl Classifier<AB> for Probabilities {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        softmax(self.0.apply(x), 1)
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        softmax(self.0.apply(x), 1)
    }
}

/// Logits whose value ignores the input (`x - detach(x)` is zero) but whose gradient is the
/// linear model's: the loss APGD sees is constant, or, with `rising`, grows by 0.01 at
/// every gradient pass whatever the iterate.
struct ScriptedLoss {
    model: Linear,
    rising: bool,
    passes: Cell<u32>,
}

impl Classifier<AB> for ScriptedLoss {
    fn logits_grad(&self, x: Tensor<AB, 4>) -> Tensor<AB, 2> {
        let frozen = Tensor::<AB, 4>::from_inner(x.clone().inner());
        let moving = self.model.apply(x - frozen);
        let pass = self.passes.get() + 1;
        self.passes.set(pass);
        let offset = if self.rising { 0.01 * pass as f32 } else { 0.0 };
        // The label is class 0; class 1's logit rises with the passes (so does the CE).
        let mut base = vec![0.0f32; self.model.classes];
        base[0] = 5.0;
        base[1] = offset;
        let n = moving.dims()[0];
        let base = Tensor::<AB, 2>::from_data(
            TensorData::new(base, [1, self.model.classes]),
            &moving.device(),
        );
        moving + base.expand([n, self.model.classes])
    }
    fn logits(&self, x: Tensor<Inner, 4>) -> Tensor<Inner, 2> {
        let [n, ..] = x.dims();
        let mut base = vec![0.0f32; self.model.classes];
        base[0] = 5.0;
        Tensor::<Inner, 2>::from_data(TensorData::new(base, [1, self.model.classes]), &x.device())
            .expand([n, self.model.classes])
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers.

/// `n` images with every pixel in [0.35, 0.65] (far enough from the box for eps < 0.35).
fn central_images(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n * DIM)
        .map(|_| 0.35 + 0.3 * rng.random::<f32>())
        .collect()
}

/// Points of `model` whose exact L-inf distance to the nearest other class lies in `range`,
/// that class dominating the others within `dominant_within` (if given):
/// `(images, labels, distances)`.
fn points_at_known_distance(
    model: &Linear,
    n: usize,
    range: std::ops::RangeInclusive<f32>,
    dominant_within: Option<f32>,
) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
    let (mut images, mut y, mut dist) = (Vec::new(), Vec::new(), Vec::new());
    let mut seed = 0;
    while y.len() < n {
        seed += 1;
        assert!(seed < 1_000_000, "no such points");
        let x = central_images(1, seed);
        let (label, k, d) = model.nearest(&x);
        let dominant = dominant_within.is_none_or(|eps| model.dominates(&x, label, k, eps));
        if range.contains(&d) && dominant {
            images.extend(x);
            y.push(label as i64);
            dist.push(d);
        }
    }
    (images, y, dist)
}

/// Perturbation sizes (L-inf) and whether every value lies in [0, 1].
fn check_ball(x: &[f32], x_adv: &[f32], eps: f64) {
    for (a, b) in x_adv.chunks(DIM).zip(x.chunks(DIM)) {
        let size = a
            .iter()
            .zip(b)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            size as f64 <= eps * (1.0 + 1e-5) + 1e-7,
            "perturbation {size} > eps {eps}"
        );
        assert!(
            a.iter().all(|v| (0.0..=1.0).contains(v)),
            "values leave [0, 1]"
        );
    }
}

/// Points of `x_adv` the model still classifies correctly.
fn still_correct<C: Classifier<AB>>(model: &C, x_adv: Tensor<Inner, 4>, y: &[i64]) -> usize {
    let pred = predictions(model.logits(x_adv));
    pred.iter().zip(y).filter(|(p, t)| p == t).count()
}

fn quick_autoattack(eps: f64, version: Version) -> AutoAttack {
    let mut attack = AutoAttack::new(Norm::Linf, eps, version);
    attack.n_iter = 20;
    attack.square_queries = 300;
    attack
}

fn run_autoattack<C: Classifier<AB>>(
    attack: &AutoAttack,
    model: &C,
    images: &[f32],
    y: &[i64],
) -> (Report, Vec<f32>, Vec<String>) {
    let mut lines = Vec::new();
    let shape = [y.len(), 1, SIDE, SIDE];
    let (report, adv) = attack
        .run::<AB, C>(model, images, shape, y, &device(), |l| {
            lines.push(l.to_string())
        })
        .unwrap();
    (report, adv, lines)
}

fn has(report: &Report, check: Check) -> bool {
    report.flags.iter().any(|f| f.check == check)
}

// ---------------------------------------------------------------------------------------
// 13: PGD evaluation counts every iterate.

#[test]
fn pgd_evaluation_counts_a_point_broken_at_any_iterate() {
    let _rng = ews_models::rng_lock();
    // From x = 0.3, steps of 0.16 go to 0.46 (inside the bump: misclassified) and on to
    // 0.62 (correct again): the last iterate alone would call the point robust.
    let x = tensor4(vec![0.3], [1, 1, 1, 1]);
    let y = labels(&[0]);
    let pgd = Pgd {
        norm: Norm::Linf,
        eps: 0.35,
        step_size: 0.16,
        steps: 2,
        restarts: 1,
        start: Start::Clean,
        loss: PgdLoss::CrossEntropy,
        seed: 0,
    };
    let outcome = pgd.evaluate::<AB, _>(&Bump, x.clone(), y.clone(), 0);
    assert_eq!(
        outcome.robust,
        vec![false],
        "the iterate at 0.46 is misclassified"
    );
    let image = host(outcome.adversarial.clone())[0];
    assert!(
        (image - 0.46).abs() < 1e-6,
        "returned {image}, expected the iterate 0.46"
    );
    check_ball(&[0.3], &[image], 0.35);
    assert_eq!(still_correct(&Bump, outcome.adversarial, &[0]), 0);
    assert!(outcome.gradient.reaches_input && outcome.gradient.zero == 0);
    // Training keeps the last iterate (Rice et al. without early_stop).
    let last = host(pgd.run::<AB, _>(&Bump, x, y, 0))[0];
    assert!(
        (last - 0.62).abs() < 1e-6,
        "training PGD returned {last}, expected 0.62"
    );
}

#[test]
fn pgd_robust_accuracy_never_exceeds_clean_accuracy() {
    let _rng = ews_models::rng_lock();
    // x = 0.5 is misclassified clean; random starts mostly land outside the bump and tiny
    // steps keep them there, so last iterates alone would look robust.
    let n = 8;
    let x = tensor4(vec![0.5; n], [n, 1, 1, 1]);
    let y = vec![0i64; n];
    let pgd = Pgd {
        step_size: 0.001,
        ..Pgd::evaluation(Norm::Linf, 0.3, 3)
    };
    let last = pgd.run::<AB, _>(&Bump, x.clone(), labels(&y), 0);
    assert!(
        still_correct(&Bump, last, &y) > 0,
        "the setting must make last iterates look robust"
    );
    let outcome = pgd.evaluate::<AB, _>(&Bump, x.clone(), labels(&y), 0);
    assert_eq!(outcome.robust_count(), 0, "clean errors count as broken");
    assert_eq!(
        host(outcome.adversarial.clone()),
        vec![0.5; n],
        "the clean image is returned"
    );
    assert_eq!(still_correct(&Bump, outcome.adversarial, &y), 0);
}

#[test]
fn pgd_evaluation_is_never_weaker_than_the_last_iterate_and_agrees_with_its_images() {
    let _rng = ews_models::rng_lock();
    let model = Linear::random(10, 3);
    let n = 24;
    let images = central_images(n, 77);
    let x = tensor4(images.clone(), [n, 1, SIDE, SIDE]);
    let y = predictions(model.logits(x.clone()));
    for restarts in [1, 2] {
        let pgd = Pgd {
            restarts,
            ..Pgd::evaluation(Norm::Linf, 0.03, 5)
        };
        let last = pgd.run::<AB, _>(&model, x.clone(), labels(&y), 1);
        let outcome = pgd.evaluate::<AB, _>(&model, x.clone(), labels(&y), 1);
        let last_correct = predictions(model.logits(last));
        let pred = predictions(model.logits(outcome.adversarial.clone()));
        for i in 0..n {
            assert_eq!(
                pred[i] == y[i],
                outcome.robust[i],
                "point {i}: flag and image disagree"
            );
            assert!(!outcome.robust[i] || last_correct[i] == y[i], "point {i}");
        }
        check_ball(&images, &host(outcome.adversarial), 0.03);
    }
}

// ---------------------------------------------------------------------------------------
// 14: AutoAttack's checks.

#[test]
fn autoattack_flags_a_model_whose_graph_does_not_reach_the_input() {
    let _rng = ews_models::rng_lock();
    let model = Detached(Linear::random(10, 1));
    let images = central_images(6, 5);
    let y = predictions(model.logits(tensor4(images.clone(), [6, 1, SIDE, SIDE])));
    let (report, _, lines) = run_autoattack(
        &quick_autoattack(0.01, Version::Standard),
        &model,
        &images,
        &y,
    );
    let count = |check| report.flags.iter().filter(|f| f.check == check).count();
    assert_eq!(count(Check::NoInputGradient), 1, "{:?}", report.flags);
    assert!(
        lines.iter().any(|l| l.contains("[no-input-gradient]")),
        "the flag is printed"
    );
    // APGD-T then also starts from zero gradients at every point it attacks.
    let zero = report.flags.iter().find(|f| f.check == Check::ZeroGradient);
    let robust_before = report.members[0].robust_accuracy * 6.0 / 100.0;
    let expected = format!("apgd-t: {0} of {0} points", robust_before.round() as usize);
    assert!(
        zero.is_some_and(|f| f.message.starts_with(&expected)),
        "{:?}",
        report.flags
    );
    // PGD's evaluation reports the same.
    let x = tensor4(images.clone(), [6, 1, SIDE, SIDE]);
    let outcome = Pgd::evaluation(Norm::Linf, 0.01, 2).evaluate::<AB, _>(&model, x, labels(&y), 0);
    assert!(
        !outcome.gradient.reaches_input && outcome.gradient.zero == 6,
        "{:?}",
        outcome.gradient
    );
    // The same points and model with a graph: no gradient flags.
    let (clean_report, _, _) = run_autoattack(
        &quick_autoattack(0.01, Version::Standard),
        &model.0,
        &images,
        &y,
    );
    assert!(
        !has(&clean_report, Check::NoInputGradient) && !has(&clean_report, Check::ZeroGradient),
        "{:?}",
        clean_report.flags
    );
}

#[test]
fn autoattack_flags_zero_gradients_and_square_beating_the_gradient_attacks() {
    let _rng = ews_models::rng_lock();
    // Quantised inputs: zero gradients everywhere, so only Square can fool points.
    let model = Quantised(Linear::random(10, 2));
    let (images, _, _) = points_at_known_distance(&model.0, 8, 0.04..=0.05, None);
    let y = predictions(model.logits(tensor4(images.clone(), [8, 1, SIDE, SIDE])));
    let (report, _, _) = run_autoattack(
        &quick_autoattack(0.08, Version::Standard),
        &model,
        &images,
        &y,
    );
    assert!(has(&report, Check::ZeroGradient), "{:?}", report.flags);
    assert!(
        !has(&report, Check::NoInputGradient),
        "the graph does reach the input"
    );
    let square = report
        .members
        .iter()
        .find(|m| m.attack == Member::Square)
        .unwrap();
    assert!(square.fooled > 0, "Square fooled nothing: {report:?}");
    assert!(
        has(&report, Check::SquareLoweredAccuracy),
        "{:?}",
        report.flags
    );
}

#[test]
fn square_check_follows_the_reference_threshold() {
    let _rng = ews_models::rng_lock();
    let member = |attack, robust_accuracy, fooled| MemberResult {
        attack,
        robust_accuracy,
        fooled,
        seconds: 0.0,
    };
    let standard = |after_square| {
        vec![
            member(Member::ApgdCe, 50.0, 10),
            member(Member::ApgdT, 45.0, 5),
            member(Member::FabT, 45.0, 0),
            member(Member::Square, after_square, 1),
        ]
    };
    assert!(
        square_flag(60.0, &standard(44.0)).is_some(),
        "1 point of 100 is > 0.2 points"
    );
    assert!(
        square_flag(60.0, &standard(44.9)).is_none(),
        "0.1 points is within the threshold"
    );
    assert!(square_flag(60.0, &standard(45.0)).is_none());
    // 'plus': compared with the accuracy before Square, not the final one.
    let plus = vec![
        member(Member::ApgdCe, 50.0, 10),
        member(Member::ApgdDlr, 48.0, 2),
        member(Member::Fab, 48.0, 0),
        member(Member::Square, 47.0, 1),
        member(Member::ApgdT, 46.0, 1),
        member(Member::FabT, 46.0, 0),
    ];
    let flag = square_flag(60.0, &plus).expect("Square fooled after three gradient attacks");
    assert_eq!(flag.check, Check::SquareLoweredAccuracy);
}

#[test]
fn autoattack_flags_a_randomised_model_but_not_in_version_rand() {
    let _rng = ews_models::rng_lock();
    let model = Noisy(
        Linear::random(10, 4),
        RefCell::new(StdRng::seed_from_u64(9)),
    );
    let images = central_images(5, 6);
    let y = predictions(model.0.logits(tensor4(images.clone(), [5, 1, SIDE, SIDE])));
    let mut attack = quick_autoattack(0.001, Version::Standard);
    attack.n_iter = 2;
    attack.square_queries = 2;
    let (report, _, _) = run_autoattack(&attack, &model, &images, &y);
    assert!(has(&report, Check::Randomized), "{:?}", report.flags);
    let mut rand = quick_autoattack(0.001, Version::Rand);
    rand.n_iter = 2;
    let (report, _, _) = run_autoattack(&rand, &model, &images, &y);
    assert!(
        !has(&report, Check::Randomized),
        "version rand is meant for such models"
    );
    // A deterministic model passes; a softmax output is flagged.
    let (report, _, _) = run_autoattack(&attack, &model.0, &images, &y);
    assert!(report.flags.is_empty(), "{:?}", report.flags);
    let (report, _, _) = run_autoattack(&attack, &Probabilities(model.0.clone()), &images, &y);
    assert!(has(&report, Check::SoftmaxOutput), "{:?}", report.flags);
}

#[test]
fn autoattack_adjusts_and_flags_a_three_class_model() {
    let _rng = ews_models::rng_lock();
    let model = Linear::random(3, 8);
    let images = central_images(6, 7);
    let y = predictions(model.logits(tensor4(images.clone(), [6, 1, SIDE, SIDE])));
    let attack = quick_autoattack(0.02, Version::Standard);
    let (plan, _) = attack.plan(3);
    let members: Vec<Member> = plan.iter().map(|(m, _)| *m).collect();
    assert_eq!(members, vec![Member::ApgdCe, Member::FabT, Member::Square]);
    match plan[1].1 {
        MemberSettings::Fab(fab) => assert_eq!(fab.n_targets, Some(2)),
        other => panic!("{other:?}"),
    }
    let (report, adv, _) = run_autoattack(&attack, &model, &images, &y);
    let too_few: Vec<&Flag> = report
        .flags
        .iter()
        .filter(|f| f.check == Check::TooFewClasses)
        .collect();
    assert_eq!(too_few.len(), 2, "{:?}", report.flags);
    assert!(
        too_few
            .iter()
            .any(|f| f.message.starts_with("apgd-t skipped"))
    );
    assert!(too_few.iter().any(|f| f.message.starts_with("fab-t")));
    assert_eq!(report.members.len(), 3);
    check_ball(&images, &adv, 0.02);
    // Plus drops APGD-DLR only with two classes; a single class is refused.
    let (plan, flags) = AutoAttack::new(Norm::Linf, 0.02, Version::Plus).plan(2);
    assert!(
        !plan
            .iter()
            .any(|(m, _)| matches!(m, Member::ApgdDlr | Member::ApgdT))
    );
    assert_eq!(flags.len(), 3, "{flags:?}");
    assert!(attack.validate(1).is_err());
}

#[test]
fn flags_survive_the_progress_line_round_trip() {
    let _rng = ews_models::rng_lock();
    for check in Check::ALL {
        let flag = Flag {
            check,
            message: "something: with [brackets] and colons".into(),
        };
        assert_eq!(Flag::from_progress_line(&flag.progress_line()), Some(flag));
    }
    assert_eq!(
        Flag::from_progress_line("robust accuracy after square: 1.00%"),
        None
    );
}

// ---------------------------------------------------------------------------------------
// 15: reference settings and APGD's step halving.

#[test]
fn autoattack_versions_pin_the_reference_settings() {
    let _rng = ews_models::rng_lock();
    // autoattack.py (fra31/auto-attack), set_version and __init__: APGD n_iter 100, rho
    // .75; standard: APGD-CE 1 restart, APGD-T 9 targets x 1 restart, FAB-T 9 targets x 1
    // restart, Square 5000 queries, p_init .8, 1 restart; plus: APGD-CE and APGD-DLR 5
    // restarts, FAB 5 restarts, then Square, APGD-T, FAB-T as standard; rand: APGD-CE and
    // APGD-DLR, 1 restart, 20 EOT samples. FAB: alpha_max .1, eta 1.05, beta .9.
    let eps = 8.0 / 255.0;
    let apgd = |loss, restarts, eot_iter| {
        MemberSettings::Apgd(Apgd {
            norm: Norm::Linf,
            eps,
            n_iter: 100,
            restarts,
            loss,
            eot_iter,
            rho: 0.75,
            seed: 0,
        })
    };
    let fab = |n_targets, restarts| {
        MemberSettings::Fab(Fab {
            norm: Norm::Linf,
            eps,
            n_iter: 100,
            restarts,
            n_targets,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
            seed: 0,
        })
    };
    let square = MemberSettings::Square(Square {
        norm: Norm::Linf,
        eps,
        n_queries: 5000,
        p_init: 0.8,
        restarts: 1,
        seed: 0,
    });
    let targeted = ApgdLoss::DlrTargeted { n_targets: 9 };
    let expected = [
        (
            Version::Standard,
            vec![
                (Member::ApgdCe, apgd(ApgdLoss::CrossEntropy, 1, 1)),
                (Member::ApgdT, apgd(targeted, 1, 1)),
                (Member::FabT, fab(Some(9), 1)),
                (Member::Square, square),
            ],
        ),
        (
            Version::Plus,
            vec![
                (Member::ApgdCe, apgd(ApgdLoss::CrossEntropy, 5, 1)),
                (Member::ApgdDlr, apgd(ApgdLoss::Dlr, 5, 1)),
                (Member::Fab, fab(None, 5)),
                (Member::Square, square),
                (Member::ApgdT, apgd(targeted, 1, 1)),
                (Member::FabT, fab(Some(9), 1)),
            ],
        ),
        (
            Version::Rand,
            vec![
                (Member::ApgdCe, apgd(ApgdLoss::CrossEntropy, 1, 20)),
                (Member::ApgdDlr, apgd(ApgdLoss::Dlr, 1, 20)),
            ],
        ),
    ];
    for (version, members) in expected {
        let attack = AutoAttack::new(Norm::Linf, eps, version);
        assert_eq!(
            (attack.batch_size, attack.n_iter, attack.square_queries),
            (250, 100, 5000)
        );
        let (plan, flags) = attack.plan(10);
        assert!(flags.is_empty(), "{version:?}: {flags:?}");
        assert_eq!(plan, members, "{version:?}");
    }
}

/// The step sizes APGD used per iteration for the first point of its first run.
fn apgd_steps(model: &ScriptedLoss, n_iter: usize) -> Vec<f32> {
    let apgd = Apgd {
        n_iter,
        ..Apgd::ce(Norm::Linf, 0.1)
    };
    let x = tensor4(central_images(2, 1), [2, 1, SIDE, SIDE]);
    let (_, traces) = apgd.run_traced::<AB, _>(model, x, &[0, 0]);
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].step_sizes.len(), n_iter);
    traces[0].step_sizes.iter().map(|s| s[0]).collect()
}

#[test]
fn apgd_halves_the_step_at_every_checkpoint_of_a_constant_loss() {
    let _rng = ews_models::rng_lock();
    let model = ScriptedLoss {
        model: Linear::random(10, 11),
        rising: false,
        passes: Cell::new(0),
    };
    let steps = apgd_steps(&model, 100);
    let checkpoints = Apgd::ce(Norm::Linf, 0.1).checkpoints();
    for (i, step) in steps.iter().enumerate() {
        let halvings = checkpoints.iter().filter(|&&c| c < i).count() as i32;
        let expected = 0.2 / 2f32.powi(halvings);
        assert!(
            (step - expected).abs() < 1e-7,
            "iteration {i}: step {step}, expected {expected} after {halvings} halvings"
        );
    }
    assert!(
        (steps[99] - 0.2 / 256.0).abs() < 1e-9,
        "8 halvings in 100 iterations"
    );
}

#[test]
fn apgd_never_halves_the_step_of_a_strictly_rising_loss() {
    let _rng = ews_models::rng_lock();
    let model = ScriptedLoss {
        model: Linear::random(10, 12),
        rising: true,
        passes: Cell::new(0),
    };
    let steps = apgd_steps(&model, 100);
    assert!(steps.iter().all(|&s| s == 0.2f32), "{steps:?}");
}

// ---------------------------------------------------------------------------------------
// 17: attack strength where the answer is known.

/// The share of points each attack fools on `model` at `eps`, with its images checked.
fn fooled_share(model: &Linear, images: &[f32], y: &[i64], eps: f64) -> Vec<(&'static str, f64)> {
    let n = y.len();
    let x = || tensor4(images.to_vec(), [n, 1, SIDE, SIDE]);
    let attacks: Vec<(&str, Tensor<Inner, 4>)> = vec![
        (
            "apgd-ce",
            Apgd::ce(Norm::Linf, eps).run::<AB, _>(model, x(), y),
        ),
        (
            "apgd-t",
            Apgd::targeted(Norm::Linf, eps).run::<AB, _>(model, x(), y),
        ),
        (
            "fab-t",
            Fab {
                n_iter: 30,
                ..Fab::targeted(Norm::Linf, eps)
            }
            .run::<AB, _>(model, x(), y),
        ),
        (
            "square",
            Square {
                n_queries: 1000,
                ..Square::autoattack(Norm::Linf, eps)
            }
            .run::<AB, _>(model, x(), y),
        ),
    ];
    attacks
        .into_iter()
        .map(|(name, adv)| {
            check_ball(images, &host(adv.clone()), eps);
            let fooled = n - still_correct(model, adv, y);
            (name, fooled as f64 / n as f64)
        })
        .collect()
}

#[test]
fn every_attack_fools_all_points_beyond_the_linear_boundary_distance_and_none_within() {
    let _rng = ews_models::rng_lock();
    // A linear model: the smallest L-inf perturbation that changes the class is
    // min_k (z_y - z_k) / ||w_y - w_k||_1, here between 0.04 and 0.05 for every point.
    let model = Linear::for_strength(21);
    let (images, y, dist) = points_at_known_distance(&model, 12, 0.04..=0.05, Some(0.055));
    let (lo, hi) = dist
        .iter()
        .fold((f32::MAX, 0.0f32), |(a, b), d| (a.min(*d), b.max(*d)));
    for (name, share) in fooled_share(&model, &images, &y, 1.1 * hi as f64) {
        assert_eq!(
            share, 1.0,
            "{name} at 1.1 x the largest distance fooled {share}"
        );
    }
    for (name, share) in fooled_share(&model, &images, &y, 0.9 * lo as f64) {
        assert_eq!(
            share, 0.0,
            "{name} fooled a point below its distance to the boundary"
        );
    }
}

#[test]
fn autoattack_images_reproduce_the_reported_robust_accuracy() {
    let _rng = ews_models::rng_lock();
    let model = Linear::for_strength(21);
    // Points at distance 0.04-0.05 (must be fooled at eps 0.055) and 0.065-0.08 (cannot be).
    let (mut images, mut y, mut dist) =
        points_at_known_distance(&model, 8, 0.04..=0.05, Some(0.055));
    let (far_images, far_y, far_dist) = points_at_known_distance(&model, 8, 0.065..=0.08, None);
    images.extend(far_images);
    y.extend(far_y);
    dist.extend(far_dist);
    let eps = 0.055;
    let (report, adv, _) = run_autoattack(
        &quick_autoattack(eps, Version::Standard),
        &model,
        &images,
        &y,
    );
    check_ball(&images, &adv, eps);
    let n = y.len();
    let correct = still_correct(&model, tensor4(adv, [n, 1, SIDE, SIDE]), &y);
    assert_eq!(report.robust_accuracy, 100.0 * correct as f64 / n as f64);
    let reachable = dist.iter().filter(|&&d| (d as f64) < eps).count();
    assert_eq!(
        n - correct,
        reachable,
        "fooled exactly the points within eps: {report:?}"
    );
    assert!(report.max_perturbation <= eps * (1.0 + 1e-5));
}
