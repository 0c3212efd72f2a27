//! The metrics of training: step sums kept on the device, the `metrics.jsonl` lines.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use ews_search::SearchStats;
use serde_json::json;

use super::epoch::EpochTotals;
use super::evaluation::EpochScores;
use super::peers::Peer;
use super::search::SubnetSearch;
use crate::TrainError;
use crate::config::{OnNonFinite, TrainConfig};

/// Running sums of one epoch's step metrics.
#[derive(Default)]
pub(crate) struct Meter {
    pub steps: usize,
    pub images: usize,
    pub loss: f64,
    pub ce: f64,
    pub kl: f64,
    pub jsd: f64,
    pub right: usize,
    pub sub_right: usize,
    pub seconds: f64,
}

impl Meter {
    /// Adds another interval's sums.
    pub fn add(&mut self, other: &Meter) {
        self.steps += other.steps;
        self.images += other.images;
        self.loss += other.loss;
        self.ce += other.ce;
        self.kl += other.kl;
        self.jsd += other.jsd;
        self.right += other.right;
        self.sub_right += other.sub_right;
        self.seconds += other.seconds;
    }
}

/// Training metrics summed on the device and read back once per log interval, so a step
/// never waits for the device.
pub(crate) struct DeviceSums<B: Backend> {
    /// `[ce, kl, jsd, loss, right, sub_right]` summed since the last read.
    sums: Option<Tensor<B, 1>>,
    steps: usize,
    images: usize,
    first_step: usize,
    since: Instant,
}

impl<B: Backend> DeviceSums<B> {
    /// Empty sums of an interval starting at `first_step`.
    pub fn new(first_step: usize) -> Self {
        Self {
            sums: None,
            steps: 0,
            images: 0,
            first_step,
            since: Instant::now(),
        }
    }

    /// Adds one step's `[ce, kl, jsd, loss, right, sub_right]`.
    pub fn add(&mut self, values: Tensor<B, 1>, images: usize) {
        self.sums = Some(match self.sums.take() {
            Some(sums) => sums + values,
            None => values,
        });
        self.steps += 1;
        self.images += images;
    }

    /// Reads the sums (one device-to-host transfer) and starts a new interval at
    /// `next_step`; the seconds are the wall time of the interval, device work included.
    /// In data-parallel runs the peers' sums are combined first: losses averaged, counts
    /// added. Returns the metrics, the summed loss and the interval's first step.
    pub fn read(
        &mut self,
        next_step: usize,
        peer: Option<&Peer>,
    ) -> Result<(Meter, f64, usize), TrainError> {
        let (mut values, peers) = match (self.sums.take(), peer) {
            (Some(sums), Some(peer)) => (host(peer.sum(sums)?), peer.count),
            (Some(sums), None) => (host(sums), 1),
            (None, _) => (vec![0.0; 6], 1),
        };
        values[..4].iter_mut().for_each(|v| *v /= peers as f64);
        let meter = Meter {
            steps: self.steps,
            images: self.images * peers,
            loss: values[3],
            ce: values[0],
            kl: values[1],
            jsd: values[2],
            right: values[4].round() as usize,
            sub_right: values[5].round() as usize,
            seconds: self.since.elapsed().as_secs_f64(),
        };
        let first_step = self.first_step;
        *self = Self::new(next_step);
        Ok((meter, values[3], first_step))
    }
}

fn host<B: Backend>(sums: Tensor<B, 1>) -> Vec<f64> {
    sums.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 metric sums")
}

/// The `metrics.jsonl` line of a log interval of steps.
pub(crate) fn step_line<B: AutodiffBackend>(
    epoch: usize,
    step: usize,
    lr: f64,
    m: &Meter,
    masked: bool,
    search: &SubnetSearch<B>,
) -> serde_json::Value {
    let steps = m.steps.max(1) as f64;
    let mut line = training_fields("step", epoch, step, lr, m);
    if m.jsd != 0.0 {
        line["jsd"] = json!(m.jsd / steps);
    }
    if masked {
        line["kl"] = json!(m.kl / steps);
        line["subnet_acc"] = json!(100.0 * m.sub_right as f64 / m.images.max(1) as f64);
    }
    if let Some(c) = search.controller() {
        let stats: &SearchStats = &search.last_stats;
        line["controller_reward"] = json!(stats.reward);
        line["baseline"] = json!(c.baseline);
        line["controller_entropy"] = json!(stats.entropy);
        line["controller_grad_norm"] = json!(stats.grad_norm);
    }
    line
}

/// The `metrics.jsonl` line of an epoch.
pub(crate) fn epoch_line<B: AutodiffBackend>(
    epoch: usize,
    step: usize,
    lr: f64,
    totals: &EpochTotals,
    scores: &EpochScores,
    config: &TrainConfig,
    search: &SubnetSearch<B>,
) -> serde_json::Value {
    let meter = &totals.meter;
    let steps = meter.steps.max(1) as f64;
    let images = meter.images.max(1) as f64;
    let mut line = training_fields("epoch", epoch, step, lr, meter);
    line["test_acc"] = json!(scores.test_acc);
    line["seconds"] = json!(meter.seconds);
    if let Some(seconds) = totals.exchange_seconds {
        line["exchange_seconds"] = json!(seconds);
    }
    if config.on_nonfinite == OnNonFinite::Skip {
        line["skipped_steps"] = json!(totals.skipped_steps);
    }
    if let Some((clean, robust)) = scores.held_out {
        line["holdout_acc"] = json!(clean);
        if let Some(robust) = robust {
            line["holdout_robust_acc"] = json!(robust);
        }
    }
    if config.uses_jsd() {
        line["jsd"] = json!(meter.jsd / steps);
    }
    if search.has_subnets() {
        line["kl"] = json!(meter.kl / steps);
        line["subnet_acc"] = json!(100.0 * meter.sub_right as f64 / images);
    }
    if let Some(c) = search.controller() {
        line["controller_reward"] = json!(search.last_stats.reward);
        line["baseline"] = json!(c.baseline);
        line["controller_updates"] = json!(totals.controller_updates);
    }
    line
}

/// The fields every line has: position, learning rate, training loss, accuracy and speed.
fn training_fields(kind: &str, epoch: usize, step: usize, lr: f64, m: &Meter) -> serde_json::Value {
    let steps = m.steps.max(1) as f64;
    json!({
        "type": kind,
        "epoch": epoch + 1,
        "step": step,
        "lr": lr,
        "train_loss": m.loss / steps,
        "train_ce": m.ce / steps,
        "train_acc": 100.0 * m.right as f64 / m.images.max(1) as f64,
        "images_per_s": m.images as f64 / m.seconds.max(1e-9),
    })
}
