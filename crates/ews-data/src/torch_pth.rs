//! PyTorch state dicts (`torch.save(model.state_dict(), "x.pth")`) without Python: the zip
//! format of PyTorch >= 1.6 (`<name>/data.pkl` plus one stored entry per storage) and the
//! legacy format before it (five pickles in a row, then the storages), as torchvision's
//! AlexNet weights come in (`alexnet-owt-7be5be79.pth`, `alexnet-owt-4df8aa71.pth`).
//!
//! Only float32 tensors in row-major layout are read. Every size in the file is checked
//! against the bytes that are there before anything is allocated for it, and a storage
//! shorter than its tensors is an error, never zeros.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use burn::tensor::backend::Backend;
use ews_models::AlexNet;

use crate::pickle::{Value, parse_prefix};
use crate::{DataError, io_error};

/// One tensor of a state dict.
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// The legacy format's first pickle: the integer 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Reads the float32 tensors of a PyTorch state dict, by name.
///
/// # Errors
/// When the file cannot be read, is neither format, or holds a tensor that is not
/// float32, not row-major or beyond its storage; the error names the file.
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, StateTensor>, DataError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let bad = |message: String| DataError::BadFile {
        path: path.display().to_string(),
        message,
    };
    let (dict, storages) = if bytes.starts_with(b"PK\x03\x04") {
        zip_format(&bytes).map_err(bad)?
    } else if bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        legacy_format(&bytes).map_err(bad)?
    } else {
        return Err(bad(
            "not a PyTorch state dict (neither a zip archive nor the legacy format)".into(),
        ));
    };
    tensors(&dict, &storages).map_err(bad)
}

/// torchvision's AlexNet from its weight file (zip or legacy `.pth`), of the widths it has.
///
/// # Errors
/// As [`read_state_dict`], and when the tensors are not an AlexNet's.
pub fn read_alexnet<B: Backend>(path: &Path, device: &B::Device) -> Result<AlexNet<B>, DataError> {
    let tensors = read_state_dict(path)?;
    let named = tensors
        .into_iter()
        .map(|(name, t)| (name, (t.shape, t.values)))
        .collect();
    AlexNet::from_state_dict(&named, device).map_err(|message| DataError::BadFile {
        path: path.display().to_string(),
        message,
    })
}

/// The raw bytes of each storage, by key.
type Storages = BTreeMap<String, Vec<u8>>;

fn zip_format(bytes: &[u8]) -> Result<(Value, Storages), String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("zip archive: {e}"))?;
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let pickle_name = names
        .iter()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .ok_or("no <name>/data.pkl in the zip archive: not a torch.save file")?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    let mut entry = |name: &str| -> Result<Vec<u8>, String> {
        let mut file = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(out)
    };
    if names.contains(&format!("{prefix}byteorder"))
        && entry(&format!("{prefix}byteorder"))? != b"little"
    {
        return Err("big-endian storages are not supported".into());
    }
    let (dict, _) = parse_prefix(&entry(pickle_name)?)?;
    let mut storages = Storages::new();
    for name in &names {
        if let Some(key) = name.strip_prefix(&format!("{prefix}data/")) {
            storages.insert(key.to_string(), entry(name)?);
        }
    }
    Ok((dict, storages))
}

fn legacy_format(bytes: &[u8]) -> Result<(Value, Storages), String> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value, String> {
        let (value, used) =
            parse_prefix(&bytes[pos..]).map_err(|e| format!("legacy format, {what}: {e}"))?;
        pos += used;
        Ok(value)
    };
    if next("magic number")? != Value::WideInt(LEGACY_MAGIC.to_vec()) {
        return Err("legacy format: wrong magic number".into());
    }
    if next("protocol version")? != Value::Int(1001) {
        return Err("legacy format: unknown protocol version".into());
    }
    next("system information")?;
    let dict = next("state dict")?;
    let keys = match next("storage keys")? {
        Value::List(keys) => keys,
        other => return Err(format!("legacy format: storage keys {other:?}")),
    };
    let sizes = storage_sizes(&dict);
    let mut storages = Storages::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("legacy format: a storage key that is not text".into());
        };
        let header = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| format!("storage {key}: the file ends before it"))?;
        let numel = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        pos += 8;
        let width = sizes.get(&key).copied().unwrap_or(4) as u64;
        let len = numel
            .checked_mul(width)
            .filter(|&n| n <= (bytes.len() - pos) as u64)
            .ok_or_else(|| format!("storage {key}: {numel} elements, beyond the end of the file"))?
            as usize;
        storages.insert(key, bytes[pos..pos + len].to_vec());
        pos += len;
    }
    Ok((dict, storages))
}

/// Bytes per element of every storage the state dict names (legacy files store element
/// counts, not byte counts).
fn storage_sizes(dict: &Value) -> BTreeMap<String, usize> {
    let Value::Dict(items) = dict else {
        return BTreeMap::new();
    };
    items
        .iter()
        .filter_map(|(_, v)| storage_of(v).ok())
        .map(|(key, dtype, _)| (key, element_size(&dtype)))
        .collect()
}

fn element_size(storage_type: &str) -> usize {
    match storage_type {
        "DoubleStorage" | "LongStorage" => 8,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        _ => 4,
    }
}

/// The storage key, storage type name and element count of a rebuilt tensor.
fn storage_of(tensor: &Value) -> Result<(String, String, usize), String> {
    let Value::Object { callable, args, .. } = tensor else {
        return Err("not a tensor".into());
    };
    if !matches!(&**callable, Value::Global(m, n) if m == "torch._utils" && n == "_rebuild_tensor_v2")
    {
        return Err(format!("not a tensor: {callable:?}"));
    }
    let Some(Value::Persistent(id)) = args.first() else {
        return Err("a tensor without a storage".into());
    };
    match &**id {
        Value::Tuple(f) if f.len() >= 5 && f[0] == Value::Str("storage".into()) => {
            match (&f[1], &f[2], &f[4], f.get(5)) {
                (
                    Value::Global(_, kind),
                    Value::Str(key),
                    Value::Int(n),
                    None | Some(Value::None),
                ) if *n >= 0 => Ok((key.clone(), kind.clone(), *n as usize)),
                _ => Err(format!("storage id {f:?}")),
            }
        }
        other => Err(format!("storage id {other:?}")),
    }
}

fn usizes(value: Option<&Value>, what: &str) -> Result<Vec<usize>, String> {
    match value {
        Some(Value::Tuple(items)) => items
            .iter()
            .map(|v| match v {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format!("{what} entry {other:?}")),
            })
            .collect(),
        other => Err(format!("{what} {other:?}")),
    }
}

/// Every entry of the state dict as a float32 tensor.
fn tensors(dict: &Value, storages: &Storages) -> Result<BTreeMap<String, StateTensor>, String> {
    let Value::Dict(items) = dict else {
        return Err("the pickle is not a state dict".into());
    };
    let mut out = BTreeMap::new();
    for (name, value) in items {
        let Value::Str(name) = name else {
            return Err(format!("a state-dict key that is not text: {name:?}"));
        };
        out.insert(
            name.clone(),
            tensor(value, storages).map_err(|e| format!("{name}: {e}"))?,
        );
    }
    Ok(out)
}

fn tensor(value: &Value, storages: &Storages) -> Result<StateTensor, String> {
    let (key, kind, numel) = storage_of(value)?;
    if kind != "FloatStorage" {
        return Err(format!("{kind} tensors are not supported (float32 only)"));
    }
    let Value::Object { args, .. } = value else {
        unreachable!("storage_of checked the tensor")
    };
    let offset = match args.get(1) {
        Some(Value::Int(o)) if *o >= 0 => *o as usize,
        other => return Err(format!("storage offset {other:?}")),
    };
    let shape = usizes(args.get(2), "size")?;
    let stride = usizes(args.get(3), "stride")?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("size overflows")?;
    let mut expected = 1usize;
    for (d, s) in shape.iter().zip(&stride).rev() {
        if *d > 1 && *s != expected {
            return Err(format!(
                "stride {stride:?} is not row-major for size {shape:?}"
            ));
        }
        expected = expected.saturating_mul(*d);
    }
    if stride.len() != shape.len() {
        return Err(format!("stride {stride:?} for size {shape:?}"));
    }
    let data = storages
        .get(&key)
        .ok_or_else(|| format!("storage {key} is missing"))?;
    let end = offset.checked_add(count).filter(|&e| e <= numel);
    if end.is_none() || data.len() != numel.saturating_mul(4) {
        return Err(format!(
            "storage {key} has {} bytes, the tensor needs elements {offset}..{} of {numel}",
            data.len(),
            offset.saturating_add(count)
        ));
    }
    let values = data[offset * 4..(offset + count) * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok(StateTensor { shape, values })
}
