//! Augmentation policies as data tables over the operations in [`crate::ops`]:
//! AutoAugment (torchvision's CIFAR-10, ImageNet and SVHN policies and the original
//! TensorFlow CIFAR policy), RandAugment, TrivialAugmentWide and AugMix (the original and
//! torchvision's variant). Every policy draws from an explicit RNG: the same seed gives the
//! same image.

use rand::Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use crate::Image;
use crate::ops::{self, Interpolation};

/// The operations of the policy search spaces (torchvision's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// No change.
    Identity,
    /// Horizontal shear.
    ShearX,
    /// Vertical shear.
    ShearY,
    /// Horizontal shift in pixels.
    TranslateX,
    /// Vertical shift in pixels.
    TranslateY,
    /// Rotation in degrees, counter-clockwise.
    Rotate,
    /// `ImageEnhance.Brightness`.
    Brightness,
    /// `ImageEnhance.Color` (saturation).
    Color,
    /// `ImageEnhance.Contrast`.
    Contrast,
    /// `ImageEnhance.Sharpness`.
    Sharpness,
    /// Keep this many bits.
    Posterize,
    /// Invert values at or above a threshold.
    Solarize,
    /// Stretch each channel to the full range.
    AutoContrast,
    /// Histogram equalisation.
    Equalize,
    /// 255 - v.
    Invert,
    /// A filled square at a random position (the TensorFlow policy only).
    Cutout,
}

/// torchvision's `_get_inverse_affine_matrix`: the Pillow AFFINE matrix (output -> input) of
/// a rotation by `angle` degrees, a translation, a scale and a shear (degrees) about `center`.
pub fn torchvision_inverse_affine(
    center: [f64; 2],
    angle: f64,
    translate: [f64; 2],
    scale: f64,
    shear: [f64; 2],
) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let [cx, cy] = center;
    let [tx, ty] = translate;
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0].map(|v| v / scale);
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// torchvision's `_apply_op` on a PIL image: `magnitude` is already signed; enhance ops use
/// factor `1 + magnitude`. (Cutout is not a torchvision op and is left unchanged here.)
pub fn apply_torchvision_op(
    image: &Image,
    op: Op,
    magnitude: f64,
    interpolation: Interpolation,
    fill: [u8; 3],
) -> Image {
    let (w, h) = (image.width as f64, image.height as f64);
    match op {
        Op::ShearX | Op::ShearY => {
            let angle = magnitude.atan().to_degrees();
            let shear = if op == Op::ShearX {
                [angle, 0.0]
            } else {
                [0.0, angle]
            };
            let m = torchvision_inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, shear);
            ops::affine(image, m, interpolation, fill)
        }
        Op::TranslateX | Op::TranslateY => {
            let t = magnitude.trunc();
            let t = if op == Op::TranslateX {
                [t, 0.0]
            } else {
                [0.0, t]
            };
            let m = torchvision_inverse_affine([w * 0.5, h * 0.5], 0.0, t, 1.0, [0.0, 0.0]);
            ops::affine(image, m, interpolation, fill)
        }
        Op::Rotate => ops::rotate(image, magnitude, interpolation, fill),
        Op::Brightness => ops::enhance_brightness(image, 1.0 + magnitude),
        Op::Color => ops::enhance_color(image, 1.0 + magnitude),
        Op::Contrast => ops::enhance_contrast(image, 1.0 + magnitude),
        Op::Sharpness => ops::enhance_sharpness(image, 1.0 + magnitude),
        Op::Posterize => ops::posterize(image, magnitude.trunc().clamp(0.0, 8.0) as u8),
        Op::Solarize => ops::solarize(image, magnitude),
        Op::AutoContrast => ops::autocontrast(image),
        Op::Equalize => ops::equalize(image),
        Op::Invert => ops::invert(image),
        Op::Identity | Op::Cutout => image.clone(),
    }
}

/// `torch.linspace(start, end, steps)` in single precision (torch's symmetric formula).
pub fn torch_linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

/// torchvision's posterize bins: `max_bits - round(arange(n) / ((n - 1) / span))`
/// (round half to even).
fn posterize_bins(max_bits: f32, span: f32, n: usize) -> Vec<f32> {
    let div = (n - 1) as f32 / span;
    (0..n)
        .map(|i| max_bits - (i as f32 / div).round_ties_even())
        .collect()
}

/// The magnitude bins of an op in torchvision's search spaces, and whether it takes a sign.
/// `None` = the op takes no magnitude.
#[derive(Clone, Debug)]
struct OpSpace {
    op: Op,
    bins: Option<Vec<f32>>,
    signed: bool,
}

impl OpSpace {
    /// The op with the magnitude of bin `pick(rng, bins)` (0 for ops without bins), negated
    /// with probability 1/2 for signed ops (torchvision's `randint(2)`), in that draw order.
    fn draw<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        pick: impl FnOnce(&mut R, usize) -> usize,
    ) -> (Op, f64) {
        let mut magnitude = match &self.bins {
            Some(b) => b[pick(rng, b.len())] as f64,
            None => 0.0,
        };
        if self.signed && rng.random::<bool>() {
            magnitude = -magnitude;
        }
        (self.op, magnitude)
    }
}

/// Which table of magnitude ranges a torchvision policy uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    /// AutoAugment and RandAugment.
    Standard,
    /// TrivialAugmentWide.
    Wide,
    /// torchvision's AugMix (`all_ops` adds the four enhance ops).
    AugMix { all_ops: bool },
}

fn search_space(space: Space, bins: usize, height: usize, width: usize) -> Vec<OpSpace> {
    let lin = |end: f32| Some(torch_linspace(0.0, end, bins));
    let signed = |op, b| OpSpace {
        op,
        bins: b,
        signed: true,
    };
    let unsigned = |op, b| OpSpace {
        op,
        bins: b,
        signed: false,
    };
    let (w, h) = (width as f32, height as f32);
    match space {
        Space::Standard | Space::Wide => {
            let wide = space == Space::Wide;
            let (shear, enh) = if wide { (0.99, 0.99) } else { (0.3, 0.9) };
            let (tx, ty) = if wide {
                (32.0, 32.0)
            } else {
                (150.0 / 331.0 * w, 150.0 / 331.0 * h)
            };
            vec![
                unsigned(Op::Identity, None),
                signed(Op::ShearX, lin(shear)),
                signed(Op::ShearY, lin(shear)),
                signed(Op::TranslateX, lin(tx)),
                signed(Op::TranslateY, lin(ty)),
                signed(Op::Rotate, lin(if wide { 135.0 } else { 30.0 })),
                signed(Op::Brightness, lin(enh)),
                signed(Op::Color, lin(enh)),
                signed(Op::Contrast, lin(enh)),
                signed(Op::Sharpness, lin(enh)),
                unsigned(
                    Op::Posterize,
                    Some(posterize_bins(8.0, if wide { 6.0 } else { 4.0 }, bins)),
                ),
                unsigned(Op::Solarize, Some(torch_linspace(255.0, 0.0, bins))),
                unsigned(Op::AutoContrast, None),
                unsigned(Op::Equalize, None),
            ]
        }
        Space::AugMix { all_ops } => {
            let mut s = vec![
                signed(Op::ShearX, lin(0.3)),
                signed(Op::ShearY, lin(0.3)),
                signed(Op::TranslateX, lin(w / 3.0)),
                signed(Op::TranslateY, lin(h / 3.0)),
                signed(Op::Rotate, lin(30.0)),
                unsigned(Op::Posterize, Some(posterize_bins(4.0, 4.0, bins))),
                unsigned(Op::Solarize, Some(torch_linspace(255.0, 0.0, bins))),
                unsigned(Op::AutoContrast, None),
                unsigned(Op::Equalize, None),
            ];
            if all_ops {
                for op in [Op::Brightness, Op::Color, Op::Contrast, Op::Sharpness] {
                    s.push(signed(op, lin(0.9)));
                }
            }
            s
        }
    }
}

fn space_entry(space: &[OpSpace], op: Op) -> &OpSpace {
    space
        .iter()
        .find(|s| s.op == op)
        .expect("policy ops are in the search space")
}

/// Which AutoAugment policy table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAugmentPolicy {
    /// torchvision's CIFAR-10 policy (25 sub-policies).
    Cifar10,
    /// torchvision's ImageNet policy (25 sub-policies).
    Imagenet,
    /// torchvision's SVHN policy (25 sub-policies).
    Svhn,
    /// The original TensorFlow CIFAR policy set (95 sub-policies, `good_policies()`), with its
    /// magnitude mapping and mean-colour fill, followed by Cutout 16 as in its pipeline.
    TfCifar,
}

impl std::str::FromStr for AutoAugmentPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cifar10" => Ok(Self::Cifar10),
            "imagenet" => Ok(Self::Imagenet),
            "svhn" => Ok(Self::Svhn),
            "tf-cifar" => Ok(Self::TfCifar),
            other => Err(format!(
                "unknown AutoAugment policy `{other}` (cifar10, imagenet, svhn, tf-cifar)"
            )),
        }
    }
}

/// One step of a sub-policy: op, probability, magnitude bin (`None` = no magnitude).
type Step = (Op, f32, Option<usize>);

use Op::{
    AutoContrast as AC, Brightness as Br, Color as Co, Contrast as Ct, Cutout as Cu,
    Equalize as Ex, Invert as In, Posterize as Po, Rotate as Ro, Sharpness as Sh, ShearX as SX,
    ShearY as SY, Solarize as So, TranslateX as TX, TranslateY as TY,
};

#[rustfmt::skip]
const CIFAR10: [[Step; 2]; 25] = [
    [(In, 0.1, None), (Ct, 0.2, Some(6))], [(Ro, 0.7, Some(2)), (TX, 0.3, Some(9))],
    [(Sh, 0.8, Some(1)), (Sh, 0.9, Some(3))], [(SY, 0.5, Some(8)), (TY, 0.7, Some(9))],
    [(AC, 0.5, None), (Ex, 0.9, None)], [(SY, 0.2, Some(7)), (Po, 0.3, Some(7))],
    [(Co, 0.4, Some(3)), (Br, 0.6, Some(7))], [(Sh, 0.3, Some(9)), (Br, 0.7, Some(9))],
    [(Ex, 0.6, None), (Ex, 0.5, None)], [(Ct, 0.6, Some(7)), (Sh, 0.6, Some(5))],
    [(Co, 0.7, Some(7)), (TX, 0.5, Some(8))], [(Ex, 0.3, None), (AC, 0.4, None)],
    [(TY, 0.4, Some(3)), (Sh, 0.2, Some(6))], [(Br, 0.9, Some(6)), (Co, 0.2, Some(8))],
    [(So, 0.5, Some(2)), (In, 0.0, None)], [(Ex, 0.2, None), (AC, 0.6, None)],
    [(Ex, 0.2, None), (Ex, 0.6, None)], [(Co, 0.9, Some(9)), (Ex, 0.6, None)],
    [(AC, 0.8, None), (So, 0.2, Some(8))], [(Br, 0.1, Some(3)), (Co, 0.7, Some(0))],
    [(So, 0.4, Some(5)), (AC, 0.9, None)], [(TY, 0.9, Some(9)), (TY, 0.7, Some(9))],
    [(AC, 0.9, None), (So, 0.8, Some(3))], [(Ex, 0.8, None), (In, 0.1, None)],
    [(TY, 0.7, Some(9)), (AC, 0.9, None)],
];

#[rustfmt::skip]
const IMAGENET: [[Step; 2]; 25] = [
    [(Po, 0.4, Some(8)), (Ro, 0.6, Some(9))], [(So, 0.6, Some(5)), (AC, 0.6, None)],
    [(Ex, 0.8, None), (Ex, 0.6, None)], [(Po, 0.6, Some(7)), (Po, 0.6, Some(6))],
    [(Ex, 0.4, None), (So, 0.2, Some(4))], [(Ex, 0.4, None), (Ro, 0.8, Some(8))],
    [(So, 0.6, Some(3)), (Ex, 0.6, None)], [(Po, 0.8, Some(5)), (Ex, 1.0, None)],
    [(Ro, 0.2, Some(3)), (So, 0.6, Some(8))], [(Ex, 0.6, None), (Po, 0.4, Some(6))],
    [(Ro, 0.8, Some(8)), (Co, 0.4, Some(0))], [(Ro, 0.4, Some(9)), (Ex, 0.6, None)],
    [(Ex, 0.0, None), (Ex, 0.8, None)], [(In, 0.6, None), (Ex, 1.0, None)],
    [(Co, 0.6, Some(4)), (Ct, 1.0, Some(8))], [(Ro, 0.8, Some(8)), (Co, 1.0, Some(2))],
    [(Co, 0.8, Some(8)), (So, 0.8, Some(7))], [(Sh, 0.4, Some(7)), (In, 0.6, None)],
    [(SX, 0.6, Some(5)), (Ex, 1.0, None)], [(Co, 0.4, Some(0)), (Ex, 0.6, None)],
    [(Ex, 0.4, None), (So, 0.2, Some(4))], [(So, 0.6, Some(5)), (AC, 0.6, None)],
    [(In, 0.6, None), (Ex, 1.0, None)], [(Co, 0.6, Some(4)), (Ct, 1.0, Some(8))],
    [(Ex, 0.8, None), (Ex, 0.6, None)],
];

#[rustfmt::skip]
const SVHN: [[Step; 2]; 25] = [
    [(SX, 0.9, Some(4)), (In, 0.2, None)], [(SY, 0.9, Some(8)), (In, 0.7, None)],
    [(Ex, 0.6, None), (So, 0.6, Some(6))], [(In, 0.9, None), (Ex, 0.6, None)],
    [(Ex, 0.6, None), (Ro, 0.9, Some(3))], [(SX, 0.9, Some(4)), (AC, 0.8, None)],
    [(SY, 0.9, Some(8)), (In, 0.4, None)], [(SY, 0.9, Some(5)), (So, 0.2, Some(6))],
    [(In, 0.9, None), (AC, 0.8, None)], [(Ex, 0.6, None), (Ro, 0.9, Some(3))],
    [(SX, 0.9, Some(4)), (So, 0.3, Some(3))], [(SY, 0.8, Some(8)), (In, 0.7, None)],
    [(Ex, 0.9, None), (TY, 0.6, Some(6))], [(In, 0.9, None), (Ex, 0.6, None)],
    [(Ct, 0.3, Some(3)), (Ro, 0.8, Some(4))], [(In, 0.8, None), (TY, 0.0, Some(2))],
    [(SY, 0.7, Some(6)), (So, 0.4, Some(8))], [(In, 0.6, None), (Ro, 0.8, Some(4))],
    [(SY, 0.3, Some(7)), (TX, 0.9, Some(3))], [(SX, 0.1, Some(6)), (In, 0.6, None)],
    [(So, 0.7, Some(2)), (TY, 0.6, Some(7))], [(SY, 0.8, Some(4)), (In, 0.8, None)],
    [(SX, 0.7, Some(9)), (TY, 0.8, Some(3))], [(SY, 0.8, Some(5)), (AC, 0.7, None)],
    [(SX, 0.7, Some(2)), (In, 0.1, None)],
];

/// The TensorFlow release's `good_policies()`: (op, probability, level 0..=10).
#[rustfmt::skip]
const TF_CIFAR: [[(Op, f32, u8); 2]; 95] = [
    // exp0_0 .. exp0_3
    [(In, 0.1, 7), (Ct, 0.2, 6)], [(Ro, 0.7, 2), (TX, 0.3, 9)], [(Sh, 0.8, 1), (Sh, 0.9, 3)],
    [(SY, 0.5, 8), (TY, 0.7, 9)], [(AC, 0.5, 8), (Ex, 0.9, 2)],
    [(So, 0.4, 5), (AC, 0.9, 3)], [(TY, 0.9, 9), (TY, 0.7, 9)], [(AC, 0.9, 2), (So, 0.8, 3)],
    [(Ex, 0.8, 8), (In, 0.1, 3)], [(TY, 0.7, 9), (AC, 0.9, 1)],
    [(So, 0.4, 5), (AC, 0.0, 2)], [(TY, 0.7, 9), (TY, 0.7, 9)], [(AC, 0.9, 0), (So, 0.4, 3)],
    [(Ex, 0.7, 5), (In, 0.1, 3)], [(TY, 0.7, 9), (TY, 0.7, 9)],
    [(So, 0.4, 5), (AC, 0.9, 1)], [(TY, 0.8, 9), (TY, 0.9, 9)], [(AC, 0.8, 0), (TY, 0.7, 9)],
    [(TY, 0.2, 7), (Co, 0.9, 6)], [(Ex, 0.7, 6), (Co, 0.4, 9)],
    // exp1_0 .. exp1_6
    [(SY, 0.2, 7), (Po, 0.3, 7)], [(Co, 0.4, 3), (Br, 0.6, 7)], [(Sh, 0.3, 9), (Br, 0.7, 9)],
    [(Ex, 0.6, 5), (Ex, 0.5, 1)], [(Ct, 0.6, 7), (Sh, 0.6, 5)],
    [(Br, 0.3, 7), (AC, 0.5, 8)], [(AC, 0.9, 4), (AC, 0.5, 6)], [(So, 0.3, 5), (Ex, 0.6, 5)],
    [(TY, 0.2, 4), (Sh, 0.3, 3)], [(Br, 0.0, 8), (Co, 0.8, 8)],
    [(So, 0.2, 6), (Co, 0.8, 6)], [(So, 0.2, 6), (AC, 0.8, 1)], [(So, 0.4, 1), (Ex, 0.6, 5)],
    [(Br, 0.0, 0), (So, 0.5, 2)], [(AC, 0.9, 5), (Br, 0.5, 3)],
    [(Ct, 0.7, 5), (Br, 0.0, 2)], [(So, 0.2, 8), (So, 0.1, 5)], [(Ct, 0.5, 1), (TY, 0.2, 9)],
    [(AC, 0.6, 5), (TY, 0.0, 9)], [(AC, 0.9, 4), (Ex, 0.8, 4)],
    [(Br, 0.0, 7), (Ex, 0.4, 7)], [(So, 0.2, 5), (Ex, 0.7, 5)], [(Ex, 0.6, 8), (Co, 0.6, 2)],
    [(Co, 0.3, 7), (Co, 0.2, 4)], [(AC, 0.5, 2), (So, 0.7, 2)],
    [(AC, 0.2, 0), (Ex, 0.1, 0)], [(SY, 0.6, 5), (Ex, 0.6, 5)], [(Br, 0.9, 3), (AC, 0.4, 1)],
    [(Ex, 0.8, 8), (Ex, 0.7, 7)], [(Ex, 0.7, 7), (So, 0.5, 0)],
    [(Ex, 0.8, 4), (TY, 0.8, 9)], [(TY, 0.8, 9), (TY, 0.6, 9)], [(TY, 0.9, 0), (TY, 0.5, 9)],
    [(AC, 0.5, 3), (So, 0.3, 4)], [(So, 0.5, 3), (Ex, 0.4, 4)],
    // exp2_0 .. exp2_7
    [(Co, 0.7, 7), (TX, 0.5, 8)], [(Ex, 0.3, 7), (AC, 0.4, 8)], [(TY, 0.4, 3), (Sh, 0.2, 6)],
    [(Br, 0.9, 6), (Co, 0.2, 8)], [(So, 0.5, 2), (In, 0.0, 3)],
    [(AC, 0.1, 5), (Br, 0.0, 0)], [(Cu, 0.2, 4), (Ex, 0.1, 1)], [(Ex, 0.7, 7), (AC, 0.6, 4)],
    [(Co, 0.1, 8), (SY, 0.2, 3)], [(SY, 0.4, 2), (Ro, 0.7, 0)],
    [(SY, 0.1, 3), (AC, 0.9, 5)], [(TY, 0.3, 6), (Cu, 0.3, 3)], [(Ex, 0.5, 0), (So, 0.6, 6)],
    [(AC, 0.3, 5), (Ro, 0.2, 7)], [(Ex, 0.8, 2), (In, 0.4, 0)],
    [(Ex, 0.9, 5), (Co, 0.7, 0)], [(Ex, 0.1, 1), (SY, 0.1, 3)], [(AC, 0.7, 3), (Ex, 0.7, 0)],
    [(Br, 0.5, 1), (Ct, 0.1, 7)], [(Ct, 0.1, 4), (So, 0.6, 5)],
    [(So, 0.2, 3), (SX, 0.0, 0)], [(TX, 0.3, 0), (TX, 0.6, 0)], [(Ex, 0.5, 9), (TY, 0.6, 7)],
    [(SX, 0.1, 0), (Sh, 0.5, 1)], [(Ex, 0.8, 6), (In, 0.3, 6)],
    [(AC, 0.3, 9), (Cu, 0.5, 3)], [(SX, 0.4, 4), (AC, 0.9, 2)], [(SX, 0.0, 3), (Po, 0.0, 3)],
    [(So, 0.4, 3), (Co, 0.2, 4)], [(Ex, 0.1, 4), (Ex, 0.7, 6)],
    [(Ex, 0.3, 8), (AC, 0.4, 3)], [(So, 0.6, 4), (AC, 0.7, 6)], [(AC, 0.2, 9), (Br, 0.4, 8)],
    [(Ex, 0.1, 0), (Ex, 0.0, 6)], [(Ex, 0.8, 4), (Ex, 0.0, 4)],
    [(Ex, 0.5, 5), (AC, 0.1, 2)], [(So, 0.5, 5), (AC, 0.9, 5)], [(AC, 0.6, 1), (AC, 0.7, 8)],
    [(Ex, 0.2, 0), (AC, 0.1, 2)], [(Ex, 0.6, 9), (Ex, 0.4, 4)],
];

/// CIFAR-10's mean colour: the TensorFlow pipeline fills with the normalised zero.
const CIFAR10_MEAN_RGB: [u8; 3] = [125, 123, 114];

/// The original release's `int_parameter(level, maxval)` = int(level * maxval / 10).
fn int_parameter(level: f64, maxval: f64) -> i64 {
    (level * maxval / 10.0) as i64
}

/// The original release's `float_parameter(level, maxval)` = level * maxval / 10.
fn float_parameter(level: f64, maxval: f64) -> f64 {
    level * maxval / 10.0
}

/// One op of the original AutoAugment / AugMix releases as a policy drew it: the level
/// (0..=10, the releases' `PARAMETER_MAX` scale), the sign of signed ops and, for Cutout,
/// the centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReleaseStep {
    /// The operation.
    pub op: Op,
    /// Level in 0..=10.
    pub level: f64,
    /// Whether a signed op goes the negative way (`random() > 0.5` in the releases).
    pub negate: bool,
    /// Cutout centre (y, x); unused by other ops.
    pub at: (usize, usize),
}

impl ReleaseStep {
    /// Draws the sign and Cutout position of `op` at `level` for an image of `height x width`.
    pub fn draw<R: Rng + ?Sized>(
        op: Op,
        level: f64,
        height: usize,
        width: usize,
        rng: &mut R,
    ) -> Self {
        let negate = rng.random::<f64>() > 0.5;
        let at = if op == Op::Cutout {
            (rng.random_range(0..height), rng.random_range(0..width))
        } else {
            (0, 0)
        };
        Self {
            op,
            level,
            negate,
            at,
        }
    }
}

/// Applies a release op with the release's magnitude mapping and Pillow calls.
fn apply_release_op(image: &Image, step: ReleaseStep, geometry: ReleaseGeometry) -> Image {
    let ReleaseStep {
        op,
        level,
        negate,
        at,
    } = step;
    let sign = if negate { -1.0 } else { 1.0 };
    let (interp, fill, translate_max) = (
        geometry.interpolation,
        geometry.fill,
        geometry.translate_max,
    );
    match op {
        Op::AutoContrast => ops::autocontrast(image),
        Op::Equalize => ops::equalize(image),
        Op::Invert => ops::invert(image),
        Op::Posterize => ops::posterize(image, (4 - int_parameter(level, 4.0)).clamp(0, 8) as u8),
        Op::Solarize => ops::solarize(image, (256 - int_parameter(level, 256.0)) as f64),
        Op::Rotate => {
            let degrees = int_parameter(level, 30.0) as f64 * sign;
            ops::rotate(image, degrees, interp, fill)
        }
        Op::ShearX | Op::ShearY => {
            let m = float_parameter(level, 0.3) * sign;
            let matrix = if op == Op::ShearX {
                [1.0, m, 0.0, 0.0, 1.0, 0.0]
            } else {
                [1.0, 0.0, 0.0, m, 1.0, 0.0]
            };
            ops::affine(image, matrix, interp, fill)
        }
        Op::TranslateX | Op::TranslateY => {
            let t = int_parameter(level, translate_max) as f64 * sign;
            let matrix = if op == Op::TranslateX {
                [1.0, 0.0, t, 0.0, 1.0, 0.0]
            } else {
                [1.0, 0.0, 0.0, 0.0, 1.0, t]
            };
            ops::affine(image, matrix, interp, fill)
        }
        Op::Color => ops::enhance_color(image, float_parameter(level, 1.8) + 0.1),
        Op::Contrast => ops::enhance_contrast(image, float_parameter(level, 1.8) + 0.1),
        Op::Brightness => ops::enhance_brightness(image, float_parameter(level, 1.8) + 0.1),
        Op::Sharpness => ops::enhance_sharpness(image, float_parameter(level, 1.8) + 0.1),
        Op::Cutout => {
            let size = int_parameter(level, 20.0).max(0) as usize;
            ops::cutout(image, at.0, at.1, 2 * (size / 2), fill)
        }
        Op::Identity => image.clone(),
    }
}

/// Geometry settings of the release ops.
#[derive(Clone, Copy, Debug)]
struct ReleaseGeometry {
    interpolation: Interpolation,
    fill: [u8; 3],
    /// Largest translation in pixels (`IMAGE_SIZE / 3` in AugMix, 10 in AutoAugment).
    translate_max: f64,
}

/// AutoAugment with one of the policy tables.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoAugment {
    /// The policy table.
    pub policy: AutoAugmentPolicy,
    /// Resampling of the geometric ops (torchvision default: nearest).
    pub interpolation: Interpolation,
    /// Fill of pixels from outside the image (torchvision default: black). The TF policy
    /// always fills with CIFAR-10's mean colour.
    pub fill: [u8; 3],
}

impl AutoAugment {
    /// torchvision's defaults for a policy.
    pub fn new(policy: AutoAugmentPolicy) -> Self {
        Self {
            policy,
            interpolation: Interpolation::Nearest,
            fill: [0, 0, 0],
        }
    }

    /// Draws one sub-policy for an image of `height x width`: the ops that fire, each with
    /// its signed magnitude (torchvision tables) or release step (TF table; the pipeline's
    /// final Cutout 16 included).
    pub fn plan<R: Rng + ?Sized>(&self, height: usize, width: usize, rng: &mut R) -> Plan {
        let table: &[[Step; 2]] = match self.policy {
            AutoAugmentPolicy::Cifar10 => &CIFAR10,
            AutoAugmentPolicy::Imagenet => &IMAGENET,
            AutoAugmentPolicy::Svhn => &SVHN,
            AutoAugmentPolicy::TfCifar => {
                let sub = &TF_CIFAR[rng.random_range(0..TF_CIFAR.len())];
                let mut steps = Vec::new();
                for &(op, p, level) in sub {
                    if rng.random::<f32>() < p {
                        steps.push(ReleaseStep::draw(op, level as f64, height, width, rng));
                    }
                }
                // The release's pipeline always ends with Cutout of size 16 (level 8).
                steps.push(ReleaseStep::draw(Op::Cutout, 8.0, height, width, rng));
                return Plan::Release(steps);
            }
        };
        // torchvision's get_params: policy id, two probabilities, two signs.
        let sub = &table[rng.random_range(0..table.len())];
        let probs: [f32; 2] = [rng.random(), rng.random()];
        let signs: [bool; 2] = [rng.random(), rng.random()];
        // AutoAugment's space: RandAugment's ops plus Invert (which takes no magnitude).
        let mut space = search_space(Space::Standard, 10, height, width);
        space.push(OpSpace {
            op: Op::Invert,
            bins: None,
            signed: false,
        });
        let mut steps = Vec::new();
        for (i, &(op, p, bin)) in sub.iter().enumerate() {
            if probs[i] <= p {
                let entry = space_entry(&space, op);
                let mut magnitude = match (&entry.bins, bin) {
                    (Some(bins), Some(b)) => bins[b] as f64,
                    _ => 0.0,
                };
                if entry.signed && !signs[i] {
                    magnitude = -magnitude;
                }
                steps.push((op, magnitude));
            }
        }
        Plan::Torchvision(steps)
    }

    /// Applies one uniformly drawn sub-policy.
    pub fn apply<R: Rng + ?Sized>(&self, image: &Image, rng: &mut R) -> Image {
        let plan = self.plan(image.height, image.width, rng);
        let geometry = ReleaseGeometry {
            interpolation: Interpolation::Nearest,
            fill: CIFAR10_MEAN_RGB,
            translate_max: 10.0,
        };
        plan.apply(image, self.interpolation, self.fill, geometry)
    }
}

/// The ops a policy drew for one image, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// torchvision-style ops with signed magnitudes (see [`apply_torchvision_op`]).
    Torchvision(Vec<(Op, f64)>),
    /// Release-style ops (original TensorFlow AutoAugment, original AugMix).
    Release(Vec<ReleaseStep>),
}

impl Plan {
    /// The ops in order.
    pub fn ops(&self) -> Vec<Op> {
        match self {
            Plan::Torchvision(s) => s.iter().map(|s| s.0).collect(),
            Plan::Release(s) => s.iter().map(|s| s.op).collect(),
        }
    }

    fn apply(
        &self,
        image: &Image,
        interpolation: Interpolation,
        fill: [u8; 3],
        geometry: ReleaseGeometry,
    ) -> Image {
        let mut out = image.clone();
        match self {
            Plan::Torchvision(steps) => {
                for &(op, magnitude) in steps {
                    out = apply_torchvision_op(&out, op, magnitude, interpolation, fill);
                }
            }
            Plan::Release(steps) => {
                for &step in steps {
                    out = apply_release_op(&out, step, geometry);
                }
            }
        }
        out
    }
}

/// torchvision's RandAugment: `num_ops` uniformly drawn ops at one fixed magnitude bin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandAugment {
    /// Ops per image (default 2).
    pub num_ops: usize,
    /// Magnitude bin (default 9 of 31).
    pub magnitude: usize,
    /// Number of magnitude bins (default 31).
    pub num_bins: usize,
    /// Resampling of the geometric ops.
    pub interpolation: Interpolation,
    /// Fill of pixels from outside the image.
    pub fill: [u8; 3],
}

impl Default for RandAugment {
    fn default() -> Self {
        Self {
            num_ops: 2,
            magnitude: 9,
            num_bins: 31,
            interpolation: Interpolation::Nearest,
            fill: [0, 0, 0],
        }
    }
}

impl RandAugment {
    /// Draws `num_ops` ops with their signed magnitudes.
    pub fn plan<R: Rng + ?Sized>(&self, height: usize, width: usize, rng: &mut R) -> Plan {
        let space = search_space(Space::Standard, self.num_bins, height, width);
        let steps = (0..self.num_ops)
            .map(|_| {
                let entry = &space[rng.random_range(0..space.len())];
                entry.draw(rng, |_, bins| self.magnitude.min(bins - 1))
            })
            .collect();
        Plan::Torchvision(steps)
    }

    /// Applies `num_ops` random ops.
    pub fn apply<R: Rng + ?Sized>(&self, image: &Image, rng: &mut R) -> Image {
        let plan = self.plan(image.height, image.width, rng);
        plan.apply(image, self.interpolation, self.fill, NO_RELEASE_GEOMETRY)
    }
}

/// Placeholder geometry for plans that hold only torchvision-style ops.
const NO_RELEASE_GEOMETRY: ReleaseGeometry = ReleaseGeometry {
    interpolation: Interpolation::Nearest,
    fill: [0, 0, 0],
    translate_max: 0.0,
};

/// torchvision's TrivialAugmentWide: one uniformly drawn op at a uniformly drawn magnitude.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrivialAugmentWide {
    /// Number of magnitude bins (default 31).
    pub num_bins: usize,
    /// Resampling of the geometric ops.
    pub interpolation: Interpolation,
    /// Fill of pixels from outside the image.
    pub fill: [u8; 3],
}

impl Default for TrivialAugmentWide {
    fn default() -> Self {
        Self {
            num_bins: 31,
            interpolation: Interpolation::Nearest,
            fill: [0, 0, 0],
        }
    }
}

impl TrivialAugmentWide {
    /// Draws one op and its signed magnitude.
    pub fn plan<R: Rng + ?Sized>(&self, height: usize, width: usize, rng: &mut R) -> Plan {
        let space = search_space(Space::Wide, self.num_bins, height, width);
        let entry = &space[rng.random_range(0..space.len())];
        Plan::Torchvision(vec![entry.draw(rng, |rng, bins| rng.random_range(0..bins))])
    }

    /// Applies one random op.
    pub fn apply<R: Rng + ?Sized>(&self, image: &Image, rng: &mut R) -> Image {
        let plan = self.plan(image.height, image.width, rng);
        plan.apply(image, self.interpolation, self.fill, NO_RELEASE_GEOMETRY)
    }
}

/// Which AugMix implementation to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AugMixVariant {
    /// The original release (google-research/augmix): levels ~ U(0.1, severity), its own
    /// magnitude mapping, mixing in float.
    Original,
    /// `torchvision.transforms.AugMix`: magnitude bins below `severity` of 10, mixing
    /// weights from Dirichlet(alpha, alpha) x Dirichlet(alpha...), result truncated to u8.
    Torchvision,
}

/// AugMix (Hendrycks et al., 2020): a convex mix of `width` augmentation chains, mixed with
/// the original image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugMix {
    /// Implementation to follow.
    pub variant: AugMixVariant,
    /// Strength 1..=10 (default 3).
    pub severity: u32,
    /// Number of chains (default 3).
    pub width: usize,
    /// Ops per chain; `None` draws 1..=3 per chain (default).
    pub depth: Option<usize>,
    /// Dirichlet / Beta concentration (default 1).
    pub alpha: f64,
    /// Adds colour, contrast, brightness and sharpness (these overlap ImageNet-C's test
    /// corruptions; off in the paper's setting).
    pub all_ops: bool,
}

impl Default for AugMix {
    fn default() -> Self {
        Self {
            variant: AugMixVariant::Original,
            severity: 3,
            width: 3,
            depth: None,
            alpha: 1.0,
            all_ops: false,
        }
    }
}

/// Draws from Dirichlet(alpha, ..., alpha) with `n` components (normalised Gamma draws).
pub fn sample_dirichlet<R: Rng + ?Sized>(alpha: f64, n: usize, rng: &mut R) -> Vec<f64> {
    let gamma = Gamma::new(alpha, 1.0).expect("alpha is positive");
    let draws: Vec<f64> = (0..n).map(|_| gamma.sample(rng)).collect();
    let sum: f64 = draws.iter().sum();
    if sum > 0.0 {
        draws.iter().map(|d| d / sum).collect()
    } else {
        vec![1.0 / n as f64; n]
    }
}

/// The original release's op list (`augmentations` / `augmentations_all`).
const AUGMIX_OPS: [Op; 9] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Posterize,
    Op::Rotate,
    Op::Solarize,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
];
const AUGMIX_EXTRA_OPS: [Op; 4] = [Op::Color, Op::Contrast, Op::Brightness, Op::Sharpness];

impl AugMix {
    /// Checks the settings, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.severity) {
            return Err(format!(
                "augmix severity must be 1..=10, got {}",
                self.severity
            ));
        }
        if self.width == 0 {
            return Err("augmix width must be at least 1".into());
        }
        if self.depth == Some(0) {
            return Err("augmix depth must be at least 1 (or unset for 1..=3)".into());
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(format!("augmix alpha must be positive, got {}", self.alpha));
        }
        Ok(())
    }

    fn chain_depth<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        self.depth.unwrap_or_else(|| rng.random_range(1..=3))
    }

    /// Draws the mixing weights and the chains for an image of `height x width`.
    pub fn plan<R: Rng + ?Sized>(&self, height: usize, width: usize, rng: &mut R) -> AugMixPlan {
        match self.variant {
            AugMixVariant::Original => {
                let ws = sample_dirichlet(self.alpha, self.width, rng);
                let beta = rand_distr::Beta::new(self.alpha, self.alpha).expect("alpha > 0");
                let m = beta.sample(rng);
                let original = (1.0 - m) as f32;
                let weights = ws.into_iter().map(|w| (m * w) as f32).collect();
                let mut ops: Vec<Op> = AUGMIX_OPS.to_vec();
                if self.all_ops {
                    ops.extend(AUGMIX_EXTRA_OPS);
                }
                let chains = (0..self.width)
                    .map(|_| {
                        let steps = (0..self.chain_depth(rng))
                            .map(|_| {
                                let op = ops[rng.random_range(0..ops.len())];
                                let level = rng.random_range(0.1..self.severity as f64);
                                ReleaseStep::draw(op, level, height, width, rng)
                            })
                            .collect();
                        Plan::Release(steps)
                    })
                    .collect();
                AugMixPlan {
                    original,
                    weights,
                    chains,
                }
            }
            AugMixVariant::Torchvision => {
                let space = search_space(
                    Space::AugMix {
                        all_ops: self.all_ops,
                    },
                    10,
                    height,
                    width,
                );
                let m = sample_dirichlet(self.alpha, 2, rng);
                let weights = sample_dirichlet(self.alpha, self.width, rng)
                    .into_iter()
                    .map(|w| (w * m[1]) as f32)
                    .collect();
                let chains = (0..self.width)
                    .map(|_| {
                        let steps = (0..self.chain_depth(rng))
                            .map(|_| {
                                let entry = &space[rng.random_range(0..space.len())];
                                entry
                                    .draw(rng, |rng, _| rng.random_range(0..self.severity as usize))
                            })
                            .collect();
                        Plan::Torchvision(steps)
                    })
                    .collect();
                AugMixPlan {
                    original: m[0] as f32,
                    weights,
                    chains,
                }
            }
        }
    }

    /// Writes the mixed image into `out` as CHW floats in [0, 1].
    pub fn apply_into<R: Rng + ?Sized>(&self, image: &Image, rng: &mut R, out: &mut [f32]) {
        let plan = self.plan(image.height, image.width, rng);
        let (h, w) = (image.height, image.width);
        let plane = h * w;
        assert_eq!(out.len(), plane * 3);
        let geometry = ReleaseGeometry {
            interpolation: Interpolation::Bilinear,
            fill: [0, 0, 0],
            translate_max: w as f64 / 3.0,
        };
        let chains: Vec<Image> = plan
            .chains
            .iter()
            .map(|c| c.apply(image, Interpolation::Bilinear, [0, 0, 0], geometry))
            .collect();
        // original * x + sum_i w_i chain_i on the u8 scale, then / 255 (ToTensor); torchvision
        // truncates the mix back to u8 first.
        let mut acc: Vec<f32> = image
            .pixels
            .iter()
            .map(|&v| plan.original * v as f32)
            .collect();
        for (chain, &wi) in chains.iter().zip(&plan.weights) {
            for (a, &v) in acc.iter_mut().zip(&chain.pixels) {
                *a += wi * v as f32;
            }
        }
        if self.variant == AugMixVariant::Torchvision {
            for a in acc.iter_mut() {
                *a = a.clamp(0.0, 255.0).trunc();
            }
        }
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in acc.chunks_exact(3).enumerate() {
            r[i] = px[0] / 255.0;
            g[i] = px[1] / 255.0;
            b[i] = px[2] / 255.0;
        }
    }
}

/// What AugMix drew for one image: the weight of the original image, the chain weights
/// and the chains. Weights sum to 1 (up to rounding).
#[derive(Clone, Debug, PartialEq)]
pub struct AugMixPlan {
    /// Weight of the unaugmented image (`1 - m` in the original, `m[0]` in torchvision's).
    pub original: f32,
    /// Weight of each chain (`m * w_i` with `m ~ Beta`, or torchvision's `m[1] * w_i`).
    pub weights: Vec<f32>,
    /// The op chains.
    pub chains: Vec<Plan>,
}

/// The automatic augmentation applied after crop/flip (or RandomResizedCrop), as in
/// torchvision's CIFAR and ImageNet recipes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Nothing beyond the base transform.
    None,
    /// AutoAugment.
    AutoAugment(AutoAugment),
    /// RandAugment.
    RandAugment(RandAugment),
    /// TrivialAugmentWide.
    TrivialAugment(TrivialAugmentWide),
    /// AugMix.
    AugMix(AugMix),
}

impl Policy {
    /// Applies the policy and writes the result into `out` as CHW floats in [0, 1] (AugMix
    /// produces floats, so the policies end in the batch layout rather than in an image).
    pub fn write_into<R: Rng + ?Sized>(&self, image: &Image, rng: &mut R, out: &mut [f32]) {
        match self {
            Policy::None => image.write_chw_unit(out),
            Policy::AutoAugment(p) => p.apply(image, rng).write_chw_unit(out),
            Policy::RandAugment(p) => p.apply(image, rng).write_chw_unit(out),
            Policy::TrivialAugment(p) => p.apply(image, rng).write_chw_unit(out),
            Policy::AugMix(p) => p.apply_into(image, rng, out),
        }
    }
}
