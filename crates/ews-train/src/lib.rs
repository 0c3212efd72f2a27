//! Training and evaluation: the paper's Algorithm 1 ([`trainer::train`]) with the vanilla,
//! dropout and EWS methods, SGD and schedules, metrics, atomic checkpoints and resume.

pub mod adversarial;
pub mod analysis;
pub mod bench;
pub mod cifar_c;
pub mod config;
#[doc(hidden)]
pub mod fault;
pub mod imagenet_c;
pub mod imagenet_p;
pub mod loss;
pub mod schedule;
pub mod trainer;

pub use config::{Adversarial, Method, SearcherKind, TrainConfig};
pub use trainer::{
    NodeLink, RunFiles, Summary, TrainOptions, evaluate, load_dataset, load_eval_dataset, train,
};

/// Errors of training runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration field out of range; the message names the field.
    #[error("config error: {0}")]
    Config(String),
    /// Data could not be read.
    #[error(transparent)]
    Data(#[from] ews_data::DataError),
    /// A model, subnet or checkpoint problem.
    #[error(transparent)]
    Model(#[from] ews_models::ModelError),
    /// The run folder cannot be used as asked.
    #[error("{0}")]
    Run(String),
    /// The loss stopped being finite.
    #[error(
        "loss became {value} at epoch {epoch}, between steps {first_step} and {step}; the last checkpoint (epoch {last_good}) is kept, lower the learning rate or enable grad_clip (or on_nonfinite = skip to skip such steps)"
    )]
    NonFinite {
        /// The value (the loss summed over the steps since the last metric read).
        value: f64,
        /// Epoch (1-based).
        epoch: usize,
        /// First global step of the interval in which it happened (losses are read once per
        /// log interval).
        first_step: usize,
        /// Last global step of that interval.
        step: usize,
        /// Last completed epoch with a checkpoint.
        last_good: usize,
    },
    /// A data-parallel peer could not exchange with the others.
    #[error("peer {rank}: {message}")]
    Peers {
        /// The peer that reports it.
        rank: usize,
        /// What failed and what to do.
        message: String,
    },
    /// Another peer of the run stopped with an error, so this one stopped too.
    #[error("peer {rank} stopped because another peer failed")]
    PeerStopped {
        /// The peer that stopped.
        rank: usize,
    },
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}
