//! Jobs done on worker threads and handed out in the jobs' order: the batch loader and the
//! ImageNet-P sequence reader prepare their next items this way while the device computes.

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use crate::DataError;

/// The results of a list of jobs, in order: job `j` is done by worker `j % workers`, each
/// worker at most `ahead` results ahead of the consumer. Dropping it stops the workers after
/// the job each is doing.
pub struct InOrder<T> {
    receivers: Vec<Receiver<Result<T, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    len: usize,
}

impl<T: Send + 'static> InOrder<T> {
    /// Starts `workers` threads (at least one, at most one per job) doing `work` on `jobs`.
    pub fn new<J, W>(jobs: Vec<J>, workers: usize, ahead: usize, work: W) -> Self
    where
        J: Send + 'static,
        W: Fn(J) -> Result<T, DataError> + Clone + Send + 'static,
    {
        let len = jobs.len();
        let workers = workers.clamp(1, len.max(1));
        let mut shares: Vec<Vec<J>> = (0..workers).map(|_| Vec::new()).collect();
        for (j, job) in jobs.into_iter().enumerate() {
            shares[j % workers].push(job);
        }
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for share in shares {
            let (tx, rx) = sync_channel(ahead.max(1));
            let work = work.clone();
            handles.push(std::thread::spawn(move || {
                for job in share {
                    if tx.send(work(job)).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        Self {
            receivers,
            handles,
            next: 0,
            len,
        }
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no jobs.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T> Iterator for InOrder<T> {
    type Item = Result<T, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len {
            return None;
        }
        let worker = self.next % self.receivers.len();
        self.next += 1;
        Some(self.receivers[worker].recv().unwrap_or_else(|_| {
            Err(DataError::Invalid(
                "a worker thread stopped unexpectedly".into(),
            ))
        }))
    }
}

impl<T> Drop for InOrder<T> {
    fn drop(&mut self) {
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
