//! The run: its folder, saved config, metrics file, checkpoints, best model and summary,
//! and resuming from them.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use ews_models::persist::{
    decode_record, load_record_bytes, pack_sections, record_bytes, remove_stale_temporaries,
    unpack_sections, write_atomically,
};
use ews_models::{Network, NetworkConfig};
use serde::{Deserialize, Serialize};

use super::inputs::load_eval_dataset;
use super::search::Searcher;
use super::step::Learner;
use crate::TrainError;
use crate::config::TrainConfig;
use ews_data::Dataset;

/// Files of a run folder.
pub struct RunFiles {
    /// The folder.
    pub dir: PathBuf,
}

impl RunFiles {
    /// The resolved configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// One JSON object per line: step and epoch metrics.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// The latest checkpoint (model, optimiser, controller, trainer state).
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.ews")
    }
    /// The checkpoint after `epoch` that node `node` (> 0) of a run over several machines
    /// keeps to resume from (equal to node 0's but for the scores, which node 0 alone
    /// computes); each such node keeps its last two.
    pub fn node_checkpoint(&self, node: usize, epoch: usize) -> PathBuf {
        self.dir
            .join(format!("checkpoint.node-{node}.epoch-{epoch}.ews"))
    }

    /// The epochs of node `node`'s checkpoints in the folder, in increasing order.
    pub fn node_checkpoint_epochs(&self, node: usize) -> Vec<usize> {
        let prefix = format!("checkpoint.node-{node}.epoch-");
        let mut epochs: Vec<usize> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(&prefix)?
                    .strip_suffix(".ews")?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        epochs
    }
    /// Weights of the epoch with the best test accuracy.
    pub fn best_model(&self) -> PathBuf {
        self.dir.join("best_model.mpk")
    }
    /// Final figures of the run.
    pub fn summary(&self) -> PathBuf {
        self.dir.join("summary.json")
    }
}

/// Final figures of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Epochs trained in total.
    pub epochs: usize,
    /// Test accuracy after the last epoch (percent).
    pub final_test_acc: f64,
    /// Best test accuracy (percent).
    pub best_test_acc: f64,
    /// Epoch of the best test accuracy.
    pub best_epoch: usize,
    /// Wall-clock seconds of training in this process.
    pub seconds: f64,
    /// Training images per second in this process.
    pub images_per_s: f64,
    /// What chose the best epoch: `test_acc`, `holdout_acc` or `holdout_robust_acc`
    /// (early stopping on held-out training images, Rice et al.).
    #[serde(default = "default_selection")]
    pub selected_by: String,
    /// The value of that metric at the best epoch (percent).
    #[serde(default)]
    pub best_selection_value: f64,
}

fn default_selection() -> String {
    "test_acc".into()
}

/// The counters a checkpoint remembers besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunState {
    pub epochs_done: usize,
    pub global_step: usize,
    /// -inf before any epoch was scored (JSON writes it as null; nodes other than 0 never
    /// score).
    #[serde(deserialize_with = "null_as_minus_infinity")]
    pub best_test_acc: f64,
    pub best_epoch: usize,
    pub last_test_acc: f64,
    pub metrics_len: u64,
    #[serde(default)]
    pub best_selection: Option<f64>,
}

impl RunState {
    /// Refuses counters that no run of `epochs` epochs writes (a damaged checkpoint).
    fn check(&self, epochs: usize, path: &Path) -> Result<(), TrainError> {
        if self.epochs_done > epochs || self.best_epoch > self.epochs_done {
            return Err(record_error(
                path,
                "state",
                format!(
                    "{} epochs done (best {}) do not fit a run of {epochs} epochs",
                    self.epochs_done, self.best_epoch
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that `metrics.jsonl` still holds the `len` bytes that the checkpoint saw, as whole
/// JSON lines, before a resume cuts it there.
fn check_metrics_prefix(path: &Path, len: u64) -> Result<(), TrainError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let damaged = |why: String| {
        TrainError::Run(format!(
            "{}: {why}; the checkpoint was written after its first {len} bytes. Restore the file, or start the run afresh in another --out",
            path.display()
        ))
    };
    let Some(kept) = usize::try_from(len).ok().and_then(|n| bytes.get(..n)) else {
        return Err(damaged(format!("holds only {} bytes", bytes.len())));
    };
    if !kept.is_empty() && kept.last() != Some(&b'\n') {
        return Err(damaged(
            "the kept part does not end with a whole line".into(),
        ));
    }
    for (number, line) in kept.split(|&b| b == b'\n').enumerate() {
        if !line.is_empty() && serde_json::from_slice::<serde_json::Map<_, _>>(line).is_err() {
            return Err(damaged(format!("line {} is not a JSON object", number + 1)));
        }
    }
    Ok(())
}

fn null_as_minus_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

impl Default for RunState {
    fn default() -> Self {
        Self {
            epochs_done: 0,
            global_step: 0,
            best_test_acc: f64::NEG_INFINITY,
            best_epoch: 0,
            last_test_acc: 0.0,
            metrics_len: 0,
            best_selection: None,
        }
    }
}

/// What a training process (or data-parallel peer) writes into the run folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Everything: config, metrics, checkpoint, best model, summary (peer 0 of the run).
    Writer,
    /// Its node's checkpoint and the config (the first peer of node > 0).
    NodeCopy,
    /// Nothing: it reads the checkpoint to resume (the other peers).
    Reader,
}

/// An open run folder: where a training process writes.
pub(crate) struct Run {
    pub files: RunFiles,
    /// The machine of a run over several (0 otherwise).
    node: usize,
    /// The checkpoint this process resumes from (and writes, unless a reader).
    checkpoint: PathBuf,
    /// Whether the folder holds a checkpoint to continue from.
    resuming: bool,
    role: Role,
    metrics: Option<File>,
    /// The folder's lock, held while this process writes it (none for readers).
    _lock: Option<FolderLock>,
}

impl Run {
    /// Opens `dir` for `config` on node `node` (0 but in runs over several machines). A
    /// folder holding a checkpoint is refused without `resume` (finished work is never
    /// overwritten) and with a config other than the saved one.
    pub fn open(
        config: &TrainConfig,
        dir: &Path,
        resume: bool,
        node: usize,
    ) -> Result<Self, TrainError> {
        let files = RunFiles {
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_folder(dir, node)?;
        remove_stale_temporaries(dir).map_err(io_err(dir))?;
        let (checkpoint, role, resuming) = match node {
            0 => {
                let checkpoint = files.checkpoint();
                let resuming = checkpoint.is_file();
                (checkpoint, Role::Writer, resuming)
            }
            n => {
                let latest = files.node_checkpoint_epochs(n).last().copied();
                let checkpoint = files.node_checkpoint(n, latest.unwrap_or(0));
                (checkpoint, Role::NodeCopy, latest.is_some())
            }
        };
        if resuming && !resume {
            return Err(TrainError::Run(format!(
                "{} already holds a run ({}); pass --resume to continue it or choose another --out",
                dir.display(),
                checkpoint.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
        if resuming {
            let saved = TrainConfig::from_toml_file(&files.config())?;
            if &saved != config {
                return Err(TrainError::Run(format!(
                    "--resume: the config differs from the one saved in {}: {}; resume without changing these settings, or train into another --out",
                    files.config().display(),
                    config_differences(&saved, config).join(", ")
                )));
            }
        }
        Ok(Self {
            files,
            node,
            checkpoint,
            resuming,
            role,
            metrics: None,
            _lock: Some(lock),
        })
    }

    /// The same run for a data-parallel peer that reads the checkpoint but writes nothing.
    pub fn reader(&self) -> Self {
        Self {
            files: RunFiles {
                dir: self.files.dir.clone(),
            },
            node: self.node,
            checkpoint: self.checkpoint.clone(),
            resuming: self.resuming,
            role: Role::Reader,
            metrics: None,
            _lock: None,
        }
    }

    /// Whether this process writes the run's files (and so evaluates the network).
    pub fn writes(&self) -> bool {
        self.role == Role::Writer
    }

    /// Whether this process writes a checkpoint: the run's, or its node's copy.
    pub fn keeps_checkpoint(&self) -> bool {
        self.role != Role::Reader
    }

    /// The machine this process runs on (0 but in runs over several).
    pub fn node(&self) -> usize {
        self.node
    }

    /// On a node other than 0, resumes from this node's checkpoint after `epoch`, the epoch
    /// node 0 resumes after (0: node 0 starts afresh, and so does this node).
    pub fn resume_after(&mut self, epoch: usize) -> Result<(), TrainError> {
        if self.node == 0 {
            return Ok(());
        }
        self.resuming = epoch > 0;
        self.checkpoint = self.files.node_checkpoint(self.node, epoch);
        if self.resuming && !self.checkpoint.is_file() {
            return Err(TrainError::Run(format!(
                "node {}: node 0 resumes after epoch {epoch}, but {} holds no {} (its checkpoints are after epochs {:?}); resume every node from folders of the same run",
                self.node,
                self.files.dir.display(),
                self.checkpoint
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy(),
                self.files.node_checkpoint_epochs(self.node)
            )));
        }
        Ok(())
    }

    /// Starts the run: a fresh run saves its config and an empty metrics file; a resumed
    /// one loads its checkpoint into `learner` and drops the metrics lines written after
    /// that checkpoint by the interrupted process. Returns the learner and the run's counters.
    pub fn start<B: AutodiffBackend>(
        &mut self,
        config: &TrainConfig,
        learner: Learner<B>,
        device: &B::Device,
    ) -> Result<(Learner<B>, RunState), TrainError> {
        let (learner, state) = if self.resuming {
            let (learner, state) = self.load_checkpoint(learner, device)?;
            state.check(config.epochs, &self.checkpoint)?;
            (learner, state)
        } else {
            (learner, RunState::default())
        };
        if self.role == Role::NodeCopy && !self.resuming {
            let path = self.files.config();
            write_atomically(&path, config.to_toml().as_bytes()).map_err(io_err(&path))?;
        }
        if self.role != Role::Writer {
            return Ok((learner, state));
        }
        let metrics = self.files.metrics();
        if self.resuming {
            check_metrics_prefix(&metrics, state.metrics_len)?;
            let file = OpenOptions::new()
                .write(true)
                .open(&metrics)
                .map_err(io_err(&metrics))?;
            file.set_len(state.metrics_len).map_err(io_err(&metrics))?;
        } else {
            write_atomically(&self.files.config(), config.to_toml().as_bytes())
                .map_err(io_err(&self.files.config()))?;
            std::fs::write(&metrics, b"").map_err(io_err(&metrics))?;
        }
        self.metrics = Some(
            OpenOptions::new()
                .append(true)
                .open(&metrics)
                .map_err(io_err(&metrics))?,
        );
        Ok((learner, state))
    }

    /// Appends one line to `metrics.jsonl` and flushes it.
    pub fn log(&mut self, value: serde_json::Value) -> Result<(), TrainError> {
        let path = self.files.metrics();
        let Some(file) = self.metrics.as_mut() else {
            return Ok(());
        };
        writeln!(file, "{value}").map_err(io_err(&path))?;
        file.flush().map_err(io_err(&path))
    }

    /// Writes `model` as the best model (atomically).
    pub fn save_best<B: Backend>(&self, model: &Network<B>) -> Result<(), TrainError> {
        if !self.writes() {
            return Ok(());
        }
        let path = self.files.best_model();
        write_atomically(&path, &record_bytes(model)?).map_err(io_err(&path))
    }

    /// Writes the checkpoint (atomically) after recording how long the metrics file is, so
    /// a resumed run drops what was logged after it. Readers write nothing.
    pub fn save_checkpoint<B: AutodiffBackend>(
        &self,
        state: &mut RunState,
        learner: &Learner<B>,
    ) -> Result<(), TrainError> {
        if !self.keeps_checkpoint() {
            return Ok(());
        }
        if self.writes() {
            let metrics = self.files.metrics();
            state.metrics_len = std::fs::metadata(&metrics).map_err(io_err(&metrics))?.len();
        }
        let path = &match self.role {
            Role::NodeCopy => self.files.node_checkpoint(self.node, state.epochs_done),
            _ => self.checkpoint.clone(),
        };
        let state_bytes = serde_json::to_vec(state).expect("state serialises");
        let model_bytes = record_bytes(&learner.model)?;
        let optim_bytes = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .record(learner.optim.to_record(), ())
            .map_err(|e| record_error(path, "optimizer", e))?;
        let mut sections: Vec<(&str, &[u8])> = vec![
            ("state", &state_bytes),
            ("model", &model_bytes),
            ("optimizer", &optim_bytes),
        ];
        let controller_bytes;
        if let Some(c) = learner.search.controller() {
            controller_bytes = c.state_bytes()?;
            sections.push(("controller", &controller_bytes));
        }
        write_atomically(path, &pack_sections(&sections)).map_err(io_err(path))?;
        if self.role == Role::NodeCopy {
            self.keep_two_node_checkpoints(state.epochs_done)?;
        }
        Ok(())
    }

    /// Deletes this node's checkpoints but those after `epoch` and the epoch before: node 0
    /// writes its own after every node wrote theirs, so it resumes after one of the two.
    fn keep_two_node_checkpoints(&self, epoch: usize) -> Result<(), TrainError> {
        for old in self.files.node_checkpoint_epochs(self.node) {
            if old != epoch && old + 1 != epoch {
                let path = self.files.node_checkpoint(self.node, old);
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    fn load_checkpoint<B: AutodiffBackend>(
        &self,
        mut learner: Learner<B>,
        device: &B::Device,
    ) -> Result<(Learner<B>, RunState), TrainError> {
        let path = &self.checkpoint;
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let mut sections: HashMap<String, Vec<u8>> =
            unpack_sections(&bytes, path)?.into_iter().collect();
        let mut take = |name: &str| {
            sections
                .remove(name)
                .ok_or_else(|| record_error(path, "checkpoint", format!("no `{name}` section")))
        };
        let state: RunState =
            serde_json::from_slice(&take("state")?).map_err(|e| record_error(path, "state", e))?;
        learner.model = load_record_bytes(learner.model, take("model")?, path, device)?;
        let record = decode_record(take("optimizer")?, path, "optimizer", device)?;
        learner.optim = learner.optim.load_record(record);
        learner.search.searcher = match learner.search.searcher {
            Searcher::Controller(c) => {
                Searcher::Controller(Box::new(c.load_state_bytes(&take("controller")?, path)?))
            }
            other => other,
        };
        Ok((learner, state))
    }

    /// Writes `summary.json` (atomically).
    pub fn write_summary(&self, summary: &Summary) -> Result<(), TrainError> {
        if !self.writes() {
            return Ok(());
        }
        let path = self.files.summary();
        let text = serde_json::to_string_pretty(summary).expect("summary serialises");
        write_atomically(&path, text.as_bytes()).map_err(io_err(&path))
    }
}

/// Each field whose value differs between `saved` and `given`, as `field (saved X, given
/// Y)`; a field set in only one reads `unset` in the other.
pub(crate) fn config_differences(saved: &TrainConfig, given: &TrainConfig) -> Vec<String> {
    let table = |c: &TrainConfig| -> toml::Table {
        c.to_toml().parse().expect("a config's own TOML parses")
    };
    let (saved, given) = (table(saved), table(given));
    let mut fields: Vec<&String> = saved.keys().chain(given.keys()).collect();
    fields.sort();
    fields.dedup();
    let show = |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
    fields
        .into_iter()
        .filter(|f| saved.get(*f) != given.get(*f))
        .map(|f| {
            format!(
                "{f} (saved {}, given {})",
                show(saved.get(f)),
                show(given.get(f))
            )
        })
        .collect()
}

/// Takes the run folder's lock for node `node` (`.lock`, or `.lock.node-R` on other nodes,
/// so nodes may share a folder): one writer per folder. The operating system releases it
/// when the process ends, however it ends, so a killed run never leaves it stuck.
fn lock_folder(dir: &Path, node: usize) -> Result<FolderLock, TrainError> {
    let path = match node {
        0 => dir.join(".lock"),
        n => dir.join(format!(".lock.node-{n}")),
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(TrainError::Run(format!(
                "{} is in use by another training process ({}); wait for it to end or choose another --out",
                dir.display(),
                match holder.trim() {
                    "" => "its lock file is empty".to_string(),
                    pid => format!("pid {pid}"),
                }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    file.set_len(0).map_err(io_err(&path))?;
    write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
    file.flush().map_err(io_err(&path))?;
    Ok(FolderLock(file))
}

/// A held folder lock; the file stays (removing a lock file races with a process opening
/// it), emptied of the holder's pid when released.
struct FolderLock(File);

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = self.0.set_len(0);
    }
}

/// Which weights of a run folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunWeights {
    /// The best epoch (`best_model.mpk`; chosen by early stopping where the run held out data).
    Best,
    /// The latest checkpoint (`checkpoint.ews`).
    Last,
}

/// The config, dataset and chosen weights of a run folder, on any backend.
pub fn load_run<B: Backend>(
    dir: &Path,
    weights: RunWeights,
    device: &B::Device,
) -> Result<(TrainConfig, Dataset, Network<B>), TrainError> {
    let files = RunFiles {
        dir: dir.to_path_buf(),
    };
    if !files.config().is_file() {
        return Err(TrainError::Run(format!(
            "{} is not a run folder (no config.toml)",
            dir.display()
        )));
    }
    let config = TrainConfig::from_toml_file(&files.config())?;
    let dataset = load_eval_dataset(&config)?;
    let model: Network<B> = NetworkConfig::new(config.architecture()?)
        .with_num_classes(dataset.num_classes())
        .with_normalization(
            config
                .explicit_normalization()?
                .unwrap_or(dataset.normalization),
        )
        .init(device)?;
    let (path, bytes) = match weights {
        RunWeights::Best => {
            let path = files.best_model();
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            (path, bytes)
        }
        RunWeights::Last => {
            let path = files.checkpoint();
            let model = checkpoint_section(&path, "model")?;
            (path, model)
        }
    };
    let model = load_record_bytes(model, bytes, &path, device)?;
    Ok((config, dataset, model))
}

/// The trained controller of an EWS run folder (from its latest checkpoint), or `None` where
/// the run's method has no controller. `space` is the subnet space of the run's network.
pub fn load_controller<B: AutodiffBackend>(
    dir: &Path,
    config: &TrainConfig,
    space: ews_models::SubnetSpace,
    device: &B::Device,
) -> Result<Option<ews_search::Controller<B>>, TrainError> {
    let search = super::search::SubnetSearch::<B>::new(config, space, device)?;
    let Searcher::Controller(controller) = search.searcher else {
        return Ok(None);
    };
    let path = RunFiles {
        dir: dir.to_path_buf(),
    }
    .checkpoint();
    let bytes = checkpoint_section(&path, "controller")?;
    Ok(Some(controller.load_state_bytes(&bytes, &path)?))
}

/// The section `section` of the checkpoint at `path`.
fn checkpoint_section(path: &Path, section: &str) -> Result<Vec<u8>, TrainError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    unpack_sections(&bytes, path)?
        .into_iter()
        .find(|(name, _)| name == section)
        .map(|(_, data)| data)
        .ok_or_else(|| record_error(path, "checkpoint", format!("no `{section}` section")))
}

fn record_error(path: &Path, what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Model(ews_models::ModelError::Weights {
        path: path.display().to_string(),
        message: format!("{what}: {e}"),
    })
}

/// The error of an I/O failure on `path`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}
