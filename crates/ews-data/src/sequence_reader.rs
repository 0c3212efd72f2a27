//! ImageNet-P sequences read ahead, in order, on worker threads: FFmpeg's decoding of the
//! next videos overlaps the model's forward on the current one (on a GPU the forward of 31
//! frames takes milliseconds and decoding would set the pace).

use std::path::PathBuf;

use ews_augment::Image;

use crate::in_order::InOrder;
use crate::video;

/// The frames of each file, in the files' order, read by `workers` threads (file `i` by
/// worker `i % workers`, each one sequence ahead). Dropping the reader stops the workers
/// after the sequence each is reading.
pub type SequenceReader = InOrder<Vec<Image>>;

/// Starts reading `files` with `workers` threads (at least one, at most one per file).
pub fn read_ahead(files: &[PathBuf], workers: usize) -> SequenceReader {
    InOrder::new(files.to_vec(), workers, 1, |path: PathBuf| {
        video::read_frames(&path)
    })
}
