//! AlexNet inference on the flex CPU backend, stage by stage (where `ews alexnet` spends its
//! time on ImageNet-P: one batch of 31 frames per video).
//!
//! `cargo bench -p ews-models --bench alexnet_forward -- [--batch N] [--size PX] [--runs N]`
//!
//! Random torchvision-size weights and inputs; the first forward is a warm-up. Each stage is
//! timed on its own input (synced by reading the output back), then the whole forward.
//! `EWS_KERNELS=burn` times burn's own convolution and pooling.

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Distribution, Tensor};
use ews_models::AlexNetConfig;
use ews_models::pool::{max_pool2d, normalise_input};

type B = Flex;

struct Args {
    batch: usize,
    size: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        batch: 31,
        size: 224,
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag needs a value");
        match flag.as_str() {
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--size" => args.size = value().parse().expect("--size PX"),
            "--runs" => args.runs = value().parse().expect("--runs N"),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// Best milliseconds of `runs` calls of `f` (each result read back to the host).
fn time<const D: usize>(runs: usize, f: impl Fn() -> Tensor<B, D>) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let _ = f().into_data();
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args = parse_args();
    let device = Default::default();
    let model = AlexNetConfig::torchvision().init::<B>(&device);
    let shape = [args.batch, 3, args.size, args.size];
    let x = Tensor::<B, 4>::random(shape, Distribution::Uniform(0.0, 1.0), &device);
    let _ = model.forward(x.clone()).into_data();
    println!(
        "AlexNet forward, batch {}, {} px, {} rayon threads, best of {}:",
        args.batch,
        args.size,
        rayon::current_num_threads(),
        args.runs
    );
    let r = args.runs;
    let pool = |x| max_pool2d(x, [3, 3], [2, 2], [0, 0]);
    let conv = |c, x| relu(ews_models::alexnet::conv_forward(c, x));
    let report = |name: &str, ms: f64| println!("  {name:<22} {ms:8.2} ms");
    let t = |x: &Tensor<B, 4>| x.clone();
    let (mean, std) = (&model.input_mean, &model.input_std);
    report(
        "normalise, broadcast",
        time(r, || (t(&x) - t(mean)) / t(std)),
    );
    report("normalise", time(r, || normalise_input(t(&x), mean, std)));
    let c1 = conv(&model.conv1, x.clone());
    report("conv1 + relu", time(r, || conv(&model.conv1, x.clone())));
    report("maxpool 1", time(r, || pool(c1.clone())));
    let p1 = pool(c1);
    report("conv2 + relu", time(r, || conv(&model.conv2, p1.clone())));
    let c2 = conv(&model.conv2, p1);
    report("maxpool 2", time(r, || pool(c2.clone())));
    let p2 = pool(c2);
    report("conv3 + relu", time(r, || conv(&model.conv3, p2.clone())));
    let c3 = conv(&model.conv3, p2);
    report("conv4 + relu", time(r, || conv(&model.conv4, c3.clone())));
    let c4 = conv(&model.conv4, c3);
    report("conv5 + relu", time(r, || conv(&model.conv5, c4.clone())));
    let c5 = conv(&model.conv5, c4);
    report(
        "maxpool 3 + avgpool",
        time(r, || adaptive_avg_pool2d(pool(c5.clone()), [6, 6])),
    );
    let flat = adaptive_avg_pool2d(pool(c5), [6, 6]).reshape([args.batch as i32, -1]);
    report(
        "fc1 + relu",
        time(r, || relu(model.fc1.forward(flat.clone()))),
    );
    let h1 = relu(model.fc1.forward(flat));
    report(
        "fc2 + relu",
        time(r, || relu(model.fc2.forward(h1.clone()))),
    );
    let h2 = relu(model.fc2.forward(h1));
    report("fc3", time(r, || model.fc3.forward(h2.clone())));
    let total = time(r, || model.forward(x.clone()));
    report("whole forward", total);
    println!("  {:.1} images/s", args.batch as f64 / total * 1e3);
}
