//! The marker of a corruption folder that `ews corrupt` has not finished: `generating.json`,
//! holding the settings, is written before the first file and removed after `meta.json`,
//! the last one. A killed generation leaves it behind, so evaluation refuses the folder and
//! a rerun with the same settings keeps the finished files and writes the rest.

use std::path::Path;

use ews_models::persist::{remove_stale_temporaries, write_atomically};

use crate::cifar_c::CifarCMeta;
use crate::{DataError, io_error};

/// The marker's file name.
pub const MARKER: &str = "generating.json";

/// How a generation into a folder starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing of these settings is there: write every file.
    Fresh,
    /// A generation of the same settings was killed or had finished: keep its complete files.
    KeepFinishedFiles,
}

fn read_meta(path: &Path) -> Result<CifarCMeta, DataError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| DataError::BadFile {
        path: path.display().to_string(),
        message: format!("not written by `ews corrupt`: {e}"),
    })
}

/// Marks `out` as being generated with the settings of `meta` (its source, counts of
/// images and files included). Refuses a folder holding an unfinished generation of other
/// settings. A fresh start first removes `meta.json` and the job's `outputs` (files or
/// folders under `out`) that an earlier generation left, so that only files of these
/// settings are ever kept.
pub fn begin(out: &Path, meta: &CifarCMeta, outputs: &[&str]) -> Result<Start, DataError> {
    std::fs::create_dir_all(out).map_err(io_error(out))?;
    remove_temporaries_below(out)?;
    let marker = out.join(MARKER);
    if marker.is_file() {
        let saved = read_meta(&marker)?;
        if saved == *meta {
            return Ok(Start::KeepFinishedFiles);
        }
        return Err(DataError::Invalid(format!(
            "{} holds an unfinished generation of other settings ({}: {}); rerun `ews corrupt` with those settings to finish it, or choose another --out",
            out.display(),
            marker.display(),
            serde_json::to_string(&saved).expect("meta serialises")
        )));
    }
    let finished = out.join("meta.json");
    let same = finished.is_file() && read_meta(&finished).is_ok_and(|m| m == *meta);
    if !same {
        // Removed before the marker is written: a kill in between leaves neither, and the
        // rerun starts afresh again.
        for name in std::iter::once("meta.json").chain(outputs.iter().copied()) {
            let path = out.join(name);
            let removed = match path.is_dir() {
                true => std::fs::remove_dir_all(&path),
                false if path.exists() => std::fs::remove_file(&path),
                false => Ok(()),
            };
            removed.map_err(io_error(&path))?;
        }
    }
    write_atomically(
        &marker,
        &serde_json::to_vec_pretty(meta).expect("meta serialises"),
    )
    .map_err(io_error(&marker))?;
    Ok(match same {
        true => Start::KeepFinishedFiles,
        false => Start::Fresh,
    })
}

/// Removes the temporaries that killed writers left in `dir` and every folder below it.
fn remove_temporaries_below(dir: &Path) -> Result<(), DataError> {
    remove_stale_temporaries(dir).map_err(io_error(dir))?;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.is_dir() {
            remove_temporaries_below(&path)?;
        }
    }
    Ok(())
}

/// Writes `meta.json` and removes the marker: the folder is complete.
pub fn finish(out: &Path, meta: &CifarCMeta) -> Result<(), DataError> {
    let path = out.join("meta.json");
    let text = serde_json::to_vec_pretty(meta).expect("meta serialises");
    write_atomically(&path, &text).map_err(io_error(&path))?;
    let marker = out.join(MARKER);
    std::fs::remove_file(&marker).map_err(io_error(&marker))
}

/// Refuses a folder whose generation has not finished.
pub fn check_finished(dir: &Path) -> Result<(), DataError> {
    let marker = dir.join(MARKER);
    if marker.is_file() {
        return Err(DataError::BadFile {
            path: dir.display().to_string(),
            message: format!(
                "its generation has not finished ({MARKER} is there: `ews corrupt` was stopped or is still running); rerun the same `ews corrupt` command to finish it"
            ),
        });
    }
    Ok(())
}
