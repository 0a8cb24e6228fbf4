//! The data sets `fedsim data fetch` knows: where each is downloaded from, the SHA-256 and size of
//! every download, and where it goes under the data root ([`crate::root`]) in the layout the loaders
//! read. Pure data: the downloading itself lives in the `fedsim` binary, so this crate needs no
//! network code.
//!
//! Where the digests come from (none could be checked against a download here, which has no
//! network):
//! - MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and SVHN: the SHA-256 and sizes that TensorFlow
//!   Datasets records for these exact URLs (`tensorflow_datasets/url_checksums/{mnist,
//!   fashion_mnist,cifar10,cifar100,svhn_cropped}.txt`). For MNIST, torchvision's published md5 of
//!   the same `.gz` files (`torchvision/datasets/mnist.py`) and sizes agree with the mirrors listed.
//! - MNIST's uncompressed files ([`RemoteFile::content_sha256`]): computed here from the development
//!   copy, whose uncompressed md5s are the widely published ones (`6bbc9ace…` for
//!   `train-images-idx3-ubyte`), and the same SHA-256 values appear in several public projects.
//! - LIBSVM (no digest is published by the LIBSVM site): the SHA-256 of the text files as recorded
//!   in the development copy's README (`shared/data/README.md`); a9a's, mushrooms' and w8a's also
//!   appear in public code that pins the same downloads; phishing's rests on that copy alone.

use crate::DataSpec;

/// One data set: a name for `fedsim data fetch NAME` and the files that make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSet {
    /// The name on the command line (`mnist`, `a9a`).
    pub name: &'static str,
    /// What a scenario writes to use it (`dir = "mnist"`, `path = "libsvm/a9a.txt.gz"`): the
    /// folder or file under the data root.
    pub scenario_path: &'static str,
    /// The downloads.
    pub files: &'static [RemoteFile],
}

/// One download and how it is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile {
    /// Addresses of the same bytes, tried in order.
    pub urls: &'static [&'static str],
    /// Size of the download in bytes.
    pub size: u64,
    /// SHA-256 of the download, lowercase hex.
    pub sha256: &'static str,
    /// SHA-256 of the decompressed content, for a file installed gzip-compressed: a copy that was
    /// recompressed, or stored uncompressed (the loaders read both), is recognised by it.
    pub content_sha256: Option<&'static str>,
    /// How the download becomes the installed file(s).
    pub install: Install,
    /// Where it goes, relative to the data root: the file, or the folder an archive unpacks to.
    pub dest: &'static str,
    /// For an archive: the files the loaders need in `dest`.
    pub members: &'static [&'static str],
}

impl RemoteFile {
    /// The download's file name (the last segment of its first address).
    pub fn file_name(&self) -> &'static str {
        self.urls
            .first()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or(self.dest)
    }
}

/// How a download is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Stored as downloaded.
    Keep,
    /// Text stored gzip-compressed (LIBSVM files: a quarter of the size; the loaders detect gzip).
    Gzip,
    /// A `.tar.gz` unpacked into the parent folder of `dest` (CIFAR: `cifar10/cifar-10-batches-bin/`);
    /// the archive itself is not kept.
    UnpackTarGz,
}

/// An MNIST file: torchvision's mirror, then TensorFlow Datasets'; LeCun's own site (last) is the
/// canonical address but often refuses downloads. All three serve the same bytes.
macro_rules! mnist_file {
    ($name:literal, $size:literal, $sha:literal, $content:literal) => {
        RemoteFile {
            urls: &[
                concat!("https://ossci-datasets.s3.amazonaws.com/mnist/", $name),
                concat!("https://storage.googleapis.com/cvdf-datasets/mnist/", $name),
                concat!("http://yann.lecun.com/exdb/mnist/", $name),
            ],
            size: $size,
            sha256: $sha,
            content_sha256: Some($content),
            install: Install::Keep,
            dest: concat!("mnist/", $name),
            members: &[],
        }
    };
}

/// A Fashion-MNIST file (Zalando's own address).
macro_rules! fashion_file {
    ($name:literal, $size:literal, $sha:literal) => {
        RemoteFile {
            urls: &[concat!(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                $name
            )],
            size: $size,
            sha256: $sha,
            content_sha256: None,
            install: Install::Keep,
            dest: concat!("fashion_mnist/", $name),
            members: &[],
        }
    };
}

/// A LIBSVM binary-classification text file, stored as `libsvm/NAME.txt.gz`.
macro_rules! libsvm_set {
    ($name:literal, $size:literal, $sha:literal) => {
        DataSet {
            name: $name,
            scenario_path: concat!("libsvm/", $name, ".txt.gz"),
            files: &[RemoteFile {
                urls: &[concat!(
                    "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/",
                    $name
                )],
                size: $size,
                sha256: $sha,
                content_sha256: Some($sha),
                install: Install::Gzip,
                dest: concat!("libsvm/", $name, ".txt.gz"),
                members: &[],
            }],
        }
    };
}

/// Every data set `fedsim data fetch` knows, in the order `fedsim data list` shows them.
pub const DATA_SETS: &[DataSet] = &[
    DataSet {
        name: "mnist",
        scenario_path: "mnist",
        files: &[
            mnist_file!(
                "train-images-idx3-ubyte.gz",
                9_912_422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
            ),
            mnist_file!(
                "train-labels-idx1-ubyte.gz",
                28_881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
            ),
            mnist_file!(
                "t10k-images-idx3-ubyte.gz",
                1_648_877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
            ),
            mnist_file!(
                "t10k-labels-idx1-ubyte.gz",
                4_542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            ),
        ],
    },
    DataSet {
        name: "fashion_mnist",
        scenario_path: "fashion_mnist",
        files: &[
            fashion_file!(
                "train-images-idx3-ubyte.gz",
                26_421_880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            fashion_file!(
                "train-labels-idx1-ubyte.gz",
                29_515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            fashion_file!(
                "t10k-images-idx3-ubyte.gz",
                4_422_102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            fashion_file!(
                "t10k-labels-idx1-ubyte.gz",
                5_148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        ],
    },
    DataSet {
        name: "cifar10",
        scenario_path: "cifar10",
        files: &[RemoteFile {
            urls: &["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"],
            size: 170_052_171,
            sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            content_sha256: None,
            install: Install::UnpackTarGz,
            dest: "cifar10/cifar-10-batches-bin",
            members: &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
                "test_batch.bin",
            ],
        }],
    },
    DataSet {
        name: "cifar100",
        scenario_path: "cifar100",
        files: &[RemoteFile {
            urls: &["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"],
            size: 168_513_733,
            sha256: "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
            content_sha256: None,
            install: Install::UnpackTarGz,
            dest: "cifar100/cifar-100-binary",
            members: &["train.bin", "test.bin"],
        }],
    },
    DataSet {
        name: "svhn",
        scenario_path: "svhn",
        files: &[
            RemoteFile {
                urls: &["http://ufldl.stanford.edu/housenumbers/train_32x32.mat"],
                size: 182_040_794,
                sha256: "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
                content_sha256: None,
                install: Install::Keep,
                dest: "svhn/train_32x32.mat",
                members: &[],
            },
            RemoteFile {
                urls: &["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"],
                size: 64_275_384,
                sha256: "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
                content_sha256: None,
                install: Install::Keep,
                dest: "svhn/test_32x32.mat",
                members: &[],
            },
        ],
    },
    libsvm_set!(
        "a9a",
        2_329_875,
        "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906"
    ),
    libsvm_set!(
        "mushrooms",
        879_712,
        "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538"
    ),
    libsvm_set!(
        "phishing",
        3_620_168,
        "0cf66ef36604c393da9359b2e5d894a2df8aee31fd184633cefa138add2ef08a"
    ),
    libsvm_set!(
        "w8a",
        3_478_238,
        "6a9fa8fd5f524303240a5db07d4b3d4a51e8b7b4b20a914105d8e3e8c81640f2"
    ),
];

/// Names that stand for several data sets on the command line.
pub const GROUPS: &[(&str, &[&str])] = &[("libsvm", &["a9a", "mushrooms", "phishing", "w8a"])];

/// The data set called `name`.
pub fn find(name: &str) -> Option<&'static DataSet> {
    DATA_SETS.iter().find(|s| s.name == name)
}

/// The data set a scenario's `[data]` section reads, when the fetcher knows it: by kind for the image
/// sets, by file name (`a9a`, `a9a.txt.gz`, …) for LIBSVM. Where the scenario puts it does not matter
/// here.
pub fn for_spec(spec: &DataSpec) -> Option<&'static DataSet> {
    let name = match spec {
        DataSpec::Mnist { .. } => "mnist",
        DataSpec::FashionMnist { .. } => "fashion_mnist",
        DataSpec::Cifar10 { .. } => "cifar10",
        DataSpec::Cifar100 { .. } => "cifar100",
        DataSpec::Svhn { .. } => "svhn",
        DataSpec::Libsvm { path, .. } => {
            let file = path.file_name().and_then(|f| f.to_str())?;
            let stem = ["", ".txt.gz", ".gz", ".txt"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext).filter(|s| !s.contains('.')))?;
            return GROUPS[0].1.contains(&stem).then(|| find(stem)).flatten();
        }
        DataSpec::Synthetic { .. }
        | DataSpec::External { .. }
        | DataSpec::Csv { .. }
        | DataSpec::ImageFolder { .. }
        | DataSpec::Leaf { .. } => return None,
    };
    find(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex_and_names_unique() {
        for set in DATA_SETS {
            assert_eq!(DATA_SETS.iter().filter(|s| s.name == set.name).count(), 1);
            assert!(!set.files.is_empty());
            for f in set.files {
                for d in std::iter::once(f.sha256).chain(f.content_sha256) {
                    assert!(
                        d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{}: {d}",
                        set.name
                    );
                }
                assert!(f.dest.starts_with(set.scenario_path), "{}", set.name);
                assert_eq!(f.members.is_empty(), f.install != Install::UnpackTarGz);
                assert!(f.size > 0 && !f.urls.is_empty());
            }
        }
        for (_, members) in GROUPS {
            assert!(members.iter().all(|m| find(m).is_some()));
        }
    }

    #[test]
    fn scenario_specs_map_to_their_data_set() {
        let libsvm = |p: &str| DataSpec::Libsvm {
            path: p.into(),
            test_path: None,
            test_fraction: 0.0,
            features: None,
        };
        let name = |s: &DataSpec| for_spec(s).map(|d| d.name);
        assert_eq!(name(&libsvm("libsvm/a9a.txt.gz")), Some("a9a"));
        assert_eq!(name(&libsvm("/x/w8a")), Some("w8a"));
        assert_eq!(name(&libsvm("w8a.t")), None);
        assert_eq!(name(&libsvm("mine.svm")), None);
        let cifar = DataSpec::Cifar100 {
            dir: "x".into(),
            labels: Default::default(),
            normalize: Default::default(),
        };
        assert_eq!(name(&cifar), Some("cifar100"));
    }
}
