//! CPU image transforms on u8 RGB images (HWC). No Burn dependency: the data loader runs
//! them on worker threads.
//!
//! - [`standard`]: pad/crop/flip and resizing.
//! - [`ops`]: Pillow-exact image operations; [`policy`]: AutoAugment, RandAugment,
//!   TrivialAugment and AugMix over them.
//! - [`corrupt`]: the ImageNet-C / CIFAR-10-C corruptions; [`jpeg`]: the libjpeg-exact JPEG
//!   round trip they use.

pub mod corrupt;
pub mod jpeg;
pub mod ops;
pub mod perturb;
pub mod policy;
pub mod standard;

pub use standard::{Padding, StandardTransform};

/// An RGB image with 8-bit channels, stored row-major as HWC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

impl Image {
    /// An image from its pixels; panics if the length is not `height * width * 3`.
    pub fn new(height: usize, width: usize, pixels: Vec<u8>) -> Self {
        assert_eq!(
            pixels.len(),
            height * width * 3,
            "image of {height}x{width} needs {} bytes",
            height * width * 3
        );
        Self {
            height,
            width,
            pixels,
        }
    }

    /// The pixel at (y, x) as [r, g, b].
    pub fn get(&self, y: usize, x: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Writes the image into `out` as CHW floats in [0, 1] (`v / 255` as ToTensor computes
    /// it, read from a table).
    pub fn write_chw_unit(&self, out: &mut [f32]) {
        let plane = self.height * self.width;
        assert_eq!(out.len(), plane * 3);
        let unit = unit_table();
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in self.pixels.chunks_exact(3).enumerate() {
            r[i] = unit[px[0] as usize];
            g[i] = unit[px[1] as usize];
            b[i] = unit[px[2] as usize];
        }
    }
}

/// `v as f32 / 255.0` for every byte value.
pub fn unit_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|v| v as f32 / 255.0))
}
