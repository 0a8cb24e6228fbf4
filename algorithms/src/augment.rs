//! Data augmentation in local training (`[train] augment`): a random crop of the zero-padded image and
//! a random horizontal flip, torchvision's `RandomCrop(size, padding)` + `RandomHorizontalFlip()` as
//! the CIFAR-10 papers use them.
//!
//! Every choice is a hash of (augmentation key, step, sample position in the batch): the key is drawn
//! from (seed, round, client) on a stream of its own ([`fedsim_types::rng::Purpose::Augmentation`]),
//! so both runtimes and every thread count see the same crops and flips, and a scenario with
//! augmentation draws the same shuffles and minibatches as one without. Evaluation never augments.
//!
//! The padding is zero in the model's input space: after `data.normalize = "per_channel"` that is the
//! channel mean, where torchvision (which pads before normalising) pads with black.

use fedsim_types::ConfigError;
use fedsim_types::ImageShape;
use fedsim_types::rng::mix64;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// `[train] augment = { crop_padding = 4, hflip = true }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Zeros added on every side before a crop of the original size at a random offset (0: no crop).
    #[serde(default)]
    pub crop_padding: usize,
    /// Mirror each image left to right with probability 1/2.
    #[serde(default)]
    pub hflip: bool,
}

impl Augment {
    /// Whether the augmentation changes anything.
    pub fn is_active(&self) -> bool {
        self.crop_padding > 0 || self.hflip
    }

    /// Checks the settings against the data's image shape (`None`: the data are not images). Keys are
    /// relative to `train.augment`.
    pub fn check(&self, image: Option<ImageShape>) -> Result<(), ConfigError> {
        if !self.is_active() {
            return Ok(());
        }
        let Some(im) = image else {
            return Err(ConfigError::new(
                "train.augment",
                "needs image data (a data set with an image shape, e.g. mnist or cifar10)",
            ));
        };
        if self.crop_padding > im.height.max(im.width) {
            return Err(ConfigError::new(
                "train.augment.crop_padding",
                format!(
                    "{} is larger than the image ({}x{})",
                    self.crop_padding, im.height, im.width
                ),
            ));
        }
        Ok(())
    }

    /// Augments every row of `x` (samples of shape `image`, channel-major) in place, for training step
    /// `step` of the stream `key`. `tmp` is scratch space.
    pub fn apply(
        &self,
        key: u64,
        step: u64,
        image: ImageShape,
        x: &mut Array2<f32>,
        tmp: &mut Vec<f32>,
    ) {
        if !self.is_active() {
            return;
        }
        let (c, h, w) = (image.channels, image.height, image.width);
        debug_assert_eq!(x.ncols(), c * h * w);
        let p = self.crop_padding;
        let span = 2 * p as u64 + 1;
        let step_key = mix64(key ^ mix64(step));
        for (i, mut row) in x.rows_mut().into_iter().enumerate() {
            let r = mix64(step_key ^ i as u64);
            let (dy, dx) = ((r % span) as usize, ((r >> 20) % span) as usize);
            let flip = self.hflip && (r >> 63) == 1;
            if dy == p && dx == p && !flip {
                continue; // the identity
            }
            let Some(src) = row.as_slice() else {
                continue; // rows of a standard-layout array are contiguous
            };
            tmp.clear();
            tmp.extend_from_slice(src);
            let Some(dst) = row.as_slice_mut() else {
                continue;
            };
            for ch in 0..c {
                let plane = &tmp[ch * h * w..(ch + 1) * h * w];
                let out = &mut dst[ch * h * w..(ch + 1) * h * w];
                for y in 0..h {
                    // Output (y, x) reads input (y + dy − p, x' + dx − p), x' = x or w − 1 − x.
                    let sy = (y + dy).wrapping_sub(p);
                    let out_row = &mut out[y * w..(y + 1) * w];
                    if sy >= h {
                        out_row.fill(0.0);
                        continue;
                    }
                    let in_row = &plane[sy * w..(sy + 1) * w];
                    for (xo, o) in out_row.iter_mut().enumerate() {
                        let xs = if flip { w - 1 - xo } else { xo };
                        let sx = (xs + dx).wrapping_sub(p);
                        *o = if sx < w { in_row[sx] } else { 0.0 };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IM: ImageShape = ImageShape {
        channels: 2,
        height: 3,
        width: 4,
    };

    fn batch(n: usize) -> Array2<f32> {
        Array2::from_shape_fn((n, 24), |(r, c)| (r * 100 + c + 1) as f32)
    }

    /// The same augmentation, written the slow way: pad, crop, then flip.
    fn reference(src: &[f32], dy: usize, dx: usize, flip: bool, p: usize) -> Vec<f32> {
        let (c, h, w) = (IM.channels, IM.height, IM.width);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let mut out = vec![0.0; c * h * w];
        for ch in 0..c {
            let mut padded = vec![0.0; hp * wp];
            for y in 0..h {
                for x in 0..w {
                    padded[(y + p) * wp + x + p] = src[ch * h * w + y * w + x];
                }
            }
            for y in 0..h {
                for x in 0..w {
                    let v = padded[(y + dy) * wp + x + dx];
                    let xo = if flip { w - 1 - x } else { x };
                    out[ch * h * w + y * w + xo] = v;
                }
            }
        }
        out
    }

    #[test]
    fn crops_and_flips_match_pad_crop_flip() {
        let aug = Augment {
            crop_padding: 2,
            hflip: true,
        };
        let (mut x, mut tmp) = (batch(64), Vec::new());
        let before = x.clone();
        aug.apply(7, 3, IM, &mut x, &mut tmp);
        let mut seen = std::collections::HashSet::new();
        for i in 0..64 {
            let src = before.row(i).to_vec();
            let got = x.row(i).to_vec();
            // Exactly one (dy, dx, flip) must explain each sample.
            let mut found = None;
            for dy in 0..5 {
                for dx in 0..5 {
                    for flip in [false, true] {
                        if reference(&src, dy, dx, flip, 2) == got {
                            found.get_or_insert((dy, dx, flip));
                        }
                    }
                }
            }
            let f = found.unwrap_or_else(|| panic!("sample {i} is not a crop/flip of its input"));
            seen.insert(f);
        }
        assert!(seen.len() > 20, "offsets and flips vary: {seen:?}");
        assert!(seen.iter().any(|s| s.2) && seen.iter().any(|s| !s.2));
    }

    #[test]
    fn choices_depend_on_key_step_and_position_only() {
        let aug = Augment {
            crop_padding: 1,
            hflip: true,
        };
        let run = |key, step| {
            let (mut x, mut tmp) = (batch(8), Vec::new());
            aug.apply(key, step, IM, &mut x, &mut tmp);
            x
        };
        assert_eq!(run(1, 1), run(1, 1));
        assert_ne!(run(1, 1), run(1, 2));
        assert_ne!(run(1, 1), run(2, 1));
    }

    #[test]
    fn inactive_settings_change_nothing_and_checks_name_the_key() {
        let (mut x, mut tmp) = (batch(4), Vec::new());
        Augment::default().apply(1, 1, IM, &mut x, &mut tmp);
        assert_eq!(x, batch(4));
        let flip_only = Augment {
            crop_padding: 0,
            hflip: true,
        };
        flip_only.apply(5, 0, IM, &mut x, &mut tmp);
        for i in 0..4 {
            let (a, b) = (x.row(i).to_vec(), batch(4).row(i).to_vec());
            assert!(a == b || a == reference(&b, 0, 0, true, 0));
        }
        assert!(Augment::default().check(None).is_ok());
        assert_eq!(flip_only.check(None).unwrap_err().key, "train.augment");
        let big = Augment {
            crop_padding: 9,
            hflip: false,
        };
        assert_eq!(
            big.check(Some(IM)).unwrap_err().key,
            "train.augment.crop_padding"
        );
    }
}
