//! The new `[data] kind`s through [`crate::load_federated`] and [`crate::load_hosted`]: scenario keys,
//! normalisation, LEAF's natural split, client processes' shares, and the shared CIFAR-10 JPEG archive.

use std::path::{Path, PathBuf};

use crate::Normalize;
use crate::cifar::{CIFAR_PIXELS, CIFAR10_TEST, CIFAR10_TRAIN};
use crate::partition::{DirichletClientConfig, IidConfig, ShardsConfig};
use crate::{DataError, DataSpec, PartitionSpec, load_federated, load_hosted};

fn spec(text: &str) -> Result<DataSpec, toml::de::Error> {
    toml::from_str(text)
}

#[test]
fn scenario_keys_and_defaults() {
    let s = spec("kind = \"cifar10\"\ndir = \"d\"").unwrap();
    assert_eq!(
        s,
        DataSpec::Cifar10 {
            dir: "d".into(),
            normalize: Normalize::None
        }
    );
    let s =
        spec("kind = \"cifar100\"\ndir = \"d\"\nlabels = \"coarse\"\nnormalize = \"per_channel\"")
            .unwrap();
    assert!(matches!(
        s,
        DataSpec::Cifar100 {
            labels: crate::Cifar100Labels::Coarse,
            normalize: Normalize::PerChannel,
            ..
        }
    ));
    let s = spec("kind = \"image_folder\"\npath = \"x.tar.gz\"").unwrap();
    assert!(
        matches!(&s, DataSpec::ImageFolder { train_split, test_split, .. } if train_split == "train" && test_split == "test")
    );
    let s =
        spec("kind = \"leaf\"\ndir = \"femnist\"\nshape = [1, 28, 28]\nmin_samples = 10").unwrap();
    assert!(matches!(
        s,
        DataSpec::Leaf {
            shape: Some([1, 28, 28]),
            min_samples: 10,
            writer_fraction: 1.0,
            classes: None,
            ..
        }
    ));
    assert!(spec("kind = \"svhn\"\ndir = \"s\"").is_ok());
    for bad in [
        "kind = \"cifar100\"\ndir = \"d\"\nlabels = \"medium\"",
        "kind = \"cifar10\"\ndir = \"d\"\nnormalize = \"global\"",
        "kind = \"svhn\"\ndir = \"s\"\nextra = true",
    ] {
        assert!(spec(bad).is_err(), "{bad}");
    }
    // MNIST without `normalize` resolves as before the key existed; with it, the key is written.
    let m = spec("kind = \"mnist\"\ndir = \"m\"").unwrap();
    assert_eq!(
        toml::to_string(&m).unwrap(),
        "kind = \"mnist\"\ndir = \"m\"\n"
    );
    let m = spec("kind = \"mnist\"\ndir = \"m\"\nnormalize = \"per_channel\"").unwrap();
    assert!(
        toml::to_string(&m)
            .unwrap()
            .contains("normalize = \"per_channel\"")
    );
    assert_eq!(m.normalize(), Normalize::PerChannel);
    let c = spec("kind = \"cifar10\"\ndir = \"d\"").unwrap();
    assert!(
        toml::to_string(&c)
            .unwrap()
            .contains("normalize = \"none\"")
    );
}

/// A CIFAR-10 directory of `per_batch` records per training batch and 7 test records.
fn cifar10_dir(dir: &Path, per_batch: usize) {
    let record = |label: usize, seed: usize| {
        let mut r = vec![label as u8];
        r.extend((0..CIFAR_PIXELS).map(|i| ((i * 7 + seed * 13) % 256) as u8));
        r
    };
    for (b, name) in CIFAR10_TRAIN.iter().enumerate() {
        let recs: Vec<u8> = (0..per_batch)
            .flat_map(|i| record((b + i * 3) % 10, b * 100 + i))
            .collect();
        std::fs::write(dir.join(name), recs).unwrap();
    }
    let test: Vec<u8> = (0..7).flat_map(|i| record(i, 999 + i)).collect();
    std::fs::write(dir.join(CIFAR10_TEST), test).unwrap();
}

fn cifar10(dir: &Path, normalize: Normalize) -> DataSpec {
    DataSpec::Cifar10 {
        dir: dir.to_path_buf(),
        normalize,
    }
}

/// Asserts that `load_hosted` gives the rows `load_federated` gives those clients.
fn assert_hosted_matches(data: &DataSpec, spec: &PartitionSpec, clients: usize, hosted: &[usize]) {
    let full = load_federated(data, spec, clients, 3).unwrap();
    let want = full.hosted(hosted).unwrap();
    let got = load_hosted(data, spec, clients, 3, hosted).unwrap();
    assert_eq!(got.train.x, want.train.x);
    assert_eq!(got.train.y, want.train.y);
    assert_eq!(got.train.image, want.train.image);
    assert_eq!(got.train.num_classes, want.train.num_classes);
    for &k in hosted {
        assert_eq!(got.client(k), want.client(k));
    }
    assert!(load_hosted(data, spec, clients, 3, &[clients]).is_err());
}

#[test]
fn decoded_data_is_mapped_from_the_cache_and_decoded_again_when_the_source_changes() {
    let tmp = tempfile::tempdir().unwrap();
    cifar10_dir(tmp.path(), 4);
    let data = cifar10(tmp.path(), Normalize::PerChannel);
    let iid = PartitionSpec::new(IidConfig {});
    let first = load_federated(&data, &iid, 4, 2).unwrap();
    assert!(!first.train.x.is_view(), "decoded the first time");
    let cached: Vec<_> = std::fs::read_dir(tmp.path().join(".fedsim-cache"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "one cache file next to the source");
    let second = load_federated(&data, &iid, 4, 2).unwrap();
    assert!(
        second.train.x.is_view() && second.test.x.is_view(),
        "mapped the second time"
    );
    assert_eq!(second.train.x, first.train.x);
    assert_eq!(second.test.x, first.test.x);
    assert_eq!(
        (&second.train.y, &second.test.y),
        (&first.train.y, &first.test.y)
    );
    assert_eq!(second.normalization, first.normalization);
    assert_eq!(second.partition, first.partition);
    // A client process reads its normalised rows from the cache too (not the whole set).
    let hosted = crate::load_hosted(&data, &iid, 4, 2, &[0, 2]).unwrap();
    assert!(
        !hosted.train.x.is_view(),
        "hosted rows are read, not mapped"
    );
    let want = first.hosted(&[0, 2]).unwrap();
    assert_eq!(
        (&hosted.train.x, &hosted.train.y),
        (&want.train.x, &want.train.y)
    );
    assert_eq!(hosted.client(2), want.client(2));
    // Another setting is another cache entry.
    let plain = load_federated(&cifar10(tmp.path(), Normalize::None), &iid, 4, 2).unwrap();
    assert!(!plain.train.x.is_view());
    // A client process's hosted rows are read from the cache (copied, so the rest of the file never
    // counts in the process's memory), the same as from a full load.
    let hosted =
        crate::load_hosted(&cifar10(tmp.path(), Normalize::None), &iid, 4, 2, &[1, 3]).unwrap();
    assert!(
        !hosted.train.x.is_view(),
        "hosted rows are read, not mapped"
    );
    let want = plain.hosted(&[1, 3]).unwrap();
    assert_eq!(
        (&hosted.train.x, &hosted.train.y),
        (&want.train.x, &want.train.y)
    );
    assert_eq!(hosted.client(3), want.client(3));
    // A changed source is decoded again, never served stale.
    cifar10_dir(tmp.path(), 5);
    let third = load_federated(&data, &iid, 4, 2).unwrap();
    assert!(!third.train.x.is_view());
    assert_eq!(third.train.len(), 25);
    // A damaged cache file is decoded again and rewritten.
    // (Replaced by rename, as the cache itself does: earlier loads still map the old file.)
    let files: Vec<_> = std::fs::read_dir(tmp.path().join(".fedsim-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for path in files {
        let damaged = path.with_extension("damaged");
        std::fs::write(&damaged, b"damaged").unwrap();
        std::fs::rename(&damaged, &path).unwrap();
    }
    let fourth = load_federated(&data, &iid, 4, 2).unwrap();
    assert!(!fourth.train.x.is_view());
    assert_eq!(fourth.train.x, third.train.x);
    assert!(load_federated(&data, &iid, 4, 2).unwrap().train.x.is_view());
}

#[test]
fn cifar10_load_normalise_and_host() {
    let tmp = tempfile::tempdir().unwrap();
    cifar10_dir(tmp.path(), 20);
    let iid = PartitionSpec::new(IidConfig {});
    let plain = load_federated(&cifar10(tmp.path(), Normalize::None), &iid, 5, 1).unwrap();
    assert_eq!((plain.train.len(), plain.test.len()), (100, 7));
    assert!(plain.normalization.is_none());
    let norm = load_federated(&cifar10(tmp.path(), Normalize::PerChannel), &iid, 5, 1).unwrap();
    let stats = norm.normalization.clone().unwrap();
    assert_eq!(stats.mean.len(), 3);
    let stats_again = crate::ChannelStats::compute(&plain.train.x, 3).unwrap();
    assert_eq!(stats, stats_again);
    let v = plain.test.x[[2, 1500]];
    let want = ((f64::from(v) - stats.mean[1]) / stats.std[1]) as f32;
    assert_eq!(norm.test.x[[2, 1500]], want);
    assert_eq!(norm.partition, plain.partition);
    for normalize in [Normalize::None, Normalize::PerChannel] {
        let data = cifar10(tmp.path(), normalize);
        assert_hosted_matches(&data, &iid, 5, &[4, 1]);
        let shards = PartitionSpec::new(ShardsConfig {
            shards_per_client: 2,
        });
        assert_hosted_matches(&data, &shards, 10, &[0, 9, 3]);
    }
    // Natural is refused before any file is read.
    let e = load_federated(
        &cifar10(Path::new("/nonexistent"), Normalize::None),
        &PartitionSpec::default(),
        4,
        0,
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::Spec(_)) && e.to_string().contains("no natural split"),
        "{e}"
    );
}

#[test]
fn svhn_and_image_folder_hosts_hold_the_rows_of_the_full_load() {
    use crate::matv5::testutil::*;
    let tmp = tempfile::tempdir().unwrap();
    let o = Order(false);
    let file = |n: usize, seed: u8| {
        let x: Vec<u8> = (0..n * 3 * 4 * 4)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        let y: Vec<u8> = (0..n)
            .flat_map(|i| ((i % 10 + 1) as f64).to_le_bytes())
            .collect();
        [
            header(o),
            compressed(
                o,
                &matrix(o, "X", UINT8, &[4, 4, 3, n as u32], TY_UINT8, &x),
            ),
            compressed(o, &matrix(o, "y", DOUBLE, &[n as u32, 1], TY_DOUBLE, &y)),
        ]
        .concat()
    };
    std::fs::write(tmp.path().join(crate::svhn::SVHN_TRAIN), file(40, 3)).unwrap();
    std::fs::write(tmp.path().join(crate::svhn::SVHN_TEST), file(5, 7)).unwrap();
    let svhn = DataSpec::Svhn {
        dir: tmp.path().to_path_buf(),
        normalize: Normalize::None,
    };
    let dirichlet = PartitionSpec::new(DirichletClientConfig { alpha: 0.5 });
    assert_hosted_matches(&svhn, &dirichlet, 6, &[5, 0, 2]);
    let fed = load_federated(&svhn, &dirichlet, 6, 0).unwrap();
    assert_eq!(
        (fed.train.len(), fed.test.len(), fed.train.y[9]),
        (40, 5, 0)
    );

    let root = tmp.path().join("folder");
    for i in 0..30u32 {
        let img = image::RgbImage::from_fn(5, 3, |x, y| {
            image::Rgb([(i * 8) as u8, x as u8 * 20, y as u8 * 50])
        });
        let class = ["plane", "car", "bird"][i as usize % 3];
        let split = if i < 24 { "train" } else { "test" };
        let p = root.join(format!("{split}/{class}/{i:03}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        img.save(&p).unwrap();
    }
    for normalize in [Normalize::None, Normalize::PerChannel] {
        let folder = DataSpec::ImageFolder {
            path: root.clone(),
            train_split: "train".into(),
            test_split: "test".into(),
            normalize,
        };
        assert_hosted_matches(&folder, &PartitionSpec::new(IidConfig {}), 4, &[3, 1]);
    }
    // A client process refuses bad split names as the full load does.
    let folder = DataSpec::ImageFolder {
        path: root,
        train_split: "train".into(),
        test_split: "train".into(),
        normalize: Normalize::None,
    };
    let e = load_hosted(&folder, &PartitionSpec::new(IidConfig {}), 4, 0, &[0]).unwrap_err();
    assert!(matches!(e, DataError::Spec(_)), "{e}");
}

#[test]
fn leaf_natural_split_makes_each_writer_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |split: &str, users: &[(&str, usize)]| {
        let d = tmp.path().join(split);
        std::fs::create_dir_all(&d).unwrap();
        let mut data = serde_json::Map::new();
        for (u, n) in users {
            let x: Vec<Vec<f32>> = (0..*n).map(|i| vec![i as f32 / 10.0; 4]).collect();
            let y: Vec<u32> = (0..*n as u32).map(|i| i % 3).collect();
            data.insert(u.to_string(), serde_json::json!({"x": x, "y": y}));
        }
        let v = serde_json::json!({
            "users": users.iter().map(|u| u.0).collect::<Vec<_>>(),
            "num_samples": users.iter().map(|u| u.1).collect::<Vec<_>>(),
            "user_data": data,
        });
        std::fs::write(d.join("data.json"), v.to_string()).unwrap();
    };
    write("train", &[("w1", 3), ("w2", 1), ("w3", 6), ("w4", 2)]);
    write("test", &[("w1", 1), ("w2", 1), ("w3", 1), ("w4", 1)]);
    let leaf = |min_samples, normalize| DataSpec::Leaf {
        dir: tmp.path().to_path_buf(),
        min_samples,
        writer_fraction: 1.0,
        shape: Some([1, 2, 2]),
        classes: None,
        normalize,
    };
    let nat = PartitionSpec::default();
    let fed = load_federated(&leaf(2, Normalize::None), &nat, 3, 0).unwrap();
    assert_eq!(fed.train.len(), 11);
    assert_eq!(
        (0..3)
            .map(|k| fed.partition.client_len(k))
            .collect::<Vec<_>>(),
        vec![3, 6, 2]
    );
    assert_eq!(
        fed.test.len(),
        3,
        "the dropped writer's test sample goes too"
    );
    let e = load_federated(&leaf(2, Normalize::None), &nat, 4, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("3 writers are kept") && e.contains("set clients = 3"),
        "{e}"
    );
    // Another scheme re-splits the kept writers' samples among `clients`.
    let iid = load_federated(
        &leaf(0, Normalize::None),
        &PartitionSpec::new(IidConfig {}),
        4,
        0,
    )
    .unwrap();
    assert_eq!(
        (iid.partition.num_clients(), iid.partition.total()),
        (4, 12)
    );
    // Hosted: the writers' own rows; normalisation follows the image shape.
    let h = load_hosted(&leaf(0, Normalize::PerChannel), &nat, 4, 0, &[2]).unwrap();
    assert_eq!(h.train.len(), 6);
    let full = load_federated(&leaf(0, Normalize::PerChannel), &nat, 4, 0).unwrap();
    assert!(full.normalization.is_some());
    assert_eq!(h.train.x, full.hosted(&[2]).unwrap().train.x);
}

/// The shared archive: `$FEDSIM_DATA/cifar10/cifar10_jpeg.tar.gz` (a relative `FEDSIM_DATA` is taken
/// from the workspace root, as `FEDSIM_DATA=../shared/data`), else `../shared/data/...` from the
/// workspace root.
fn shared_cifar10() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = match std::env::var_os("FEDSIM_DATA") {
        Some(d) => workspace.join(d),
        None => workspace.join("../shared/data"),
    };
    base.join("cifar10/cifar10_jpeg.tar.gz")
}

#[test]
#[ignore = "reads the shared CIFAR-10 archive ($FEDSIM_DATA/cifar10, default ../shared/data); .ci/run runs it"]
fn real_cifar10_jpeg_archive() {
    let path = shared_cifar10();
    assert!(
        path.is_file(),
        "the shared CIFAR-10 archive is missing: {} (set FEDSIM_DATA to the folder holding cifar10/)",
        path.display()
    );
    let t0 = std::time::Instant::now();
    let f = crate::read_image_folder(&path, "train", "test").unwrap();
    let elapsed = t0.elapsed();
    println!("read {} in {elapsed:?}", path.display());
    assert_eq!(
        f.classes,
        [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck"
        ]
    );
    assert_eq!((f.train.len(), f.test.len()), (50_000, 10_000));
    assert_eq!(f.train.class_counts(), vec![5_000; 10]);
    assert_eq!(f.test.class_counts(), vec![1_000; 10]);
    assert_eq!(
        f.train.image,
        Some(fedsim_types::ImageShape {
            channels: 3,
            height: 32,
            width: 32
        })
    );
    let stats = crate::ChannelStats::compute(&f.train.x, 3).unwrap();
    println!(
        "channel means {:?}, standard deviations {:?}",
        stats.mean, stats.std
    );
    // The shared README's means (0.4913 / 0.4821 / 0.4465) come from PIL (libjpeg-turbo). The `image`
    // crate decodes JPEG with zune-jpeg, whose 4:2:0 chroma upsampling rounds half up twice: Cb and Cr
    // come out about 0.25 levels high, which moves the means by +0.0010 / -0.0008 / +0.0014. Hence
    // 0.0015 around the README's figures, and a tight check of what this decoder gives.
    for ((m, pil), ours) in stats
        .mean
        .iter()
        .zip([0.4913, 0.4821, 0.4465])
        .zip([0.49228, 0.48132, 0.44788])
    {
        assert!((m - pil).abs() <= 0.0015, "{:?}", stats.mean);
        assert!((m - ours).abs() <= 0.0001, "{:?}", stats.mean);
    }
}
