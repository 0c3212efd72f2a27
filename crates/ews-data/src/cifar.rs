//! CIFAR-10 and CIFAR-100, official binary version.
//!
//! CIFAR-10 records: 1 label byte + 3072 pixel bytes (R plane, G plane, B plane, 32x32 each).
//! CIFAR-100 records: coarse label byte, fine label byte, 3072 pixel bytes (fine labels used).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ews_models::Normalization;

use crate::{DataError, Dataset, ImageSource, Split, io_error};

/// Which CIFAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar {
    /// 10 classes.
    Ten,
    /// 100 classes (fine labels).
    Hundred,
}

const PIXELS: usize = 32 * 32 * 3;

/// CIFAR-10 class names in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

impl Cifar {
    /// Bytes per record.
    pub fn record_size(self) -> usize {
        match self {
            Cifar::Ten => 1 + PIXELS,
            Cifar::Hundred => 2 + PIXELS,
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred => 100,
        }
    }

    /// Dataset name.
    pub fn name(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar10",
            Cifar::Hundred => "cifar100",
        }
    }

    /// Folder the official archive extracts to.
    pub fn folder(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::Hundred => "cifar-100-binary",
        }
    }

    fn train_files(self) -> Vec<&'static str> {
        match self {
            Cifar::Ten => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Cifar::Hundred => vec!["train.bin"],
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            Cifar::Ten => "test_batch.bin",
            Cifar::Hundred => "test.bin",
        }
    }
}

/// Parses CIFAR records from `bytes` (read from `path`, named in errors) into HWC pixels and
/// labels, checking the file size and every label.
pub fn parse_records(
    kind: Cifar,
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let size = kind.record_size();
    let bad = |message: String| DataError::BadFile {
        path: path.display().to_string(),
        message,
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(size) {
        return Err(bad(format!(
            "{} bytes is not a whole number of {size}-byte {} records (truncated or not a CIFAR binary file)",
            bytes.len(),
            kind.name()
        )));
    }
    let n = bytes.len() / size;
    let mut pixels = vec![0u8; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    for (r, record) in bytes.chunks_exact(size).enumerate() {
        let label = record[size - PIXELS - 1] as u32;
        if label as usize >= kind.num_classes() {
            return Err(bad(format!(
                "record {r}: label {label} is not below {}",
                kind.num_classes()
            )));
        }
        labels.push(label);
        let planes = &record[size - PIXELS..];
        let out = &mut pixels[r * PIXELS..(r + 1) * PIXELS];
        for i in 0..1024 {
            for c in 0..3 {
                out[i * 3 + c] = planes[c * 1024 + i];
            }
        }
    }
    Ok((pixels, labels))
}

fn read_split(kind: Cifar, dir: &Path, files: &[&str]) -> Result<Split, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(io_error(&path))?;
        let (p, l) = parse_records(kind, &bytes, &path)?;
        pixels.extend_from_slice(&p);
        labels.extend_from_slice(&l);
    }
    Ok(Split {
        images: ImageSource::Memory {
            pixels: Arc::new(pixels),
            height: 32,
            width: 32,
        },
        labels: Arc::new(labels),
    })
}

/// Finds the folder holding the binary files: `DIR/<official folder>` or `DIR` itself.
pub fn locate(kind: Cifar, data_dir: &Path) -> Result<PathBuf, DataError> {
    for dir in [data_dir.join(kind.folder()), data_dir.to_path_buf()] {
        if dir.join(kind.test_file()).is_file() {
            return Ok(dir);
        }
    }
    Err(DataError::Missing {
        path: data_dir.join(kind.folder()).display().to_string(),
        hint: format!(
            "run `ews download {}` (or pass --data-dir to a folder holding {})",
            kind.name(),
            kind.test_file()
        ),
    })
}

fn class_names(kind: Cifar, dir: &Path) -> Vec<String> {
    let file = match kind {
        Cifar::Ten => "batches.meta.txt",
        Cifar::Hundred => "fine_label_names.txt",
    };
    let names: Vec<String> = std::fs::read_to_string(dir.join(file))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if names.len() == kind.num_classes() {
        names
    } else if kind == Cifar::Ten {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..100).map(|i| format!("class{i}")).collect()
    }
}

/// The test split of whichever CIFAR `data_dir` holds (CIFAR-10 is tried first).
pub fn load_test(data_dir: &Path) -> Result<(Cifar, Split), DataError> {
    for kind in [Cifar::Ten, Cifar::Hundred] {
        if let Ok(dir) = locate(kind, data_dir) {
            return Ok((kind, read_split(kind, &dir, &[kind.test_file()])?));
        }
    }
    Err(DataError::Missing {
        path: data_dir.display().to_string(),
        hint: "expected a CIFAR binary folder holding test_batch.bin (CIFAR-10) or test.bin \
               (CIFAR-100); run `ews download cifar10`"
            .into(),
    })
}

/// Loads CIFAR-10 or CIFAR-100 from `data_dir` (see [`locate`]).
pub fn load(kind: Cifar, data_dir: &Path) -> Result<Dataset, DataError> {
    let dir = locate(kind, data_dir)?;
    let train = read_split(kind, &dir, &kind.train_files())?;
    let test = read_split(kind, &dir, &[kind.test_file()])?;
    Ok(Dataset {
        name: kind.name().to_string(),
        train,
        test,
        classes: class_names(kind, &dir),
        normalization: match kind {
            Cifar::Ten => Normalization::cifar10(),
            Cifar::Hundred => Normalization::cifar100(),
        },
    })
}
