//! LEAF reader tests on JSON files written by the tests, in LEAF's layout.

use std::path::Path;

use serde_json::json;

use super::*;

/// Writes `value` as `dir/split/name`.
fn write(dir: &Path, split: &str, name: &str, text: &str) {
    let d = dir.join(split);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), text).unwrap();
}

/// A LEAF file of `users` (name, samples) with 4 features: writer `u` sample `i` has features
/// `[u, i, 0.5, 1]` (u = the writer's number in its name) and label `(u + i) mod 5`.
fn file(users: &[(&str, usize)]) -> String {
    let mut data = serde_json::Map::new();
    for (name, n) in users {
        let u: f64 = name[1..].parse().unwrap();
        let x: Vec<Vec<f64>> = (0..*n).map(|i| vec![u, i as f64, 0.5, 1.0]).collect();
        let y: Vec<u64> = (0..*n).map(|i| (u as u64 + i as u64) % 5).collect();
        data.insert(name.to_string(), json!({"x": x, "y": y}));
    }
    json!({
        "users": users.iter().map(|u| u.0).collect::<Vec<_>>(),
        "num_samples": users.iter().map(|u| u.1).collect::<Vec<_>>(),
        "hierarchies": [],
        "user_data": data,
    })
    .to_string()
}

fn opts() -> LeafOptions {
    LeafOptions {
        min_samples: 0,
        writer_fraction: 1.0,
        shape: None,
        classes: None,
    }
}

/// Train: b.json holds f3 (4 samples); a.json holds f1 (2), f2 (5). Test: f1, f2, f3 one sample each.
fn tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "train", "b.json", &file(&[("f3", 4)]));
    write(
        tmp.path(),
        "train",
        "a.json",
        &file(&[("f1", 2), ("f2", 5)]),
    );
    write(tmp.path(), "train", "notes.txt", "not json");
    write(
        tmp.path(),
        "test",
        "all.json",
        &file(&[("f1", 1), ("f2", 1), ("f3", 1), ("f9", 2)]),
    );
    tmp
}

#[test]
fn writers_in_file_then_user_order_each_a_block() {
    let tmp = tree();
    let d = read_leaf(tmp.path(), &opts(), 0).unwrap();
    assert_eq!(d.writers, vec!["f1", "f2", "f3"]);
    assert_eq!(d.train.len(), 11);
    assert_eq!(d.train.features(), 4);
    assert_eq!(d.natural.num_clients(), 3);
    assert_eq!(d.natural.client(0), &[0, 1]);
    assert_eq!(d.natural.client(1), &[2, 3, 4, 5, 6]);
    assert_eq!(d.natural.client(2), &[7, 8, 9, 10]);
    // Writer f2's third sample: [2, 2, 0.5, 1], label 4.
    assert_eq!(d.train.x.row(4).to_vec(), vec![2.0, 2.0, 0.5, 1.0]);
    assert_eq!(d.train.y[4], 4);
    assert_eq!(d.train.num_classes, 5);
    assert_eq!(d.test.len(), 5, "test-only writer f9 is kept");
    assert_eq!(d.train.image, None);
}

#[test]
fn min_samples_and_fraction_select_writers_by_seed() {
    let tmp = tree();
    let d = read_leaf(
        tmp.path(),
        &LeafOptions {
            min_samples: 3,
            ..opts()
        },
        0,
    )
    .unwrap();
    assert_eq!(d.writers, vec!["f2", "f3"]);
    assert_eq!(d.train.len(), 9);
    // f1's test sample is dropped with it; f9 (test only) stays.
    assert_eq!(d.test.len(), 4);
    // Half of 3 writers: 2 (rounded), drawn by the seed, kept in file order.
    let half = LeafOptions {
        writer_fraction: 0.5,
        ..opts()
    };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let d = read_leaf(tmp.path(), &half, seed).unwrap();
        assert_eq!(d.writers.len(), 2);
        assert!(d.writers.windows(2).all(|w| w[0] < w[1]), "{:?}", d.writers);
        assert_eq!(
            d.writers,
            read_leaf(tmp.path(), &half, seed).unwrap().writers
        );
        seen.insert(d.writers.clone());
    }
    assert!(seen.len() > 1, "the seed chooses the writers: {seen:?}");
    let e = read_leaf(
        tmp.path(),
        &LeafOptions {
            min_samples: 100,
            ..opts()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no LEAF writer left"), "{e}");
    for f in [0.0, 1.5, f64::NAN] {
        let e = read_leaf(
            tmp.path(),
            &LeafOptions {
                writer_fraction: f,
                ..opts()
            },
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.writer_fraction"), "{e}");
    }
}

#[test]
fn shape_and_classes_options() {
    let tmp = tree();
    let shape = fedsim_types::ImageShape {
        channels: 1,
        height: 2,
        width: 2,
    };
    let d = read_leaf(
        tmp.path(),
        &LeafOptions {
            shape: Some(shape),
            classes: Some(62),
            ..opts()
        },
        0,
    )
    .unwrap();
    assert_eq!((d.train.image, d.train.num_classes), (Some(shape), 62));
    let e = read_leaf(
        tmp.path(),
        &LeafOptions {
            shape: Some(fedsim_types::ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            }),
            ..opts()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("data.shape = [1, 28, 28] has 784 values but the LEAF rows have 4"),
        "{e}"
    );
    let e = read_leaf(
        tmp.path(),
        &LeafOptions {
            classes: Some(3),
            ..opts()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("a.json") && e.contains("`user_data.f2.y[1]` is 3, not below data.classes = 3"),
        "{e}"
    );
}

#[test]
fn malformed_files_name_the_file_and_key() {
    let check = |text: &str, want: &str| {
        let tmp = tree();
        write(tmp.path(), "train", "c.json", text);
        let e = read_leaf(tmp.path(), &opts(), 0).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("c.json") && msg.contains(want), "{msg}");
    };
    let good = file(&[("f5", 2)]);
    // Truncated JSON: serde_json names line and column.
    check(&good[..good.len() / 2], "EOF while parsing");
    check(&good[..good.len() / 2], "line 1 column");
    check(
        &good.replace("\"num_samples\":[2]", "\"num_samples\":[3]"),
        "`num_samples[0]` is 3 but `user_data.f5` holds 2 samples",
    );
    check(
        &good.replace("\"num_samples\":[2]", "\"num_samples\":[2,1]"),
        "`num_samples` has 2 entries but `users` has 1",
    );
    check(
        &good.replace("\"users\":[\"f5\"]", "\"users\":[\"f6\"]"),
        "`user_data.f6` is missing",
    );
    check(
        &good.replace("\"y\":[0,1]", "\"y\":[0]"),
        "`user_data.f5.y` has 1 labels but `user_data.f5.x` has 2 rows",
    );
    check(
        &good.replace("\"y\":[0,1]", "\"y\":[0,-1]"),
        "`user_data.f5.y[1]` is -1, not a class index",
    );
    check(
        &good.replace("\"y\":[0,1]", "\"y\":[0,1.5]"),
        "`user_data.f5.y[1]` is 1.5",
    );
    check(
        &good.replace("[5.0,1.0,0.5,1.0]", "[5.0,1.0,0.5]"),
        "row 1 of `x` has 3 values, the rows before it 4",
    );
    check(
        &good.replace("\"x\":[[5.0", "\"x\":[[\"a\""),
        "invalid type: string",
    );
    check(&file(&[("f1", 1)]), "writer `f1` also appears in");
    let three = file(&[("f5", 2)]).replace(",0.5,1.0]", ",0.5]");
    check(&three, "rows have 3 values but those of");
    check(
        &good.replace("\"user_data\"", "\"userdata\""),
        "missing field `user_data`",
    );
    // A missing test folder.
    let tmp = tree();
    std::fs::remove_dir_all(tmp.path().join("test")).unwrap();
    let e = read_leaf(tmp.path(), &opts(), 0).unwrap_err();
    assert!(
        matches!(e, DataError::Io { .. }) && e.to_string().contains("test"),
        "{e}"
    );
}
