//! ImageNet-style image folders: `ROOT/train/<class>/<image>` and `ROOT/val/<class>/<image>`
//! (or `ROOT/test/...`), classes sorted by name as torchvision's `ImageFolder`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ews_augment::Image;
use ews_models::Normalization;

use crate::{DataError, Dataset, ImageSource, Split, io_error};

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "JPEG", "PNG"];

/// The most memory one decoded image may take (an RGBA image of 8192 x 8192): far above
/// any photo of ImageNet, and a decompression bomb's header cannot make us allocate more.
pub const MAX_DECODED_BYTES: u64 = 256 << 20;

/// A window of an image: `(top, left, height, width)` in pixels.
pub type Window = (usize, usize, usize, usize);

/// Whether `path` names a JPEG file (by its extension, as `image::open` decides).
pub fn is_jpeg(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

/// Decodes an image file to RGB (the format from its extension, as `image::open` does);
/// images that would take more than [`MAX_DECODED_BYTES`] are refused before decoding.
/// With the `libjpeg-turbo` feature JPEG files are decoded by libjpeg-turbo (Pillow's
/// pixels), CMYK ones excepted.
pub fn decode(path: &Path) -> Result<Image, DataError> {
    #[cfg(feature = "libjpeg-turbo")]
    if is_jpeg(path)
        && let Some(jpeg) = crate::libjpeg::Jpeg::open(path)?
    {
        return jpeg.decode();
    }
    decode_with_image_crate(path)
}

/// The window that `pick` chooses from an image file's (height, width): an image holding
/// it and the window's place in that image. With the `libjpeg-turbo` feature a JPEG file
/// is decoded only around the window (the same pixels as a full decode); otherwise the
/// whole image is decoded and returned.
pub fn decode_window(
    path: &Path,
    pick: impl FnOnce(usize, usize) -> Window,
) -> Result<(Image, Window), DataError> {
    #[cfg(feature = "libjpeg-turbo")]
    if is_jpeg(path)
        && let Some(jpeg) = crate::libjpeg::Jpeg::open(path)?
    {
        let window = pick(jpeg.height, jpeg.width);
        return Ok((jpeg.decode_window(window)?, (0, 0, window.2, window.3)));
    }
    let image = decode_with_image_crate(path)?;
    let window = pick(image.height, image.width);
    Ok((image, window))
}

/// [`decode`] by the image crate (zune-jpeg for JPEG files).
pub fn decode_with_image_crate(path: &Path) -> Result<Image, DataError> {
    let bad = |e: image::ImageError| DataError::BadFile {
        path: path.display().to_string(),
        message: format!("cannot decode image: {e}"),
    };
    let mut reader = image::ImageReader::open(path).map_err(io_error(path))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(bad)?;
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Image::new(h as usize, w as usize, rgb.into_raw()))
}

/// The sizes (height, width) of up to `count` images of `split`, spread evenly over it,
/// read from their headers without decoding; errors name the file.
pub fn sample_sizes(split: &Split, count: usize) -> Result<Vec<(usize, usize)>, DataError> {
    let n = split.len();
    let picks = count.clamp(1, n.max(1));
    let mut sizes = Vec::with_capacity(picks);
    for k in 0..picks {
        let i = k * n / picks;
        let size = match &split.images {
            ImageSource::Memory { height, width, .. } => (*height, *width),
            ImageSource::Files(paths) => {
                let (w, h) =
                    image::image_dimensions(&paths[i]).map_err(|e| DataError::BadFile {
                        path: paths[i].display().to_string(),
                        message: format!("cannot read the image size: {e}"),
                    })?;
                (h as usize, w as usize)
            }
        };
        sizes.push(size);
    }
    Ok(sizes)
}

/// The entries of `dir`, sorted by path.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// The images of `dir/<class>/` for each of `classes` (label = index in `classes`).
pub fn read_split(dir: &Path, classes: &[String]) -> Result<Split, DataError> {
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        for path in sorted_entries(&class_dir)? {
            let ext_ok = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
            if ext_ok && path.is_file() {
                paths.push(path);
                labels.push(label as u32);
            }
        }
    }
    if paths.is_empty() {
        return Err(DataError::Missing {
            path: dir.display().to_string(),
            hint: "no .jpg/.jpeg/.png images in <class> subfolders".into(),
        });
    }
    Ok(Split {
        images: ImageSource::Files(Arc::new(paths)),
        labels: Arc::new(labels),
    })
}

/// The sorted names of the subfolders of `dir`.
pub fn class_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect())
}

/// Adds the images of each `DIR/<class>/<image>` in `folders` to the training split, with
/// the dataset's class indices: a union as PyTorch's `ConcatDataset` of `ImageFolder`s
/// (ImageNet + the DeepAugment `EDSR` and `CAE` copies). Every folder must hold exactly the
/// dataset's class folders, or its labels would silently mean other classes. Returns the
/// number of images each folder added.
pub fn add_train_folders(
    dataset: &mut Dataset,
    folders: &[PathBuf],
) -> Result<Vec<usize>, DataError> {
    if folders.is_empty() {
        return Ok(Vec::new());
    }
    let ImageSource::Files(paths) = &dataset.train.images else {
        return Err(DataError::Invalid(format!(
            "{}: extra training folders need an image-folder dataset (folder:ROOT)",
            dataset.name
        )));
    };
    let mut paths = paths.as_ref().clone();
    let mut labels = dataset.train.labels.as_ref().clone();
    let mut added = Vec::with_capacity(folders.len());
    for dir in folders {
        if !dir.is_dir() {
            return Err(DataError::Missing {
                path: dir.display().to_string(),
                hint: "an extra training folder is DIR/<class>/<image>, with the class folders of ROOT/train".into(),
            });
        }
        check_same_classes(dir, &class_folders(dir)?, &dataset.classes)?;
        let split = read_split(dir, &dataset.classes)?;
        let ImageSource::Files(extra) = &split.images else {
            unreachable!("read_split lists files")
        };
        added.push(extra.len());
        paths.extend(extra.iter().cloned());
        labels.extend(split.labels.iter());
    }
    dataset.train = Split {
        images: ImageSource::Files(Arc::new(paths)),
        labels: Arc::new(labels),
    };
    Ok(added)
}

/// An error naming the first class folders `dir` lacks or has beyond `classes`.
fn check_same_classes(dir: &Path, found: &[String], classes: &[String]) -> Result<(), DataError> {
    if found == classes {
        return Ok(());
    }
    let first = |list: &[String], without: &[String]| {
        let names: Vec<&str> = list
            .iter()
            .filter(|c| !without.contains(c))
            .take(3)
            .map(String::as_str)
            .collect();
        names.join(", ")
    };
    let missing = first(classes, found);
    let unexpected = first(found, classes);
    let mut message = format!(
        "has {} class folders where the dataset has {}",
        found.len(),
        classes.len()
    );
    if !missing.is_empty() {
        message.push_str(&format!("; missing: {missing}"));
    }
    if !unexpected.is_empty() {
        message.push_str(&format!("; not in ROOT/train: {unexpected}"));
    }
    if found.iter().any(|c| c == "train") {
        message.push_str("; point at its train/ folder instead");
    }
    Err(DataError::BadFile {
        path: dir.display().to_string(),
        message: format!("{message} (class folders must match ROOT/train's exactly)"),
    })
}

/// Loads `ROOT/train` and the first of `ROOT/val`, `ROOT/test`. Classes are the sorted
/// subfolder names of `ROOT/train`; the evaluation split uses the same label indices.
pub fn load(root: &Path) -> Result<Dataset, DataError> {
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::Missing {
            path: train_dir.display().to_string(),
            hint: "an image folder needs ROOT/train/<class>/<image> and ROOT/val (or test)/<class>/<image>".into(),
        });
    }
    let classes = class_folders(&train_dir)?;
    if classes.len() < 2 {
        return Err(DataError::Invalid(format!(
            "{}: found {} class folders, need at least 2",
            train_dir.display(),
            classes.len()
        )));
    }
    let eval_dir = ["val", "test"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .ok_or_else(|| DataError::Missing {
            path: root.join("val").display().to_string(),
            hint: "an image folder needs ROOT/val/<class>/... or ROOT/test/<class>/...".into(),
        })?;
    Ok(Dataset {
        name: format!("folder:{}", root.display()),
        train: read_split(&train_dir, &classes)?,
        test: read_split(&eval_dir, &classes)?,
        classes,
        normalization: Normalization::imagenet(),
    })
}
