//! CPU training-step throughput of the CPU backends (flex and ndarray).
//!
//! `cargo bench -p ews-models --bench train_step -- [--model NAME] [--batch N] [--steps N] [--size PX]`
//!
//! One step = full forward in training mode, cross-entropy, backward, SGD (momentum 0.9,
//! nesterov, weight decay 5e-4) on random 32x32 inputs with 10 classes; the first step is
//! a warm-up and not timed.

use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use ews_models::{BnMode, NetworkConfig, Normalization};

struct Args {
    model: String,
    batch: usize,
    steps: usize,
    size: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: "preact-resnet18".into(),
        batch: 32,
        steps: 3,
        size: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--model" => args.model = value(),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--steps" => args.steps = value().parse().expect("--steps N"),
            "--size" => args.size = value().parse().expect("--size PX"),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn bench<B: AutodiffBackend>(name: &str, args: &Args) -> f64
where
    B::InnerBackend: burn::tensor::backend::Backend,
{
    let device = Default::default();
    B::seed(&device, 0);
    let mut model = NetworkConfig::new(args.model.parse().expect("model name"))
        .with_normalization(Normalization::cifar10())
        .init::<B>(&device)
        .expect("model");
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
        }))
        .with_weight_decay(Some(WeightDecayConfig { penalty: 5e-4 }))
        .init::<B, ews_models::Network<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let x = Tensor::<B, 4>::random(
        [args.batch, 3, args.size, args.size],
        Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let y = Tensor::<B, 1, Int>::from_data(
        burn::tensor::TensorData::new(
            (0..args.batch as i64).map(|i| i % 10).collect::<Vec<_>>(),
            [args.batch],
        ),
        &device,
    );
    let mut timed = 0.0;
    for step in 0..=args.steps {
        let start = Instant::now();
        let logits = model.forward(x.clone(), BnMode::Train);
        let loss = loss_fn.forward(logits, y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.1, model, grads);
        let _ = loss_fn_value(&model);
        let secs = start.elapsed().as_secs_f64();
        if step > 0 {
            timed += secs;
        }
        eprintln!("{name}: step {step} {secs:.2} s");
    }
    let ips = (args.batch * args.steps) as f64 / timed;
    println!(
        "{name}: {} batch {} {}px: {:.2} s/step, {:.1} images/s",
        args.model,
        args.batch,
        args.size,
        timed / args.steps as f64,
        ips
    );
    ips
}

/// Forces pending work to finish so the step time is complete.
fn loss_fn_value<B: AutodiffBackend>(model: &ews_models::Network<B>) -> f32 {
    use burn::tensor::ElementConversion;
    model
        .valid()
        .classifier
        .weight
        .val()
        .sum()
        .into_scalar()
        .elem()
}

fn main() {
    let args = parse_args();
    let flex = bench::<Autodiff<Flex>>("flex", &args);
    let ndarray = bench::<Autodiff<NdArray>>("ndarray", &args);
    println!("flex / ndarray speed ratio: {:.2}", flex / ndarray);
}
