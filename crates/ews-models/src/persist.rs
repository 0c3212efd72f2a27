//! Saving and loading weights: burn checkpoints, and safetensors with PyTorch names.
//!
//! PyTorch names follow the reference implementations: Rice et al.'s PreAct ResNet
//! (`conv1`, `layer1.0.bn1`, `layer2.0.shortcut.0`, `bn`, `linear`), torchvision's ResNet
//! (`conv1`, `bn1`, `layer1.0.downsample.0`, `fc`) and the TRADES/AWP WideResNet
//! (`conv1`, `block1.layer.0.convShortcut`, `bn1`, `fc`). BN buffers `running_mean`,
//! `running_var` and `num_batches_tracked` are included, so a PyTorch model of the same
//! layout loads the file with `load_state_dict(strict=True)`.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Once;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::ModelError;
use crate::arch::Architecture;
use crate::network::Network;

/// Names of batch-norm buffers: stored with the weights but not trainable parameters.
pub const BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// One float tensor of a module with its burn path and the type of its owning module.
struct Entry {
    path: Vec<String>,
    owner: String,
    shape: Vec<usize>,
}

/// Collects the float tensors of a module with their paths (enum variants left out).
struct PathVisitor<F> {
    stack: Vec<(String, String)>,
    on_tensor: F,
}

/// The entry of a tensor of `shape` under a visitor's path stack of (name, container type).
fn entry_at(stack: &[(String, String)], shape: Vec<usize>) -> Entry {
    let path = stack
        .iter()
        .filter(|(_, kind)| !kind.starts_with("Enum:"))
        .map(|(name, _)| name.clone())
        .collect();
    // Each entry carries the type of the struct that holds the field it names.
    let owner = stack
        .last()
        .map(|(_, kind)| kind.clone())
        .unwrap_or_default();
    Entry { path, owner, shape }
}

impl<B: Backend, F: FnMut(Entry, &Tensor<B, 1>)> ModuleVisitor<B> for PathVisitor<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let flat = tensor.reshape([-1]);
        let entry = entry_at(&self.stack, shape);
        (self.on_tensor)(entry, &flat);
    }
}

/// Visits every float tensor's path and shape without reading its values (a lazily
/// initialised parameter stays uninitialised).
struct ShapeVisitor<F> {
    stack: Vec<(String, String)>,
    on_shape: F,
}

impl<B: Backend, F: FnMut(Entry)> ModuleVisitor<B> for ShapeVisitor<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let shape = param.lazy_shape().to_vec();
        (self.on_shape)(entry_at(&self.stack, shape));
    }
}

fn is_buffer(path: &[String]) -> bool {
    path.last()
        .is_some_and(|n| BUFFER_NAMES.contains(&n.as_str()))
}

/// Number of trainable parameters (BN running statistics excluded), like PyTorch's
/// `sum(p.numel() for p in model.parameters())`.
/// Parameters initialised lazily are counted without being drawn, so counting a large
/// network takes no memory for its weights.
pub fn num_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    let mut count = 0;
    let mut visitor = ShapeVisitor {
        stack: Vec::new(),
        on_shape: |entry: Entry| {
            if !is_buffer(&entry.path) {
                count += entry.shape.iter().product::<usize>();
            }
        },
    };
    Module::<B>::visit(module, &mut visitor);
    count
}

/// The PyTorch name of a burn tensor path of a [`Network`] of architecture `arch`.
pub fn pytorch_name(arch: &Architecture, path: &[String]) -> String {
    let family = Family::of(arch);
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < path.len() {
        let part = path[i].as_str();
        match (i, part) {
            (0, "stem_conv") => out.push("conv1".into()),
            (0, "stem_bn") => out.push("bn1".into()),
            (0, "head_bn") => out.push(if family == Family::Wide { "bn1" } else { "bn" }.into()),
            (0, "classifier") => out.push(
                if family == Family::PreAct {
                    "linear"
                } else {
                    "fc"
                }
                .into(),
            ),
            (0, "stages") if i + 2 < path.len() => {
                let stage: usize = path[1].parse().unwrap_or(0);
                let block = &path[2];
                if family == Family::Wide {
                    out.push(format!("block{}.layer.{block}", stage + 1));
                } else {
                    out.push(format!("layer{}.{block}", stage + 1));
                }
                i += 2;
            }
            (_, "shortcut") if i + 1 < path.len() => out.push(
                match family {
                    Family::PreAct => "shortcut.0",
                    Family::Wide => "convShortcut",
                    Family::ResNet => "downsample.0",
                }
                .into(),
            ),
            (_, "shortcut_bn") => out.push("downsample.1".into()),
            _ => out.push(part.to_string()),
        }
        i += 1;
    }
    out.join(".")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    PreAct,
    ResNet,
    Wide,
}

impl Family {
    fn of(arch: &Architecture) -> Self {
        match arch {
            Architecture::PreActResNet { .. } => Family::PreAct,
            Architecture::ResNet { .. } => Family::ResNet,
            Architecture::WideResNet { .. } => Family::Wide,
        }
    }
}

/// The transpose of a row-major `rows x cols` matrix, in tiles that stay in the cache
/// (AlexNet's 9,216 x 4,096 layer).
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 64;
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

fn is_linear_weight(entry: &Entry) -> bool {
    entry.owner == "Struct:Linear" && entry.path.last().is_some_and(|n| n == "weight")
}

/// The tensors of a network under their PyTorch names, in the PyTorch layout
/// (linear weights `[out, in]`, `num_batches_tracked` as an int64 scalar).
pub fn pytorch_state_dict<B: Backend>(
    model: &Network<B>,
) -> BTreeMap<String, (Vec<usize>, TensorData)> {
    let mut out = BTreeMap::new();
    let arch = model.arch;
    let mut visitor = PathVisitor {
        stack: Vec::new(),
        on_tensor: |entry: Entry, flat: &Tensor<B, 1>| {
            let name = pytorch_name(&arch, &entry.path);
            let mut shape = entry.shape.clone();
            let mut data = flat.to_data().convert::<f32>();
            if is_linear_weight(&entry) {
                let values = data.to_vec::<f32>().expect("f32 data");
                let (rows, cols) = (shape[0], shape[1]);
                shape = vec![cols, rows];
                data = TensorData::new(transpose(&values, rows, cols), [cols * rows]);
            }
            if entry
                .path
                .last()
                .is_some_and(|n| n == "num_batches_tracked")
            {
                let v = data.to_vec::<f32>().expect("f32 data")[0];
                shape = vec![];
                data = TensorData::new(vec![v.round() as i64], [1]);
            }
            out.insert(name, (shape, data));
        },
    };
    model.visit(&mut visitor);
    out
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder
/// (`.NAME.tmp-PID`), synced, then renamed over `path`, so a crash never leaves a
/// half-written file behind. A killed writer's temporary stays until
/// [`remove_stale_temporaries`] removes it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporaries of [`write_atomically`] (`.NAME.tmp-PID`) in `dir` whose
/// writer is gone: its process no longer runs (on Linux, no `/proc/PID`; elsewhere none is
/// removed). Writers that share a folder (the nodes of a run) keep theirs. Returns how many
/// it removed.
pub fn remove_stale_temporaries(dir: &Path) -> std::io::Result<usize> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let writer = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .map(|(_, pid)| pid)
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if let Some(pid) = writer
            && !proc.join(pid).exists()
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn weights_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Weights {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Writes the network's weights as a safetensors file with PyTorch names and layouts.
pub fn export_safetensors<B: Backend>(model: &Network<B>, path: &Path) -> Result<(), ModelError> {
    let state = pytorch_state_dict(model);
    let mut views = Vec::with_capacity(state.len());
    for (name, (shape, data)) in &state {
        let dtype = match data.dtype {
            DType::I64 => Dtype::I64,
            _ => Dtype::F32,
        };
        let view = TensorView::new(dtype, shape.clone(), data.as_bytes())
            .map_err(|e| weights_error(path, format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("architecture".to_string(), model.arch.to_string()),
        ("num_classes".to_string(), model.num_classes().to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| weights_error(path, e.to_string()))?;
    let bytes = with_sorted_header(bytes);
    write_atomically(path, &bytes).map_err(|e| weights_error(path, e.to_string()))
}

/// The safetensors file `bytes` with its JSON header's keys sorted, so that the same
/// weights always give the same bytes (the metadata is a hash map, written in an order
/// that differs from map to map). The header keeps its length (space-padded); offsets are
/// relative to the data, which does not move.
fn with_sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    else {
        return bytes;
    };
    let Some(Ok(header)) = bytes
        .get(8..8 + len)
        .map(serde_json::from_slice::<serde_json::Value>)
    else {
        return bytes;
    };
    // serde_json's maps are ordered by key.
    let text = serde_json::to_string(&header).expect("a JSON value serialises");
    if text.len() <= len {
        let padded = format!("{text:len$}");
        bytes[8..8 + len].copy_from_slice(padded.as_bytes());
    }
    bytes
}

/// Replaces every float tensor of a module by the tensor of the same PyTorch name.
struct ImportMapper<'a> {
    arch: Architecture,
    file: &'a SafeTensors<'a>,
    stack: Vec<(String, String)>,
    used: Vec<String>,
    error: Option<String>,
}

impl ImportMapper<'_> {
    fn lookup(&mut self, entry: &Entry) -> Result<Option<Vec<f32>>, String> {
        let name = pytorch_name(&self.arch, &entry.path);
        let view = match self.file.tensor(&name) {
            Ok(view) => view,
            // Older PyTorch checkpoints have no `num_batches_tracked`: keep ours.
            Err(_)
                if entry
                    .path
                    .last()
                    .is_some_and(|n| n == "num_batches_tracked") =>
            {
                return Ok(None);
            }
            Err(_) => return Err(format!("tensor `{name}` is missing")),
        };
        self.used.push(name.clone());
        let mut expected = entry.shape.clone();
        if is_linear_weight(entry) {
            expected.reverse();
        }
        let scalar = entry
            .path
            .last()
            .is_some_and(|n| n == "num_batches_tracked");
        let shape_ok = if scalar {
            view.shape().iter().product::<usize>() == 1
        } else {
            view.shape() == expected.as_slice()
        };
        if !shape_ok {
            return Err(format!(
                "tensor `{name}` has shape {:?}, the model expects {expected:?}",
                view.shape()
            ));
        }
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::I64 => DType::I64,
            other => return Err(format!("tensor `{name}` has unsupported dtype {other:?}")),
        };
        let count = view.shape().iter().product::<usize>();
        let data = TensorData::from_bytes_vec(view.data().to_vec(), [count], dtype);
        let mut values = data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("tensor `{name}`: {e:?}"))?;
        if is_linear_weight(entry) {
            // The file holds PyTorch's [out, in]; burn keeps [in, out].
            values = transpose(&values, entry.shape[1], entry.shape[0]);
        }
        Ok(Some(values))
    }
}

impl<B: Backend> ModuleMapper<B> for ImportMapper<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let entry = entry_at(&self.stack, tensor.dims().to_vec());
        let tensor = match self.lookup(&entry) {
            Ok(Some(values)) => {
                let loaded = Tensor::<B, 1>::from_data(
                    TensorData::new(values, [entry.shape.iter().product::<usize>()]),
                    &tensor.device(),
                )
                .reshape(tensor.dims());
                if tensor.is_require_grad() {
                    loaded.require_grad()
                } else {
                    loaded
                }
            }
            Ok(None) => tensor,
            Err(message) => {
                self.error = Some(message);
                tensor
            }
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Loads a safetensors file with PyTorch names (as written by [`export_safetensors`] or by
/// PyTorch's `safetensors.torch.save_file(model.state_dict())`) into `model`.
///
/// Every tensor of the model must be present with the right shape (`num_batches_tracked`
/// may be absent), and the file may hold no tensor the model lacks.
pub fn import_safetensors<B: Backend>(
    model: Network<B>,
    path: &Path,
) -> Result<Network<B>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| weights_error(path, e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| weights_error(path, format!("not a valid safetensors file: {e}")))?;
    let mut mapper = ImportMapper {
        arch: model.arch,
        file: &file,
        stack: Vec::new(),
        used: Vec::new(),
        error: None,
    };
    let model = model.map(&mut mapper);
    if let Some(message) = mapper.error {
        return Err(weights_error(path, message));
    }
    let mut unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !mapper.used.contains(&n.to_string()))
        .map(|n| n.to_string())
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(weights_error(
            path,
            format!("tensors the model does not have: {}", unexpected.join(", ")),
        ));
    }
    Ok(model)
}

/// Shapes of every float tensor of a module, by burn path.
fn tensor_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut visitor = ShapeVisitor {
        stack: Vec::new(),
        on_shape: |entry: Entry| out.push((entry.path.join("."), entry.shape)),
    };
    Module::<B>::visit(module, &mut visitor);
    out
}

/// Serialises a module's record (weights and BN statistics) with burn's named MessagePack
/// recorder at full precision.
pub fn record_bytes<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<u8>, ModelError> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(module.clone().into_record(), ())
        .map_err(|e| ModelError::Weights {
            path: "<memory>".into(),
            message: e.to_string(),
        })
}

/// Loads a record produced by [`record_bytes`] into `module`, checking that every tensor
/// keeps its shape (so a checkpoint of another architecture is rejected, not half-loaded).
/// `source` names the origin in errors.
pub fn load_record_bytes<B: Backend, M: Module<B>>(
    module: M,
    bytes: Vec<u8>,
    source: &Path,
    device: &B::Device,
) -> Result<M, ModelError> {
    let expected = tensor_shapes(&module);
    let record = decode_record(bytes, source, "checkpoint", device)?;
    let module = without_panics(|| module.load_record(record))
        .map_err(|p| weights_error(source, format!("cannot load checkpoint: {p}")))?;
    let found = tensor_shapes(&module);
    for ((name, want), (_, got)) in expected.iter().zip(&found) {
        if want != got {
            return Err(weights_error(
                source,
                format!("tensor `{name}` has shape {got:?}, the model expects {want:?}"),
            ));
        }
    }
    Ok(module)
}

/// Decodes a record serialised by burn's named MessagePack recorder (a module's, an
/// optimiser's) from `bytes`; `what` and `source` name it in errors. burn's decoder panics on
/// some malformed input (a parameter id that is not base32, say): such a panic becomes an
/// error too, and is not printed.
pub fn decode_record<B: Backend, R: Record<B>>(
    bytes: Vec<u8>,
    source: &Path,
    what: &str,
    device: &B::Device,
) -> Result<R, ModelError> {
    without_panics(|| NamedMpkBytesRecorder::<FullPrecisionSettings>::new().load(bytes, device))
        .map_err(|p| weights_error(source, format!("cannot decode {what}: {p}")))?
        .map_err(|e| weights_error(source, format!("cannot decode {what}: {e}")))
}

thread_local! {
    /// Whether this thread is inside [`without_panics`].
    static QUIET_PANICS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a third-party decoder that may panic on malformed input, and returns its panic
/// message as an error. The panic hook stays silent for such a panic on this thread (it is
/// wrapped once, the first time).
pub fn without_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static WRAP_HOOK: Once = Once::new();
    WRAP_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(Cell::get) {
                previous(info)
            }
        }));
    });
    let was_quiet = QUIET_PANICS.with(|q| q.replace(true));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(was_quiet));
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        format!(
            "the decoder failed: {}",
            message.as_deref().unwrap_or("(no message)")
        )
    })
}

/// Saves a network's weights and BN statistics to `path` (burn's recorder format), atomically.
pub fn save_weights<B: Backend>(model: &Network<B>, path: &Path) -> Result<(), ModelError> {
    let bytes = record_bytes(model)?;
    write_atomically(path, &bytes).map_err(|e| weights_error(path, e.to_string()))
}

/// Loads weights saved by [`save_weights`] into `model` (which fixes the architecture).
pub fn load_weights<B: Backend>(
    model: Network<B>,
    path: &Path,
    device: &B::Device,
) -> Result<Network<B>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| weights_error(path, e.to_string()))?;
    load_record_bytes(model, bytes, path, device)
}

/// The first format, without a checksum (still read).
const SECTIONS_MAGIC_V1: &[u8; 8] = b"EWSPACK1";
/// The format written now: as version 1, then the CRC-32 of every byte before it.
const SECTIONS_MAGIC: &[u8; 8] = b"EWSPACK2";

/// Packs named byte sections into one buffer (for checkpoints written as one atomic file),
/// ending in a CRC-32 of the rest so that a damaged file is refused, not loaded.
pub fn pack_sections(sections: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = SECTIONS_MAGIC.to_vec();
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (name, data) in sections {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
    }
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Unpacks [`pack_sections`] output (or the first format's, which has no checksum);
/// `source` names the file in errors (a checksum that does not match, truncation, a wrong
/// format).
pub fn unpack_sections(bytes: &[u8], source: &Path) -> Result<Vec<(String, Vec<u8>)>, ModelError> {
    let bad = |what: &str| weights_error(source, format!("not a complete ews checkpoint ({what})"));
    let body = match bytes.get(..8) {
        Some(magic) if magic == SECTIONS_MAGIC && bytes.len() >= 16 => {
            let (body, checksum) = bytes.split_at(bytes.len() - 4);
            if crc32fast::hash(body).to_le_bytes() != checksum {
                return Err(bad(
                    "its checksum does not match: the file was damaged or cut short; resume from a copy or start afresh",
                ));
            }
            body
        }
        Some(magic) if magic == SECTIONS_MAGIC_V1 && bytes.len() >= 12 => bytes,
        _ => return Err(bad("wrong header")),
    };
    let mut pos: usize = 8;
    let mut take = |n: usize| -> Result<&[u8], ModelError> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("truncated"))?;
        let slice = &body[pos..end];
        pos = end;
        Ok(slice)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    // Each section takes at least 12 bytes, so `count` cannot ask for more than the file holds.
    let mut sections = Vec::with_capacity(count.min(body.len() / 12));
    for _ in 0..count {
        let name_len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let name = String::from_utf8(take(name_len)?.to_vec()).map_err(|_| bad("section name"))?;
        let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
        sections.push((name, take(len)?.to_vec()));
    }
    if pos != body.len() {
        return Err(bad("bytes after the last section"));
    }
    Ok(sections)
}
