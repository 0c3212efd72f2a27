//! Frame sequences of ImageNet-P: the official H.264 `.mp4` files, decoded by the FFmpeg
//! command-line tool, or lossless `.npy` arrays (uint8, frames x height x width x 3) such as
//! `ews corrupt --imagenet-p` writes.
//!
//! The official videos were encoded by libx264 from RGB frames, which makes them High 4:4:4
//! H.264: no pure-Rust decoder reads that, so decoding goes through the `ffmpeg` program
//! that users of video data have (`EWS_FFMPEG` names another binary, e.g. the one
//! `pip install imageio-ffmpeg` ships).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ews_augment::Image;

use crate::{DataError, npy};

/// The environment variable naming the FFmpeg binary (default: `ffmpeg` on the `PATH`).
pub const FFMPEG_VARIABLE: &str = "EWS_FFMPEG";

/// The FFmpeg binary that decodes videos.
pub fn ffmpeg_program() -> PathBuf {
    std::env::var_os(FFMPEG_VARIABLE).map_or_else(|| PathBuf::from("ffmpeg"), PathBuf::from)
}

/// The frames of the sequence at `path`: a `.npy` array of uint8 frames, or a video that
/// FFmpeg decodes. Errors name the file.
pub fn read_frames(path: &Path) -> Result<Vec<Image>, DataError> {
    let frames = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => npy_frames(path)?,
        _ => decode_video(path)?,
    };
    if frames.is_empty() {
        return Err(bad(path, "holds no frames".into()));
    }
    Ok(frames)
}

fn bad(path: &Path, message: String) -> DataError {
    DataError::BadFile {
        path: path.display().to_string(),
        message,
    }
}

fn npy_frames(path: &Path) -> Result<Vec<Image>, DataError> {
    let array = npy::read(path)?;
    let [n, h, w, 3] = array.shape[..] else {
        return Err(bad(
            path,
            format!(
                "frames must be uint8 frames x height x width x 3, found shape {:?}",
                array.shape
            ),
        ));
    };
    if array.dtype != npy::Dtype::U8 {
        return Err(bad(
            path,
            format!("frames must be uint8, found {:?}", array.dtype),
        ));
    }
    if h == 0 || w == 0 {
        return Err(bad(path, format!("frames of {h}x{w} pixels")));
    }
    let size = h * w * 3;
    Ok((0..n)
        .map(|i| Image::new(h, w, array.data[i * size..(i + 1) * size].to_vec()))
        .collect())
}

/// Decodes every frame of a video with [`ffmpeg_program`].
pub fn decode_video(path: &Path) -> Result<Vec<Image>, DataError> {
    decode_video_with(&ffmpeg_program(), path)
}

/// Decodes every frame of a video with the FFmpeg binary `program` (as RGB, through a stream
/// of PPM images).
pub fn decode_video_with(program: &Path, path: &Path) -> Result<Vec<Image>, DataError> {
    let child = Command::new(program)
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        // One output image per decoded frame, none duplicated or dropped for a frame rate.
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "image2pipe",
            "-vcodec",
            "ppm",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = child.map_err(|e| {
        bad(
            path,
            format!(
                "cannot run `{}` to decode it ({e}): install FFmpeg (apt-get install ffmpeg, \
                 conda install ffmpeg, or pip install imageio-ffmpeg and set {FFMPEG_VARIABLE} \
                 to its binary), or give the frames as .npy files",
                program.display()
            ),
        )
    })?;
    // Reads stdout and stderr together: a full stderr pipe cannot stall the decoder.
    let output = child.wait_with_output().map_err(crate::io_error(path))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(bad(
            path,
            format!(
                "{} could not decode it: {}",
                program.display(),
                stderr.trim()
            ),
        ));
    }
    parse_ppm_stream(&output.stdout).map_err(|message| bad(path, message))
}

/// Splits a stream of binary PPM images (`P6 width height 255`, one whitespace, RGB bytes).
pub fn parse_ppm_stream(mut bytes: &[u8]) -> Result<Vec<Image>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let mut fields = Vec::with_capacity(4);
        let mut at = 0;
        while fields.len() < 4 {
            while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            let start = at;
            while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            if start == at {
                return Err(format!("frame {}: truncated PPM header", frames.len()));
            }
            fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
        }
        let number = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("bad PPM field `{s}`"))
        };
        let (w, h, max) = (
            number(&fields[1])?,
            number(&fields[2])?,
            number(&fields[3])?,
        );
        if fields[0] != "P6" || max != 255 {
            return Err(format!(
                "frame {}: expected an 8-bit P6 image, found {} with maximum {max}",
                frames.len(),
                fields[0]
            ));
        }
        let data = bytes.get(at + 1..).unwrap_or_default();
        let size = match w.checked_mul(h).and_then(|p| p.checked_mul(3)) {
            Some(size) if size > 0 => size,
            _ => return Err(format!("frame {}: {w}x{h} pixels", frames.len())),
        };
        if data.len() < size {
            return Err(format!("frame {}: truncated pixels", frames.len()));
        }
        frames.push(Image::new(h, w, data[..size].to_vec()));
        bytes = &data[size..];
    }
    Ok(frames)
}
