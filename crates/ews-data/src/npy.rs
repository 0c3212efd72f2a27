//! NumPy `.npy` files (format versions 1-3, C order) of the integer types the CIFAR-C layout
//! uses: uint8 images `(n, h, w, 3)` and uint8 or int64 labels `(n,)`.

use std::io::Read;
use std::path::Path;

use crate::{DataError, io_error};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The element type of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `|u1`
    U8,
    /// `<i8`
    I64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::I64 => 8,
        }
    }
}

/// An array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Element type as stored.
    pub dtype: Dtype,
    /// Shape, C order.
    pub shape: Vec<usize>,
    /// Raw little-endian element bytes.
    pub data: Vec<u8>,
}

impl NpyArray {
    /// The elements as i64 (any stored integer type).
    pub fn to_i64(&self) -> Vec<i64> {
        match self.dtype {
            Dtype::U8 => self.data.iter().map(|&v| v as i64).collect(),
            Dtype::I64 => self
                .data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> DataError {
    DataError::BadFile {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The value of `key` in a NumPy header dict (`{'descr': '|u1', 'shape': (3, 4), ...}`).
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        quoted.find('\'')? + 2
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Reads a `.npy` file; errors name the file and what is wrong (magic, version, dtype,
/// Fortran order, shape, size).
pub fn read(path: &Path) -> Result<NpyArray, DataError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad(path, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "header is not text"))?;
    let descr = header_value(header, "descr").ok_or_else(|| bad(path, "no descr in header"))?;
    let dtype = match descr.trim_matches('\'') {
        "|u1" | "<u1" | "u1" | "|b1" => Dtype::U8,
        "<i8" => Dtype::I64,
        other => {
            return Err(bad(
                path,
                format!("dtype {other} (expected uint8, or int64 for labels)"),
            ));
        }
    };
    if header_value(header, "fortran_order") != Some("False") {
        return Err(bad(path, "Fortran-ordered arrays are not supported"));
    }
    let shape_text =
        header_value(header, "shape").ok_or_else(|| bad(path, "no shape in header"))?;
    let shape = shape_text
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(path, format!("bad shape {shape_text}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = bytes.split_off(start + header_len);
    let needed = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(path, format!("shape {shape:?} is larger than any file")))?;
    if data.len() != needed {
        return Err(bad(
            path,
            format!(
                "shape {shape:?} needs {needed} bytes of data, the file has {} (truncated or wrong size)",
                data.len()
            ),
        ));
    }
    Ok(NpyArray { dtype, shape, data })
}

/// The bytes of a version-1.0 `.npy` file of uint8 values with `shape` (header padded to a
/// multiple of 64 bytes, as NumPy writes it).
pub fn encode_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape and data disagree"
    );
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}
