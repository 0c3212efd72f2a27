//! JPEG decoding with the system's libjpeg-turbo (cargo feature `libjpeg-turbo`): the
//! library and settings Pillow decodes with, so the pixels equal torchvision's `pil_loader`,
//! and a window of the image can be decoded without the rest (`csrc/jpeg_window.c`), which
//! RandomResizedCrop uses: it needs only the crop.

use std::ffi::{CStr, c_char, c_int, c_uint, c_ulong};
use std::path::Path;

use ews_augment::Image;

use crate::folder::{MAX_DECODED_BYTES, Window};
use crate::{DataError, io_error};

unsafe extern "C" {
    fn ews_jpeg_info(
        data: *const u8,
        len: c_ulong,
        width: *mut c_uint,
        height: *mut c_uint,
        rgb_capable: *mut c_int,
        message: *mut c_char,
        message_len: usize,
    ) -> c_int;
    fn ews_jpeg_decode_window(
        data: *const u8,
        len: c_ulong,
        top: c_uint,
        left: c_uint,
        height: c_uint,
        width: c_uint,
        out: *mut u8,
        message: *mut c_char,
        message_len: usize,
    ) -> c_int;
}

/// A JPEG file in memory whose header has been read.
pub struct Jpeg<'a> {
    path: &'a Path,
    bytes: Vec<u8>,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

fn message_text(buffer: &[c_char]) -> String {
    // SAFETY: the C side always writes a NUL-terminated string (snprintf) into the buffer,
    // which starts zeroed.
    unsafe { CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl<'a> Jpeg<'a> {
    /// Reads `path` and its JPEG header. `Ok(None)` where libjpeg cannot give RGB (CMYK and
    /// YCCK files): decode those another way.
    pub fn open(path: &'a Path) -> Result<Option<Self>, DataError> {
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        let (mut width, mut height, mut rgb_capable) = (0, 0, 0);
        let mut message = [0 as c_char; 256];
        // SAFETY: `bytes` outlives the call; the out-pointers and the message buffer are
        // valid for the sizes given.
        let status = unsafe {
            ews_jpeg_info(
                bytes.as_ptr(),
                bytes.len() as c_ulong,
                &mut width,
                &mut height,
                &mut rgb_capable,
                message.as_mut_ptr(),
                message.len(),
            )
        };
        if status != 0 {
            return Err(bad_jpeg(path, &message));
        }
        let (height, width) = (height as usize, width as usize);
        if height as u64 * width as u64 * 3 > MAX_DECODED_BYTES {
            return Err(DataError::BadFile {
                path: path.display().to_string(),
                message: format!(
                    "a {width}x{height} image would take more than {MAX_DECODED_BYTES} bytes"
                ),
            });
        }
        Ok((rgb_capable != 0).then_some(Self {
            path,
            bytes,
            height,
            width,
        }))
    }

    /// The pixels of `window`, exactly as in the full image's decode.
    pub fn decode_window(&self, (top, left, height, width): Window) -> Result<Image, DataError> {
        assert!(
            top + height <= self.height && left + width <= self.width,
            "window outside the image"
        );
        let mut pixels = vec![0u8; height * width * 3];
        let mut message = [0 as c_char; 256];
        // SAFETY: `pixels` holds height * width * 3 bytes, the window lies inside the image
        // (checked above and again in C), and the message buffer is valid for its length.
        let status = unsafe {
            ews_jpeg_decode_window(
                self.bytes.as_ptr(),
                self.bytes.len() as c_ulong,
                top as c_uint,
                left as c_uint,
                height as c_uint,
                width as c_uint,
                pixels.as_mut_ptr(),
                message.as_mut_ptr(),
                message.len(),
            )
        };
        if status != 0 {
            return Err(bad_jpeg(self.path, &message));
        }
        Ok(Image::new(height, width, pixels))
    }

    /// The whole image.
    pub fn decode(&self) -> Result<Image, DataError> {
        self.decode_window((0, 0, self.height, self.width))
    }
}

fn bad_jpeg(path: &Path, message: &[c_char]) -> DataError {
    DataError::BadFile {
        path: path.display().to_string(),
        message: format!(
            "cannot decode JPEG (libjpeg-turbo): {}",
            message_text(message)
        ),
    }
}
