//! Reading the golden files of `tests/golden` (a JSON manifest and the gzipped raw RGB bytes
//! its entries point into). Shared by the golden tests and the benches through `#[path]`.

use std::collections::BTreeMap;
use std::io::Read;

use ews_augment::Image;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/");

/// The manifest `<name>.json` and the bytes of `<name>.bin.gz`.
pub fn load(name: &str) -> (Value, Vec<u8>) {
    let manifest_path = format!("{DIR}{name}.json");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path).unwrap_or_else(|e| panic!("{manifest_path}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{manifest_path}: {e}"));
    let blob_path = format!("{DIR}{name}.bin.gz");
    let mut blob = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(&blob_path).unwrap_or_else(|e| panic!("{blob_path}: {e}")),
    )
    .read_to_end(&mut blob)
    .unwrap_or_else(|e| panic!("{blob_path}: {e}"));
    (manifest, blob)
}

/// The RGB image an entry (`height`, `width`, `offset`) points to in `blob`.
pub fn image_of(entry: &Value, blob: &[u8]) -> Image {
    let h = entry["height"].as_u64().unwrap() as usize;
    let w = entry["width"].as_u64().unwrap() as usize;
    let at = entry["offset"].as_u64().unwrap() as usize;
    Image::new(h, w, blob[at..at + h * w * 3].to_vec())
}

/// The input images of the ops golden file by name: three CIFAR-10 test images and the
/// 224 px photo (`astronaut224`).
#[allow(dead_code)] // not every test that includes this file reads the inputs
pub fn inputs() -> BTreeMap<String, Image> {
    let (manifest, blob) = load("ops_golden");
    manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "input")
        .map(|e| (e["image"].as_str().unwrap().to_string(), image_of(e, &blob)))
        .collect()
}
