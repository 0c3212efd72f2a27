//! ImageNet-P sequences read ahead, in order, on worker threads: FFmpeg's decoding of the
//! next videos overlaps the model's forward on the current one (on a GPU the forward of 31
//! frames takes milliseconds and decoding would set the pace).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use ews_augment::Image;

use crate::{DataError, video};

/// The frames of each file, in the files' order, read by `workers` threads (file `i` by
/// worker `i % workers`, each one sequence ahead). Dropping the reader stops the workers
/// after the sequence each is reading.
pub struct SequenceReader {
    receivers: Vec<Receiver<Result<Vec<Image>, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    len: usize,
}

impl SequenceReader {
    /// Starts reading `files` with `workers` threads (at least one, at most one per file).
    pub fn new(files: &[PathBuf], workers: usize) -> Self {
        let workers = workers.clamp(1, files.len().max(1));
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(1);
            let mine: Vec<PathBuf> = files.iter().skip(w).step_by(workers).cloned().collect();
            handles.push(std::thread::spawn(move || {
                for path in mine {
                    let frames = video::read_frames(&path);
                    let failed = frames.is_err();
                    if tx.send(frames).is_err() || failed {
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
            len: files.len(),
        }
    }
}

impl Iterator for SequenceReader {
    type Item = Result<Vec<Image>, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len {
            return None;
        }
        let worker = self.next % self.receivers.len();
        self.next += 1;
        Some(self.receivers[worker].recv().unwrap_or_else(|_| {
            Err(DataError::Invalid(
                "a sequence reader thread stopped unexpectedly".into(),
            ))
        }))
    }
}

impl Drop for SequenceReader {
    fn drop(&mut self) {
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
