//! Reading the 500K pseudo-labelled TinyImages file of Carmon et al. (2019),
//! `ti_500K_pseudo_labeled.pickle`, without Python: a small pickle machine (protocols 2 to
//! 5) that understands dicts, tuples, lists, strings, numbers and NumPy arrays
//! (`_reconstruct` + BUILD, and protocol 5's `_frombuffer`), and the persistent ids and
//! OrderedDicts of PyTorch's state dicts (read by [`crate::torch_pth`]).
//!
//! The file is a dict with `data` (uint8, N x 32 x 32 x 3) and `extrapolated_targets`
//! (integer labels, N).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::{DataError, ImageSource, Split};

/// A value on the pickle machine's stack.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// Raw bytes (bytes, bytearray, Python 2 strings).
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A global reference `module.name`.
    Global(String, String),
    /// The result of calling `callable(*args)`, with the state BUILD gave it.
    Object {
        /// What was called.
        callable: Box<Value>,
        /// Its arguments.
        args: Vec<Value>,
        /// The BUILD state, if any.
        state: Option<Box<Value>>,
    },
    /// A NumPy array.
    Array(NdArray),
    /// A persistent id (`BINPERSID`): how PyTorch's pickles point at tensor storages.
    Persistent(Box<Value>),
    /// An integer too wide for 64 bits, as its little-endian two's-complement bytes.
    WideInt(Vec<u8>),
}

/// A NumPy array read from a pickle.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    /// Its shape.
    pub shape: Vec<usize>,
    /// NumPy type string without byte order, e.g. `u1`, `i8`.
    pub dtype: String,
    /// Little-endian data (C order).
    pub data: Vec<u8>,
}

impl NdArray {
    /// The values as integers (any integer dtype, little endian).
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let width = match self.dtype.as_str() {
            "u1" | "i1" | "b1" => 1,
            "u2" | "i2" => 2,
            "u4" | "i4" => 4,
            "u8" | "i8" => 8,
            other => return Err(format!("dtype {other} is not an integer type")),
        };
        let signed = self.dtype.starts_with('i');
        Ok(self
            .data
            .chunks_exact(width)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(c);
                if signed && c[width - 1] & 0x80 != 0 {
                    for v in b.iter_mut().skip(width) {
                        *v = 0xFF;
                    }
                }
                i64::from_le_bytes(b)
            })
            .collect())
    }
}

fn numpy_module(module: &str) -> bool {
    matches!(
        module,
        "numpy.core.multiarray"
            | "numpy._core.multiarray"
            | "numpy.core.numeric"
            | "numpy._core.numeric"
            | "numpy"
    )
}

/// A dtype object to its type string (`<u1` -> `u1`), refusing big-endian data.
fn dtype_name(value: &Value) -> Result<String, String> {
    match value {
        Value::Object {
            callable,
            args,
            state,
        } if matches!(&**callable, Value::Global(m, n) if numpy_module(m) && n == "dtype") => {
            let name = match args.first() {
                Some(Value::Str(s)) => s.clone(),
                other => return Err(format!("dtype argument {other:?}")),
            };
            if let Some(state) = state
                && let Value::Tuple(items) = &**state
                && let Some(Value::Str(order)) = items.get(1)
                && order == ">"
                && !name.ends_with('1')
            {
                return Err("big-endian arrays are not supported".into());
            }
            Ok(name.trim_start_matches(['<', '|', '=']).to_string())
        }
        other => Err(format!("expected a numpy dtype, found {other:?}")),
    }
}

fn shape_of(value: &Value) -> Result<Vec<usize>, String> {
    match value {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => Err(format!("shape entry {other:?}")),
            })
            .collect(),
        Value::Int(i) if *i >= 0 => Ok(vec![*i as usize]),
        other => Err(format!("shape {other:?}")),
    }
}

/// Turns finished NumPy reconstructions into [`Value::Array`].
fn finish_array(
    callable: &Value,
    args: &[Value],
    state: Option<&Value>,
) -> Result<Option<Value>, String> {
    let Value::Global(module, name) = callable else {
        return Ok(None);
    };
    if !numpy_module(module) {
        return Ok(None);
    }
    match (name.as_str(), state) {
        ("_reconstruct", Some(Value::Tuple(items))) if items.len() == 5 => {
            let shape = shape_of(&items[1])?;
            let dtype = dtype_name(&items[2])?;
            if items[3] == Value::Bool(true) && shape.len() > 1 {
                return Err("Fortran-ordered arrays are not supported".into());
            }
            let data = match &items[4] {
                Value::Bytes(b) => b.clone(),
                other => return Err(format!("array data {other:?}")),
            };
            Ok(Some(Value::Array(NdArray { shape, dtype, data })))
        }
        ("_frombuffer", _) if args.len() == 4 => {
            let data = match &args[0] {
                Value::Bytes(b) => b.clone(),
                other => return Err(format!("array buffer {other:?}")),
            };
            let order = match &args[3] {
                Value::Str(s) => s.clone(),
                _ => "C".into(),
            };
            let shape = shape_of(&args[2])?;
            if order == "F" && shape.len() > 1 {
                return Err("Fortran-ordered arrays are not supported".into());
            }
            Ok(Some(Value::Array(NdArray {
                shape,
                dtype: dtype_name(&args[1])?,
                data,
            })))
        }
        _ => Ok(None),
    }
}

/// Runs the pickle machine over `bytes` and returns the top-level value.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    parse_prefix(bytes).map(|(value, _)| value)
}

/// The value of the pickle at the start of `bytes` and the bytes it took (up to its STOP):
/// files that hold several pickles in a row (PyTorch's legacy format) are read one after
/// another.
pub fn parse_prefix(bytes: &[u8]) -> Result<(Value, usize), String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or("truncated pickle")?;
        let out = &bytes[*pos..end];
        *pos = end;
        Ok(out)
    };
    let le = |b: &[u8]| {
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let pop = |stack: &mut Vec<Value>| {
        stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    };
    let pop_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>, String> {
        let m = marks.pop().ok_or("pickle MARK missing")?;
        if m > stack.len() {
            return Err("pickle MARK beyond the stack".into());
        }
        Ok(stack.split_off(m))
    };
    loop {
        let op = take(&mut pos, 1)?[0];
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            } // PROTO
            0x95 => {
                take(&mut pos, 8)?;
            } // FRAME
            b'.' => return Ok((pop(&mut stack)?, pos)),
            b'Q' => {
                let id = pop(&mut stack)?;
                stack.push(Value::Persistent(Box::new(id)));
            }
            b'(' => marks.push(stack.len()),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(take(&mut pos, 4)?.try_into().expect("4 bytes"));
                stack.push(Value::Int(v.into()));
            }
            b'K' => stack.push(Value::Int(take(&mut pos, 1)?[0].into())),
            b'M' => stack.push(Value::Int(le(take(&mut pos, 2)?) as i64)),
            0x8a => {
                // LONG1: little-endian two's complement.
                let n = take(&mut pos, 1)?[0] as usize;
                let b = take(&mut pos, n)?;
                if n > 8 {
                    stack.push(Value::WideInt(b.to_vec()));
                    continue;
                }
                let mut v = le(b) as i64;
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8 bytes"));
                stack.push(Value::Float(v));
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => take(&mut pos, 1)?[0] as usize,
                    b'X' => le(take(&mut pos, 4)?) as usize,
                    _ => le(take(&mut pos, 8)?) as usize,
                };
                let s = std::str::from_utf8(take(&mut pos, n)?).map_err(|e| e.to_string())?;
                stack.push(Value::Str(s.to_string()));
            }
            b'C' | b'B' | 0x8e | 0x96 | b'U' | b'T' => {
                let n = match op {
                    b'C' | b'U' => take(&mut pos, 1)?[0] as usize,
                    b'B' | b'T' => le(take(&mut pos, 4)?) as usize,
                    _ => le(take(&mut pos, 8)?) as usize,
                };
                stack.push(Value::Bytes(take(&mut pos, n)?.to_vec()));
            }
            b'c' => {
                let line = |pos: &mut usize| -> Result<String, String> {
                    let rest = bytes.get(*pos..).unwrap_or_default();
                    let end = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or("GLOBAL without the end of its line (truncated)")?;
                    let s = String::from_utf8_lossy(&rest[..end]).to_string();
                    *pos += end + 1;
                    Ok(s)
                };
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            0x94 => {
                let top = stack.last().ok_or("MEMOIZE on an empty stack")?.clone();
                memo.insert(memo.len() as u64, top);
            }
            b'q' | b'r' => {
                let key = if op == b'q' {
                    take(&mut pos, 1)?[0] as u64
                } else {
                    le(take(&mut pos, 4)?)
                };
                memo.insert(key, stack.last().ok_or("PUT on an empty stack")?.clone());
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    take(&mut pos, 1)?[0] as u64
                } else {
                    le(take(&mut pos, 4)?)
                };
                stack.push(memo.get(&key).ok_or("GET of an unknown memo key")?.clone());
            }
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("pickle stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                let pairs = items
                    .chunks(2)
                    .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or(Value::None)))
                    .collect();
                stack.push(Value::Dict(pairs));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack, &mut marks)?
                };
                match stack.last_mut() {
                    Some(Value::List(list)) => list.extend(items),
                    _ => return Err("APPEND to a non-list".into()),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack, &mut marks)?
                };
                match stack.last_mut() {
                    Some(Value::Dict(d)) => {
                        for p in items.chunks(2) {
                            d.push((p[0].clone(), p.get(1).cloned().unwrap_or(Value::None)));
                        }
                    }
                    _ => return Err("SETITEM on a non-dict".into()),
                }
            }
            b'R' => {
                let args = match pop(&mut stack)? {
                    Value::Tuple(a) => a,
                    other => return Err(format!("REDUCE arguments {other:?}")),
                };
                let callable = pop(&mut stack)?;
                // Python 3 writes bytes for protocol 2 as _codecs.encode(latin-1 text).
                if matches!(&callable, Value::Global(m, n) if m == "_codecs" && n == "encode") {
                    match args.first() {
                        Some(Value::Str(s)) => {
                            stack.push(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()));
                            continue;
                        }
                        _ => return Err("_codecs.encode without text".into()),
                    }
                }
                // An empty OrderedDict (PyTorch's state dicts) is a dict.
                if matches!(&callable, Value::Global(m, n) if m == "collections" && n == "OrderedDict")
                    && args.is_empty()
                {
                    stack.push(Value::Dict(Vec::new()));
                    continue;
                }
                if matches!(&callable, Value::Global(m, n) if m == "builtins" && n == "bytearray") {
                    stack.push(match args.first() {
                        Some(Value::Bytes(b)) => Value::Bytes(b.clone()),
                        _ => Value::Bytes(Vec::new()),
                    });
                    continue;
                }
                let value = match finish_array(&callable, &args, None)? {
                    Some(array) => array,
                    None => Value::Object {
                        callable: Box::new(callable),
                        args,
                        state: None,
                    },
                };
                stack.push(value);
            }
            b'b' => {
                let state = pop(&mut stack)?;
                let target = pop(&mut stack)?;
                let built = match target {
                    Value::Object { callable, args, .. } => {
                        match finish_array(&callable, &args, Some(&state))? {
                            Some(array) => array,
                            None => Value::Object {
                                callable,
                                args,
                                state: Some(Box::new(state)),
                            },
                        }
                    }
                    other => other,
                };
                stack.push(built);
            }
            0x97 | 0x98 => return Err("out-of-band pickle buffers are not supported".into()),
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    pos - 1
                ));
            }
        }
    }
}

/// Reads the pseudo-labelled TinyImages pickle into a split (labels must be below
/// `num_classes`).
pub fn load_pseudo_labeled(path: &Path, num_classes: usize) -> Result<Split, DataError> {
    let bad = |message: String| DataError::BadFile {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(crate::io_error(path))?;
    let value = parse(&bytes).map_err(bad)?;
    let Value::Dict(entries) = value else {
        return Err(bad(
            "expected a dict with `data` and `extrapolated_targets`".into(),
        ));
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    };
    let data = match get("data") {
        Some(Value::Array(a)) => a,
        _ => return Err(bad("no `data` array".into())),
    };
    let targets = match get("extrapolated_targets").or_else(|| get("targets")) {
        Some(Value::Array(a)) => a.to_i64().map_err(bad)?,
        Some(Value::List(items)) => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                other => Err(bad(format!("label {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("no `extrapolated_targets`".into())),
    };
    if data.dtype != "u1" || data.shape.len() != 4 || data.shape[3] != 3 {
        return Err(bad(format!(
            "`data` must be uint8 N x H x W x 3, got {} {:?}",
            data.dtype, data.shape
        )));
    }
    let [n, height, width, _] = [data.shape[0], data.shape[1], data.shape[2], 3];
    if data.data.len() != n * height * width * 3 {
        return Err(bad(format!(
            "`data` holds {} bytes, its shape {:?} needs {}",
            data.data.len(),
            data.shape,
            n * height * width * 3
        )));
    }
    if targets.len() != n {
        return Err(bad(format!("{} labels for {n} images", targets.len())));
    }
    let labels = targets
        .iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < num_classes)
                .ok_or_else(|| bad(format!("label {t} outside 0..{num_classes}")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(Split {
        images: ImageSource::Memory {
            pixels: Arc::new(data.data.clone()),
            height,
            width,
        },
        labels: Arc::new(labels),
    })
}
