//! CIFAR-10 and CIFAR-100 in the original binary format (Krizhevsky 2009).
//!
//! A file is a sequence of fixed-size records, without a header. CIFAR-10 (`data_batch_1.bin` …
//! `data_batch_5.bin`, `test_batch.bin`): 1 label byte (0–9), then 3,072 pixel bytes. CIFAR-100
//! (`train.bin`, `test.bin`): a coarse label byte (0–19), a fine label byte (0–99), then 3,072 pixel
//! bytes. The pixels are the red, green and blue 32×32 planes, each row-major: already channel-major
//! (`C×H×W`), as PyTorch expects. Pixels are scaled to [0, 1].

use std::path::{Path, PathBuf};

use fedsim_types::ImageShape;

use crate::Cifar100Labels;
use crate::raw::RawImages;
use crate::util::{format_err, io_err};
use crate::{DataError, Dataset};

/// Shape of a CIFAR image.
pub const CIFAR_SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};

/// Pixel bytes of a CIFAR record.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// File names of the CIFAR-10 training batches.
pub const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// File name of the CIFAR-10 test batch.
pub const CIFAR10_TEST: &str = "test_batch.bin";
/// File name of the CIFAR-100 training set.
pub const CIFAR100_TRAIN: &str = "train.bin";
/// File name of the CIFAR-100 test set.
pub const CIFAR100_TEST: &str = "test.bin";

/// Folder the CIFAR-10 binary archive unpacks to; looked in when `dir` itself lacks the files.
const CIFAR10_SUBDIR: &str = "cifar-10-batches-bin";
/// Folder the CIFAR-100 binary archive unpacks to.
const CIFAR100_SUBDIR: &str = "cifar-100-binary";

/// Which CIFAR variant a file holds: its label bytes and class counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    /// One label byte, 10 classes.
    Cifar10,
    /// Coarse then fine label byte; the given one is the class.
    Cifar100(Cifar100Labels),
}

impl CifarKind {
    /// Label bytes before the pixels of each record.
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100(_) => 2,
        }
    }

    /// Bytes per record.
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    /// Number of classes of the chosen label.
    pub fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100(Cifar100Labels::Fine) => 100,
            CifarKind::Cifar100(Cifar100Labels::Coarse) => 20,
        }
    }

    /// Position within a record of the label byte used as the class, and the class count that byte
    /// must stay below (the coarse byte is checked even when the fine label is used).
    fn label_checks(self) -> Vec<(usize, usize, &'static str)> {
        match self {
            CifarKind::Cifar10 => vec![(0, 10, "label")],
            CifarKind::Cifar100(_) => vec![(0, 20, "coarse label"), (1, 100, "fine label")],
        }
    }

    fn class_byte(self) -> usize {
        match self {
            CifarKind::Cifar100(Cifar100Labels::Fine) => 1,
            _ => 0,
        }
    }
}

/// Reads the records of CIFAR binary files, in order, as one set of images.
///
/// Errors: [`DataError::Io`] for a missing file; [`DataError::Format`] naming the file and byte offset
/// for a size that is not a whole number of records (a truncated file) or a label out of range.
pub(crate) fn read_cifar_raw(files: &[PathBuf], kind: CifarKind) -> Result<RawImages, DataError> {
    let rec = kind.record_len();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        if bytes.is_empty() {
            return Err(format_err(path, "empty file: no CIFAR records"));
        }
        if bytes.len() % rec != 0 {
            let whole = bytes.len() / rec;
            return Err(format_err(
                path,
                format!(
                    "truncated: {} bytes is not a whole number of {rec}-byte records; record {whole} at byte \
                     offset {} is cut short after {} bytes",
                    bytes.len(),
                    whole * rec,
                    bytes.len() - whole * rec
                ),
            ));
        }
        let checks = kind.label_checks();
        pixels.reserve(bytes.len() / rec * CIFAR_PIXELS);
        for (i, record) in bytes.chunks_exact(rec).enumerate() {
            for &(at, limit, what) in &checks {
                if usize::from(record[at]) >= limit {
                    return Err(format_err(
                        path,
                        format!(
                            "{what} {} of record {i} (byte offset {}) is not below {limit}",
                            record[at],
                            i * rec + at
                        ),
                    ));
                }
            }
            labels.push(u32::from(record[kind.class_byte()]));
            pixels.extend_from_slice(&record[kind.label_bytes()..]);
        }
    }
    Ok(RawImages {
        pixels,
        labels,
        num_classes: kind.num_classes(),
        shape: CIFAR_SHAPE,
    })
}

/// The directory holding the files: `dir`, or its archive subfolder when only that holds `probe`.
fn files_dir(dir: &Path, sub: &str, probe: &str) -> PathBuf {
    let nested = dir.join(sub);
    if !dir.join(probe).is_file() && nested.join(probe).is_file() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// The training and test files of a CIFAR variant in `dir`.
pub(crate) fn cifar_files(dir: &Path, kind: CifarKind) -> (Vec<PathBuf>, PathBuf) {
    match kind {
        CifarKind::Cifar10 => {
            let d = files_dir(dir, CIFAR10_SUBDIR, CIFAR10_TRAIN[0]);
            (
                CIFAR10_TRAIN.iter().map(|f| d.join(f)).collect(),
                d.join(CIFAR10_TEST),
            )
        }
        CifarKind::Cifar100(_) => {
            let d = files_dir(dir, CIFAR100_SUBDIR, CIFAR100_TRAIN);
            (vec![d.join(CIFAR100_TRAIN)], d.join(CIFAR100_TEST))
        }
    }
}

/// Reads CIFAR-10 or CIFAR-100 from `dir` (or its archive subfolder): returns `(train, test)`, pixels
/// scaled to [0, 1], rows `3×32×32` channel-major.
pub fn read_cifar_dir(dir: &Path, kind: CifarKind) -> Result<(Dataset, Dataset), DataError> {
    let (train_files, test_file) = cifar_files(dir, kind);
    let train = read_cifar_raw(&train_files, kind)?.to_dataset()?;
    let test = read_cifar_raw(&[test_file], kind)?.to_dataset()?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record: label bytes, then pixels `(seed + i) mod 256`.
    fn record(labels: &[u8], seed: u8) -> Vec<u8> {
        let mut r = labels.to_vec();
        r.extend((0..CIFAR_PIXELS).map(|i| (i as u8).wrapping_add(seed)));
        r
    }

    fn write(dir: &Path, name: &str, records: &[Vec<u8>]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, records.concat()).unwrap();
        p
    }

    fn cifar10_dir(dir: &Path) {
        for (b, name) in CIFAR10_TRAIN.iter().enumerate() {
            let recs: Vec<Vec<u8>> = (0..3)
                .map(|i| record(&[((b * 3 + i) % 10) as u8], (b * 3 + i) as u8))
                .collect();
            write(dir, name, &recs);
        }
        write(dir, CIFAR10_TEST, &[record(&[9], 200), record(&[0], 201)]);
    }

    #[test]
    fn cifar10_reads_batches_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        cifar10_dir(tmp.path());
        let (train, test) = read_cifar_dir(tmp.path(), CifarKind::Cifar10).unwrap();
        assert_eq!((train.len(), test.len()), (15, 2));
        assert_eq!(train.num_classes, 10);
        assert_eq!(train.image, Some(CIFAR_SHAPE));
        assert_eq!(
            train.y,
            (0..15).map(|i| i % 10).collect::<Vec<u32>>(),
            "records in file then batch order"
        );
        // Record 4 has seed 4: its pixel j is (j + 4) mod 256, channel-major as stored.
        assert_eq!(train.x[[4, 0]], 4.0 / 255.0);
        assert_eq!(train.x[[4, 1024]], 4.0 / 255.0); // first green pixel: 1024 mod 256 = 0
        assert_eq!(train.x[[4, 300]], 48.0 / 255.0);
        assert_eq!(test.y, vec![9, 0]);
        assert_eq!(test.x[[1, 0]], 201.0 / 255.0);
        assert!(train.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn cifar10_in_the_archive_subfolder() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join(CIFAR10_SUBDIR);
        std::fs::create_dir(&sub).unwrap();
        cifar10_dir(&sub);
        let (train, _) = read_cifar_dir(tmp.path(), CifarKind::Cifar10).unwrap();
        assert_eq!(train.len(), 15);
    }

    #[test]
    fn cifar100_fine_and_coarse() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            CIFAR100_TRAIN,
            &[
                record(&[3, 99], 0),
                record(&[19, 0], 1),
                record(&[0, 42], 2),
            ],
        );
        write(tmp.path(), CIFAR100_TEST, &[record(&[7, 70], 9)]);
        let (train, test) =
            read_cifar_dir(tmp.path(), CifarKind::Cifar100(Cifar100Labels::Fine)).unwrap();
        assert_eq!((train.y.clone(), train.num_classes), (vec![99, 0, 42], 100));
        assert_eq!(test.y, vec![70]);
        assert_eq!(train.x[[1, 0]], 1.0 / 255.0);
        let (train, test) =
            read_cifar_dir(tmp.path(), CifarKind::Cifar100(Cifar100Labels::Coarse)).unwrap();
        assert_eq!((train.y, train.num_classes), (vec![3, 19, 0], 20));
        assert_eq!(test.y, vec![7]);
    }

    #[test]
    fn truncated_and_malformed_files_name_the_file_and_offset() {
        let tmp = tempfile::tempdir().unwrap();
        cifar10_dir(tmp.path());
        // Batch 3 cut in its second record.
        let p = tmp.path().join(CIFAR10_TRAIN[2]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..3073 + 100]).unwrap();
        let e = read_cifar_dir(tmp.path(), CifarKind::Cifar10).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("data_batch_3.bin")
                && msg.contains("record 1 at byte offset 3073 is cut short after 100 bytes"),
            "{msg}"
        );
        // A label out of range in the third record.
        let mut recs = vec![record(&[1], 0), record(&[2], 0), record(&[10], 0)];
        write(tmp.path(), CIFAR10_TRAIN[2], &recs);
        let msg = read_cifar_dir(tmp.path(), CifarKind::Cifar10)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("data_batch_3.bin")
                && msg.contains("label 10 of record 2 (byte offset 6146) is not below 10"),
            "{msg}"
        );
        recs[2] = record(&[3], 0);
        write(tmp.path(), CIFAR10_TRAIN[2], &recs);
        assert!(read_cifar_dir(tmp.path(), CifarKind::Cifar10).is_ok());
        // Empty and missing files.
        write(tmp.path(), CIFAR10_TEST, &[]);
        let msg = read_cifar_dir(tmp.path(), CifarKind::Cifar10)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("test_batch.bin") && msg.contains("empty"),
            "{msg}"
        );
        std::fs::remove_file(tmp.path().join(CIFAR10_TRAIN[4])).unwrap();
        let e = read_cifar_dir(tmp.path(), CifarKind::Cifar10).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("data_batch_5.bin"));
        // CIFAR-100: a coarse label of 20, a fine label of 100.
        write(tmp.path(), CIFAR100_TEST, &[record(&[1, 1], 0)]);
        for (labels, want) in [
            (
                [20u8, 5u8],
                "coarse label 20 of record 1 (byte offset 3074) is not below 20",
            ),
            (
                [5, 100],
                "fine label 100 of record 1 (byte offset 3075) is not below 100",
            ),
        ] {
            write(
                tmp.path(),
                CIFAR100_TRAIN,
                &[record(&[0, 0], 0), record(&labels, 0)],
            );
            let msg = read_cifar_dir(tmp.path(), CifarKind::Cifar100(Cifar100Labels::Fine))
                .unwrap_err()
                .to_string();
            assert!(msg.contains("train.bin") && msg.contains(want), "{msg}");
        }
        // A CIFAR-10 file read as CIFAR-100: 3073-byte records do not divide.
        let p = write(tmp.path(), "c10.bin", &[record(&[1], 0), record(&[1], 0)]);
        let msg = read_cifar_raw(&[p], CifarKind::Cifar100(Cifar100Labels::Fine))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("c10.bin") && msg.contains("3074-byte records"),
            "{msg}"
        );
    }
}
