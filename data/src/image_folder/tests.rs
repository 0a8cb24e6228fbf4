//! Image-folder tests on PNG and JPEG files the tests write with the `image` crate, as a directory tree
//! and as `.tar` / `.tar.gz` archives of the same tree.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};

use super::*;

/// Pixel of test image `k` at `(x, y)`, channel `c`.
fn px(k: u8, x: u32, y: u32, c: u8) -> u8 {
    k.wrapping_mul(40)
        .wrapping_add((x * 3 + y * 11) as u8)
        .wrapping_add(c.wrapping_mul(70))
}

fn rgb(k: u8, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([px(k, x, y, 0), px(k, x, y, 1), px(k, x, y, 2)])
    })
}

fn save_rgb(path: &Path, k: u8, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let fmt = ImageFormat::from_path(path).unwrap();
    rgb(k, w, h).save_with_format(path, fmt).unwrap();
}

fn save_gray(path: &Path, k: u8, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(w, h, |x, y| Luma([px(k, x, y, 0)]))
        .save_with_format(path, ImageFormat::Png)
        .unwrap();
}

/// The colour tree, 4x3 PNGs: train/dog (2 images, one in a subfolder), train/cat (2, one RGBA),
/// train/.hidden (ignored), test/cat (1); plus files that are not images.
fn colour_tree(root: &Path) {
    save_rgb(&root.join("train/dog/b.png"), 1, 4, 3);
    save_rgb(&root.join("train/dog/a/z.png"), 2, 4, 3);
    save_rgb(&root.join("train/cat/2.png"), 3, 4, 3);
    let rgba = RgbaImage::from_fn(4, 3, |x, y| {
        Rgba([px(4, x, y, 0), px(4, x, y, 1), px(4, x, y, 2), 7])
    });
    std::fs::create_dir_all(root.join("train/cat")).unwrap();
    rgba.save_with_format(root.join("train/cat/1.PNG"), ImageFormat::Png)
        .unwrap();
    save_rgb(&root.join("train/.hidden/x.png"), 9, 4, 3);
    save_rgb(&root.join("test/cat/t.png"), 5, 4, 3);
    std::fs::write(root.join("train/cat/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("train/cat/._1.png"), "macOS resource fork").unwrap();
    std::fs::write(root.join("train/README"), "top-level file").unwrap();
}

/// Channel-major row of image `k` of `w x h`.
fn chw(k: u8, w: u32, h: u32) -> Vec<f32> {
    let mut v = Vec::new();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                v.push(f32::from(px(k, x, y, c)) / 255.0);
            }
        }
    }
    v
}

/// A `.tar` (or `.tar.gz`) of the tree under `root`, its members under `prefix`.
fn archive(root: &Path, out: &Path, prefix: &str, gzip: bool) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(prefix, root).unwrap();
    let bytes = b.into_inner().unwrap();
    let bytes = if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        e.finish().unwrap()
    } else {
        bytes
    };
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn directory_classes_order_labels_and_channel_major_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    colour_tree(tmp.path());
    let f = read_image_folder(tmp.path(), "train", "test").unwrap();
    assert_eq!(f.classes, vec!["cat", "dog"]);
    let shape = ImageShape {
        channels: 3,
        height: 3,
        width: 4,
    };
    assert_eq!(f.train.image, Some(shape));
    assert_eq!(f.train.num_classes, 2);
    // cat/1.PNG, cat/2.png, dog/a/z.png, dog/b.png.
    assert_eq!(f.train.y, vec![0, 0, 1, 1]);
    for (row, k) in [(0, 4), (1, 3), (2, 2), (3, 1)] {
        assert_eq!(f.train.x.row(row).to_vec(), chw(k, 4, 3), "row {row}");
    }
    assert_eq!(f.test.y, vec![0]);
    assert_eq!(f.test.x.row(0).to_vec(), chw(5, 4, 3));
    // The same tree one folder down is found too.
    let outer = tempfile::tempdir().unwrap();
    colour_tree(&outer.path().join("set"));
    let g = read_image_folder(outer.path(), "train", "test").unwrap();
    assert_eq!(g.train.x, f.train.x);
}

#[test]
fn archives_read_like_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    colour_tree(&root);
    let want = read_image_folder(&root, "train", "test").unwrap();
    for (name, prefix, gzip) in [
        ("a.tar", "", false),
        ("b.tar.gz", "", true),
        ("c.tar", "cifar-like", false),
        ("d.tar.gz", "cifar-like", true),
    ] {
        let p = tmp.path().join(name);
        archive(&root, &p, prefix, gzip);
        let got = read_image_folder(&p, "train", "test").unwrap();
        assert_eq!(got.classes, want.classes, "{name}");
        assert_eq!(got.train.x, want.train.x, "{name}");
        assert_eq!(got.train.y, want.train.y, "{name}");
        assert_eq!(got.test.x, want.test.x, "{name}");
        assert_eq!(got.test.y, want.test.y, "{name}");
    }
}

#[test]
fn jpeg_and_another_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    for (k, p) in [
        (0, "train/b/0.jpg"),
        (1, "train/a/0.jpeg"),
        (2, "valid/b/0.JPG"),
    ] {
        save_rgb(&tmp.path().join(p), k, 8, 8);
    }
    let f = read_image_folder(tmp.path(), "train", "valid").unwrap();
    assert_eq!((f.train.y.clone(), f.test.y.clone()), (vec![0, 1], vec![1]));
    // JPEG is lossy: close to the pixels written, not equal.
    let want = chw(1, 8, 8);
    let err = f
        .train
        .x
        .row(0)
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / want.len() as f32;
    assert!(err < 0.05, "mean absolute error {err}");
    let e = read_image_folder(tmp.path(), "train", "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no test split") && e.contains("test"), "{e}");
}

#[test]
fn grayscale_sets_and_mixed_colour() {
    let tmp = tempfile::tempdir().unwrap();
    save_gray(&tmp.path().join("train/a/0.png"), 0, 5, 2);
    save_gray(&tmp.path().join("train/b/0.png"), 1, 5, 2);
    save_gray(&tmp.path().join("test/b/0.png"), 2, 5, 2);
    let f = read_image_folder(tmp.path(), "train", "test").unwrap();
    assert_eq!(
        f.train.image,
        Some(ImageShape {
            channels: 1,
            height: 2,
            width: 5
        })
    );
    assert_eq!(f.train.x[[1, 6]], f32::from(px(1, 1, 1, 0)) / 255.0);
    // A colour image in a grayscale set is refused...
    save_rgb(&tmp.path().join("train/b/1.png"), 3, 5, 2);
    let e = read_image_folder(tmp.path(), "train", "test").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("1.png") && msg.contains("colour image") && msg.contains("train/a/0.png"),
        "{msg}"
    );
    // ...a grayscale image in a colour set is replicated to 3 channels.
    let tmp = tempfile::tempdir().unwrap();
    save_rgb(&tmp.path().join("train/a/0.png"), 0, 5, 2);
    save_gray(&tmp.path().join("train/a/1.png"), 1, 5, 2);
    save_gray(&tmp.path().join("test/a/0.png"), 1, 5, 2);
    let f = read_image_folder(tmp.path(), "train", "test").unwrap();
    assert_eq!(f.train.features(), 30);
    let row = f.train.x.row(1);
    for p in 0..10 {
        assert_eq!(row[p], row[10 + p]);
        assert_eq!(row[p], row[20 + p]);
    }
    assert_eq!(f.test.x.row(0), row);
}

#[test]
fn a_size_mismatch_names_the_first_file_that_differs_and_both_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..40 {
        save_rgb(&tmp.path().join(format!("train/a/{i:02}.png")), i, 6, 4);
    }
    save_rgb(&tmp.path().join("train/a/17.png"), 1, 6, 5);
    save_rgb(&tmp.path().join("train/a/33.png"), 1, 3, 4);
    save_rgb(&tmp.path().join("test/a/0.png"), 1, 6, 4);
    for _ in 0..3 {
        let e = read_image_folder(tmp.path(), "train", "test").unwrap_err();
        assert!(matches!(e, DataError::Format { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("17.png")
                && msg.contains("image is 6x5 pixels (width x height) but the first training image `train/a/00.png` is 6x4"),
            "{msg}"
        );
    }
    // In an archive: the archive, then the member.
    let p = tmp.path().with_extension("tar");
    archive(tmp.path(), &p, "top", false);
    let msg = read_image_folder(&p, "train", "test")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "{}: member `train/a/17.png`: image is 6x5",
            p.display()
        )),
        "{msg}"
    );
    std::fs::remove_file(p).unwrap();
}

/// A small good tree for the malformed variants.
fn small_tree(root: &Path) {
    save_rgb(&root.join("train/a/0.png"), 0, 4, 4);
    save_rgb(&root.join("train/b/0.png"), 1, 4, 4);
    save_rgb(&root.join("test/a/0.png"), 2, 4, 4);
}

fn read_err(path: &Path) -> String {
    let e = read_image_folder(path, "train", "test").unwrap_err();
    e.to_string()
}

#[test]
fn malformed_trees_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    small_tree(root);
    // A file that is no image.
    std::fs::write(root.join("train/b/1.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let msg = read_err(root);
    assert!(
        msg.contains("train/b/1.png") && msg.contains("decode"),
        "{msg}"
    );
    std::fs::remove_file(root.join("train/b/1.png")).unwrap();
    // A truncated PNG.
    let good = std::fs::read(root.join("train/b/0.png")).unwrap();
    std::fs::write(root.join("train/b/1.png"), &good[..good.len() / 2]).unwrap();
    let msg = read_err(root);
    assert!(msg.contains("train/b/1.png"), "{msg}");
    std::fs::remove_file(root.join("train/b/1.png")).unwrap();
    // An empty class folder.
    std::fs::create_dir(root.join("train/c")).unwrap();
    let msg = read_err(root);
    assert!(
        msg.contains("class folder `train/c/` holds no .png"),
        "{msg}"
    );
    std::fs::remove_dir(root.join("train/c")).unwrap();
    // A test class that is not a training class.
    save_rgb(&root.join("test/z/0.png"), 0, 4, 4);
    let msg = read_err(root);
    assert!(
        msg.contains("`test/z/` is not a class of the training split"),
        "{msg}"
    );
    std::fs::remove_dir_all(root.join("test/z")).unwrap();
    // No training split at all; bad split names.
    let msg = read_image_folder(root, "training", "test")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no `training/` folder"), "{msg}");
    for (tr, te) in [("train", "train"), ("a/b", "test"), ("train", "")] {
        let e = read_image_folder(root, tr, te).unwrap_err();
        assert!(matches!(e, DataError::Spec(_)), "{e:?}");
    }
    assert!(matches!(
        read_image_folder(&root.join("missing"), "train", "test"),
        Err(DataError::Io { .. })
    ));
    assert!(read_image_folder(root, "train", "test").is_ok());
}

#[test]
fn truncated_and_corrupt_archives_name_the_archive_and_member() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    small_tree(&root);
    // Enough data that the cut falls inside a member: a larger image first in the archive order.
    save_rgb(&root.join("test/a/1.png"), 3, 64, 64);
    for gzip in [false, true] {
        let p: PathBuf = tmp.path().join(if gzip { "t.tar.gz" } else { "t.tar" });
        archive(&root, &p, "top", gzip);
        let full = std::fs::read(&p).unwrap();
        let mut found_member = false;
        for cut in (1..10).map(|i| full.len() * i / 10) {
            std::fs::write(&p, &full[..cut]).unwrap();
            match read_image_folder(&p, "train", "test") {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(matches!(e, DataError::Format { .. }), "{msg}");
                    assert!(msg.contains(&p.display().to_string()), "{msg}");
                    assert!(
                        msg.contains("corrupt or truncated archive")
                            || msg.contains("truncated archive: member")
                            || msg.contains("no `train/<class>/<image>` member")
                            || msg.contains("holds no")
                            || msg.contains("no test split"),
                        "cut {cut}: {msg}"
                    );
                    found_member |= msg.contains("member `top/test/a/1.png` (tar byte offset ");
                }
                Ok(f) => panic!(
                    "cut at {cut} of {} read {} images",
                    full.len(),
                    f.train.len()
                ),
            }
        }
        assert!(found_member, "some cut falls inside a member (gzip {gzip})");
        // Garbage after a gzip header.
        if gzip {
            let mut bad = full[..20].to_vec();
            bad.extend_from_slice(&[0xAB; 100]);
            std::fs::write(&p, &bad).unwrap();
            let msg = read_err(&p);
            assert!(
                msg.contains("t.tar.gz") && msg.contains("corrupt or truncated"),
                "{msg}"
            );
        }
    }
    // Not an archive at all.
    let p = tmp.path().join("x.tar");
    std::fs::write(&p, vec![7u8; 3000]).unwrap();
    let msg = read_err(&p);
    assert!(msg.contains("x.tar"), "{msg}");
    // Two top directories with a training split.
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all("one", &root).unwrap();
    b.append_dir_all("two", &root).unwrap();
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    let msg = read_err(&p);
    assert!(
        msg.contains("several top directories") && msg.contains("one, two"),
        "{msg}"
    );
}

#[test]
fn decoding_rows_gives_the_rows_of_the_full_read() {
    let tmp = tempfile::tempdir().unwrap();
    colour_tree(tmp.path());
    let full = read_image_folder(tmp.path(), "train", "test").unwrap();
    let set = FolderSet::open(tmp.path(), "train", None).unwrap();
    let r = set.reference().unwrap();
    assert_eq!(set.train_labels(), full.train.y);
    let some = set.train_rows(&[1, 3], r).unwrap();
    assert_eq!(some.x.row(0), full.train.x.row(1));
    assert_eq!(some.x.row(1), full.train.x.row(3));
    assert_eq!(some.y, vec![0, 1]);
    assert!(set.train_rows(&[4], r).is_err());
}
