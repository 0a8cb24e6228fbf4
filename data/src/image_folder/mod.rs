//! Image folders in torchvision's ImageFolder layout: `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`
//! (CINIC-10 and the shared CIFAR-10 JPEG copy use it), from a directory or from a `.tar` / `.tar.gz`
//! archive read without unpacking.
//!
//! - Classes are the training split's class folders in sorted name order (byte order, as Python's
//!   `sorted`); folders whose name starts with `.` are not classes. A class folder without images is
//!   an error (it would silently shift the labels). The test split's class folders must be training
//!   classes; a test split may lack some.
//! - The images of a class are the `.png`, `.jpg` and `.jpeg` files (any case) anywhere under its folder,
//!   in sorted order of their path inside it; other files are ignored. Images are decoded from their
//!   content, in parallel (rayon), into a fixed order.
//! - Every image must have the size of the first training image; the error names the first file in
//!   that order that differs and both sizes. Channels also follow the first training image: grayscale
//!   gives 1 channel, colour 3 (rows `C×H×W`, channel-major as PyTorch). In a colour set a grayscale
//!   image is replicated to 3 channels (as torchvision's loader, which converts to RGB); a colour image in
//!   a grayscale set is an error. Alpha channels are dropped. Pixels are scaled to [0, 1].
//! - In an archive the tree may sit under one top directory (`cifar10-jpeg/train/...`); so may it in a
//!   directory (`ROOT/cifar10-jpeg/train/...`) when `ROOT` holds no split folder itself.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use fedsim_types::ImageShape;
use image::DynamicImage;
use rayon::prelude::*;

use crate::raw::{RawImages, image_len};
use crate::util::{format_err, io_err, zeroed};
use crate::{DataError, Dataset};

mod archive;
mod dir;
#[cfg(test)]
mod tests;

/// An image folder data set read whole.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// The training split.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// Class names (the class folders), in label order.
    pub classes: Vec<String>,
}

/// Reads the image folder (directory or `.tar` / `.tar.gz` archive) at `path`: its splits `train_split`
/// and `test_split`, decoded whole.
///
/// Errors: [`DataError::Io`] for an unreadable file; [`DataError::Format`] naming the file (for an archive:
/// the archive, and the member in the message) for a missing split, an empty class, an undecodable image
/// or an image of another size or colour type than the first training image; a truncated or corrupt
/// archive names the member being read and its offset in the (uncompressed) tar stream.
pub fn read_image_folder(
    path: &Path,
    train_split: &str,
    test_split: &str,
) -> Result<ImageFolder, DataError> {
    let set = FolderSet::open(path, train_split, Some(test_split))?;
    let reference = set.reference()?;
    let all_train: Vec<u32> = (0..set.train.len() as u32).collect();
    let all_test: Vec<u32> = (0..set.test.len() as u32).collect();
    let train = set
        .decode(&set.train, &all_train, reference)?
        .to_dataset()?;
    let test = set.decode(&set.test, &all_test, reference)?.to_dataset()?;
    Ok(ImageFolder {
        train,
        test,
        classes: set.classes,
    })
}

/// Where an image's bytes are.
#[derive(Debug)]
enum Content {
    /// A file of a directory tree.
    File(PathBuf),
    /// A member of an archive, read into memory.
    Bytes(Vec<u8>),
}

/// One image of a split.
#[derive(Debug)]
struct Member {
    /// Class index.
    label: u32,
    /// Path relative to the tree root (`train/cat/0001.jpg`), for messages and sorting.
    name: String,
    content: Content,
}

/// A file found while listing: `split/class/rest` relative to the tree root.
#[derive(Debug)]
struct Listed {
    split: String,
    class: String,
    /// Path inside the class folder.
    rest: String,
    content: Content,
}

/// The listing of an image folder: its classes and the images of its splits, in order, not decoded.
#[derive(Debug)]
pub(crate) struct FolderSet {
    /// The directory or archive.
    source: PathBuf,
    /// Whether `source` is an archive (errors then name the member in the message).
    is_archive: bool,
    /// Class names, in label order.
    pub(crate) classes: Vec<String>,
    train: Vec<Member>,
    test: Vec<Member>,
}

/// The size and channels every image must have: those of the first training image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reference {
    shape: ImageShape,
}

/// Whether `name` has an image extension (`.png`, `.jpg`, `.jpeg`, any case).
fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg")
}

/// Refuses split names that are not single folder names, or the same name for both splits.
pub(crate) fn check_split_names(
    train_split: &str,
    test_split: Option<&str>,
) -> Result<(), DataError> {
    for (key, s) in [
        ("data.train_split", Some(train_split)),
        ("data.test_split", test_split),
    ] {
        if let Some(s) = s
            && (s.is_empty()
                || s.contains(['/', '\\'])
                || s == "."
                || s == ".."
                || s.starts_with('.'))
        {
            return Err(DataError::Spec(format!(
                "{key} must be a folder name, got {s:?}"
            )));
        }
    }
    if test_split == Some(train_split) {
        return Err(DataError::Spec(format!(
            "data.train_split and data.test_split are both {train_split:?}"
        )));
    }
    Ok(())
}

impl FolderSet {
    /// Lists the image folder at `path` (see [`read_image_folder`]); the test split only when
    /// `test_split` is given.
    pub(crate) fn open(
        path: &Path,
        train_split: &str,
        test_split: Option<&str>,
    ) -> Result<Self, DataError> {
        check_split_names(train_split, test_split)?;
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        let (listed, class_dirs, is_archive) = if meta.is_dir() {
            let (l, c) = dir::list(path, train_split, test_split)?;
            (l, c, false)
        } else {
            let (l, c) = archive::list(path, train_split, test_split)?;
            (l, c, true)
        };
        Self::organise(
            path,
            is_archive,
            listed,
            class_dirs,
            train_split,
            test_split,
        )
    }

    /// Builds the set from the listed files and the class folders seen (`(split, class)`, including
    /// empty ones).
    fn organise(
        source: &Path,
        is_archive: bool,
        listed: Vec<Listed>,
        class_dirs: Vec<(String, String)>,
        train_split: &str,
        test_split: Option<&str>,
    ) -> Result<Self, DataError> {
        let mut classes: Vec<String> = class_dirs
            .iter()
            .filter(|(s, _)| s == train_split)
            .map(|(_, c)| c.clone())
            .chain(
                listed
                    .iter()
                    .filter(|l| l.split == train_split)
                    .map(|l| l.class.clone()),
            )
            .collect();
        classes.sort_unstable();
        classes.dedup();
        if classes.is_empty() {
            return Err(format_err(
                source,
                format!("no class folder with images under `{train_split}/`"),
            ));
        }
        let mut counts = vec![0usize; classes.len()];
        let mut train = Vec::new();
        let mut test = Vec::new();
        for l in listed {
            let name = format!("{}/{}/{}", l.split, l.class, l.rest);
            let label = classes.binary_search(&l.class);
            if l.split == train_split {
                let label = label.unwrap_or_default();
                counts[label] += 1;
                train.push(((label, l.rest), name, l.content));
            } else if Some(l.split.as_str()) == test_split {
                let Ok(label) = label else {
                    return Err(format_err(
                        source,
                        format!(
                            "`{}/{}/` is not a class of the training split `{train_split}/` (classes: {})",
                            l.split,
                            l.class,
                            classes.join(", ")
                        ),
                    ));
                };
                test.push(((label, l.rest), name, l.content));
            }
        }
        if let Some(c) = counts.iter().position(|&n| n == 0) {
            return Err(format_err(
                source,
                format!(
                    "class folder `{train_split}/{}/` holds no .png, .jpg or .jpeg file",
                    classes[c]
                ),
            ));
        }
        if let Some(t) = test_split
            && test.is_empty()
            && !class_dirs.iter().any(|(s, _)| s == t)
        {
            return Err(format_err(
                source,
                format!("no test split: no `{t}/<class>/` folder with images (data.test_split)"),
            ));
        }
        let order = |v: Vec<((usize, String), String, Content)>| -> Vec<Member> {
            let mut v = v;
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.into_iter()
                .map(|((label, _), name, content)| Member {
                    label: label as u32,
                    name,
                    content,
                })
                .collect()
        };
        let (train, test) = (order(train), order(test));
        crate::util::check_u32_len(train.len(), "the training split")?;
        crate::util::check_u32_len(test.len(), "the test split")?;
        Ok(Self {
            source: source.to_path_buf(),
            is_archive,
            classes,
            train,
            test,
        })
    }

    /// Labels of the training images, in order.
    pub(crate) fn train_labels(&self) -> Vec<u32> {
        self.train.iter().map(|m| m.label).collect()
    }

    /// An error about member `m`: the file itself, or the archive with the member named.
    fn member_err(&self, m: &Member, msg: impl std::fmt::Display) -> DataError {
        match &m.content {
            Content::File(p) => format_err(p, msg.to_string()),
            Content::Bytes(_) if self.is_archive => {
                format_err(&self.source, format!("member `{}`: {msg}", m.name))
            }
            Content::Bytes(_) => format_err(&self.source.join(&m.name), msg.to_string()),
        }
    }

    /// Decodes `m`.
    fn decode_one(&self, m: &Member) -> Result<DynamicImage, DataError> {
        let read;
        let bytes: &[u8] = match &m.content {
            Content::Bytes(b) => b,
            Content::File(p) => {
                read = std::fs::read(p).map_err(|e| io_err(p, e))?;
                &read
            }
        };
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| self.member_err(m, format!("cannot read the image: {e}")))?
            .decode()
            .map_err(|e| self.member_err(m, format!("cannot decode the image: {e}")))
    }

    /// Size and channels of the first training image, which every image must match.
    pub(crate) fn reference(&self) -> Result<Reference, DataError> {
        let Some(first) = self.train.first() else {
            return Err(format_err(
                &self.source,
                "the training split holds no image",
            ));
        };
        let img = self.decode_one(first)?;
        Ok(Reference {
            shape: ImageShape {
                channels: if img.color().has_color() { 3 } else { 1 },
                height: img.height() as usize,
                width: img.width() as usize,
            },
        })
    }

    /// Decodes `m` into `out` (`C×H×W` bytes of the reference shape).
    fn decode_into(&self, m: &Member, r: Reference, out: &mut [u8]) -> Result<(), DataError> {
        let img = self.decode_one(m)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if (h, w) != (r.shape.height, r.shape.width) {
            return Err(self.member_err(
                m,
                format!(
                    "image is {w}x{h} pixels (width x height) but the first training image `{}` is {}x{}: \
                     all images must have one size",
                    self.train.first().map_or("", |f| f.name.as_str()),
                    r.shape.width,
                    r.shape.height
                ),
            ));
        }
        let plane = h * w;
        if r.shape.channels == 3 {
            let rgb = img.into_rgb8();
            for (p, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                out[p] = px[0];
                out[plane + p] = px[1];
                out[2 * plane + p] = px[2];
            }
        } else {
            if img.color().has_color() {
                return Err(self.member_err(
                    m,
                    format!(
                        "colour image ({:?}) but the first training image `{}` is grayscale: a set is all \
                         grayscale or colour",
                        img.color(),
                        self.train.first().map_or("", |f| f.name.as_str()),
                    ),
                ));
            }
            out.copy_from_slice(img.into_luma8().as_raw());
        }
        Ok(())
    }

    /// Decodes the images `rows` (indices into `members`, each in range) in parallel; the first error in
    /// the order of `rows` is returned.
    fn decode(
        &self,
        members: &[Member],
        rows: &[u32],
        r: Reference,
    ) -> Result<RawImages, DataError> {
        let len = image_len(r.shape);
        let total = rows
            .len()
            .checked_mul(len)
            .ok_or_else(|| DataError::Spec("image set too large for memory".into()))?;
        let mut pixels: Vec<u8> = zeroed(total, "the image set")?;
        let results: Vec<Result<(), DataError>> = pixels
            .par_chunks_mut(len.max(1))
            .zip(rows.par_iter())
            .map(|(out, &i)| self.decode_into(&members[i as usize], r, out))
            .collect();
        results.into_iter().collect::<Result<(), DataError>>()?;
        Ok(RawImages {
            pixels,
            labels: rows.iter().map(|&i| members[i as usize].label).collect(),
            num_classes: self.classes.len(),
            shape: r.shape,
        })
    }

    /// The training images `rows` (ascending indices), decoded and scaled: what a client process holds.
    pub(crate) fn train_rows(&self, rows: &[u32], r: Reference) -> Result<Dataset, DataError> {
        if let Some(&bad) = rows.iter().find(|&&i| i as usize >= self.train.len()) {
            return Err(DataError::Spec(format!(
                "internal error: image {bad} asked for, the training split has {}",
                self.train.len()
            )));
        }
        self.decode(&self.train, rows, r)?.to_dataset()
    }
}
