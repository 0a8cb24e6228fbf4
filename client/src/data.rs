//! A client process's local data: its partitions of the scenario's data set (local simulation), or a
//! data file of its own (a real deployment).

use std::path::{Path, PathBuf};

use fedsim_algorithms::train::ClientData;
use fedsim_data::{Dataset, HostedPartitions};
use fedsim_engine::{EngineError, Scenario};
use fedsim_nn::Model;
use fedsim_types::ClientId;

use crate::ClientError;

/// Where a client process gets its data (`--data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// `partition`: every hosted client uses its own partition of the scenario's data set.
    Partition,
    /// `partition:I`: the (single) hosted client uses partition I.
    PartitionOf(ClientId),
    /// A file or directory: `libsvm:PATH`, `csv:PATH`, `idx:DIR`, or a plain path (a directory is read as
    /// MNIST-style IDX files, `*.csv` as CSV with a `label` column, anything else as LIBSVM).
    File(PathBuf),
}

impl std::str::FromStr for DataSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "partition" {
            return Ok(DataSource::Partition);
        }
        if let Some(i) = s.strip_prefix("partition:") {
            return i
                .parse()
                .map(DataSource::PartitionOf)
                .map_err(|_| format!("--data partition:I needs a client index, got `{i}`"));
        }
        if s.is_empty() {
            return Err("--data must not be empty".into());
        }
        Ok(DataSource::File(PathBuf::from(s)))
    }
}

/// Loaded local data.
#[derive(Debug)]
pub enum LocalData {
    /// Partitions of the scenario's data; `map` says which partition each hosted id uses.
    Partitioned {
        /// The samples of the hosted partitions only (not the whole data set, nor its test set).
        data: HostedPartitions,
        /// (hosted id, partition index).
        map: Vec<(ClientId, usize)>,
    },
    /// One local file shared by the hosted clients.
    File {
        /// The samples.
        dataset: Dataset,
        /// The local test file (`--test-data`), if given.
        test: Option<Dataset>,
        /// Per hosted id: its training rows of `dataset`, and its test rows (of `test` when given,
        /// else of `dataset`, held out by `partition.local_test_fraction`).
        views: Vec<(ClientId, Vec<u32>, Vec<u32>)>,
    },
}

fn read_file(spec: &Path) -> Result<Dataset, ClientError> {
    let s = spec.to_string_lossy();
    let core = |e: fedsim_data::DataError| ClientError::Core(EngineError::Data(e));
    if let Some(p) = s.strip_prefix("libsvm:") {
        return fedsim_data::read_libsvm(Path::new(p), None).map_err(core);
    }
    if let Some(p) = s.strip_prefix("csv:") {
        return fedsim_data::read_csv(Path::new(p), "label").map_err(core);
    }
    if let Some(p) = s.strip_prefix("idx:") {
        return fedsim_data::read_mnist_dir(Path::new(p))
            .map(|(train, _)| train)
            .map_err(core);
    }
    if spec.is_dir() {
        return fedsim_data::read_mnist_dir(spec)
            .map(|(train, _)| train)
            .map_err(core);
    }
    if s.ends_with(".csv") || s.ends_with(".csv.gz") {
        return fedsim_data::read_csv(spec, "label").map_err(core);
    }
    fedsim_data::read_libsvm(spec, None).map_err(core)
}

impl LocalData {
    /// Loads the data for the hosted `ids`; `test_data` is the local test file (`--test-data`), which
    /// goes with a data file of the client's own.
    pub fn load(
        source: &DataSource,
        test_data: Option<&Path>,
        scenario: &Scenario,
        ids: &[ClientId],
    ) -> Result<Self, ClientError> {
        if scenario.data.is_external() && !matches!(source, DataSource::File(_)) {
            return Err(ClientError::Refused(
                "the scenario's data.kind = \"external\" has no partitions: give this client its data with --data FILE"
                    .into(),
            ));
        }
        if test_data.is_some() && !matches!(source, DataSource::File(_)) {
            return Err(ClientError::Refused(
                "--test-data goes with --data FILE; with --data partition the local test sets come from partition.local_test_fraction"
                    .into(),
            ));
        }
        match source {
            DataSource::Partition | DataSource::PartitionOf(_) => {
                let map: Vec<(ClientId, usize)> = match source {
                    DataSource::PartitionOf(i) => {
                        if ids.len() != 1 {
                            return Err(ClientError::Refused(
                                "--data partition:I hosts exactly one client".into(),
                            ));
                        }
                        if *i as usize >= scenario.clients {
                            return Err(ClientError::Refused(format!(
                                "partition {i} does not exist ({} clients)",
                                scenario.clients
                            )));
                        }
                        vec![(ids[0], *i as usize)]
                    }
                    _ => ids.iter().map(|&c| (c, c as usize)).collect(),
                };
                // Only the hosted partitions' samples are kept: the process never holds the whole set.
                let parts: Vec<usize> = map.iter().map(|&(_, k)| k).collect();
                let data = scenario.load_hosted_data(&parts)?;
                Ok(LocalData::Partitioned { data, map })
            }
            DataSource::File(path) => {
                let dataset = read_file(path)?;
                check_against_scenario(&dataset, path, scenario)?;
                let all: Vec<u32> = (0..dataset.len() as u32).collect();
                let test = match test_data {
                    Some(t) => {
                        let test = read_file(t)?;
                        if test.features() != dataset.features() {
                            return Err(ClientError::File {
                                path: t.to_path_buf(),
                                msg: format!(
                                    "has {} features per sample but the training data {} has {}",
                                    test.features(),
                                    path.display(),
                                    dataset.features()
                                ),
                            });
                        }
                        check_against_scenario(&test, t, scenario)?;
                        Some(test)
                    }
                    None => None,
                };
                let fraction =
                    fedsim_data::PartitionSpecExt::local_test_fraction(&scenario.partition)
                        .map_err(|e| ClientError::Core(EngineError::from(e)))?;
                let views = ids
                    .iter()
                    .map(|&id| match &test {
                        Some(t) => (id, all.clone(), (0..t.len() as u32).collect()),
                        None if fraction > 0.0 => {
                            let (train, test) = fedsim_data::partition::split_local_test_client(
                                &all,
                                &dataset.y,
                                fraction,
                                scenario.seed,
                                u64::from(id),
                            );
                            (id, train, test)
                        }
                        None => (id, all.clone(), Vec::new()),
                    })
                    .collect();
                Ok(LocalData::File {
                    dataset,
                    test,
                    views,
                })
            }
        }
    }

    /// The model the scenario describes, checked against the local data's shape (with
    /// `data.kind = "external"`, built for the input the scenario states).
    pub fn build_model(&self, scenario: &Scenario) -> Result<Box<dyn Model>, ClientError> {
        let input = match (self, scenario.data.external_input()) {
            (_, Some(external)) => external
                .map_err(|e| ClientError::Core(EngineError::Data(e)))?
                .input_spec(),
            (LocalData::Partitioned { data, .. }, None) => data.train.input_spec(),
            (LocalData::File { dataset, .. }, None) => dataset.input_spec(),
        };
        scenario
            .model
            .validate()
            .map_err(|e| ClientError::Core(EngineError::from(e)))?
            .build(&input)
            .map_err(|e| ClientError::Core(EngineError::Model(e)))
    }

    /// The data of hosted client `id` (no samples for an id this process does not host).
    pub fn client(&self, id: ClientId) -> ClientData<'_> {
        self.view(id, false)
    }

    /// The local test data of hosted client `id` (no samples when it has none).
    pub fn client_test(&self, id: ClientId) -> ClientData<'_> {
        self.view(id, true)
    }

    /// Hosted client `id`'s training (or, with `test`, local test) samples.
    fn view(&self, id: ClientId, test: bool) -> ClientData<'_> {
        match self {
            LocalData::Partitioned { data, map } => {
                let part = map.iter().find(|(c, _)| *c == id).map(|&(_, k)| k);
                ClientData {
                    dataset: &data.train,
                    indices: part
                        .and_then(|k| {
                            if test {
                                data.client_test(k)
                            } else {
                                data.client(k)
                            }
                        })
                        .unwrap_or_default(),
                }
            }
            LocalData::File {
                dataset,
                test: test_file,
                views,
            } => {
                let rows = views.iter().find(|(c, ..)| *c == id);
                match (rows, test) {
                    (Some((_, train, _)), false) => ClientData {
                        dataset,
                        indices: train,
                    },
                    (Some((.., rows)), true) => ClientData {
                        dataset: test_file.as_ref().unwrap_or(dataset),
                        indices: rows,
                    },
                    (None, _) => ClientData {
                        dataset,
                        indices: &[],
                    },
                }
            }
        }
    }
}

/// With `data.kind = "external"`, a client's file must fit the input the scenario states: as many
/// features per sample, and labels below its number of classes.
fn check_against_scenario(
    data: &Dataset,
    path: &Path,
    scenario: &Scenario,
) -> Result<(), ClientError> {
    let Some(Ok(want)) = scenario.data.external_input() else {
        return Ok(());
    };
    let bad = |msg: String| {
        Err(ClientError::File {
            path: path.to_path_buf(),
            msg,
        })
    };
    if data.features() != want.features() {
        return bad(format!(
            "has {} features per sample; the scenario's data section states {}",
            data.features(),
            want.features()
        ));
    }
    if let Some(y) = data.y.iter().find(|&&y| y as usize >= want.num_classes) {
        return bad(format!(
            "holds label {y}; the scenario's data section states {} classes",
            want.num_classes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
name = "t"
seed = 4
rounds = 1
clients = 12
[data]
kind = "synthetic"
features = 5
samples_per_client = 15
test_samples = 50
[partition]
scheme = "iid"
[model]
kind = "logreg"
"#;

    #[test]
    fn a_process_holds_exactly_its_partitions() {
        let scenario = Scenario::parse(SCENARIO, &[]).unwrap();
        let full = scenario.load_data().unwrap();
        let local = LocalData::load(&DataSource::Partition, None, &scenario, &[3, 8]).unwrap();
        let LocalData::Partitioned { data, .. } = &local else {
            panic!("partitioned data expected")
        };
        // The samples of partitions 3 and 8 and nothing else: no other client's rows, no test set.
        let (a, b) = (full.partition.client(3), full.partition.client(8));
        assert_eq!(data.train.len(), a.len() + b.len());
        for (id, want) in [(3, a), (8, b)] {
            let got = local.client(id);
            assert_eq!(got.len(), want.len());
            for (&l, &g) in got.indices.iter().zip(want) {
                assert_eq!(got.dataset.x.row(l as usize), full.train.x.row(g as usize));
                assert_eq!(got.dataset.y[l as usize], full.train.y[g as usize]);
            }
        }
        assert!(local.client(4).is_empty() && local.client(11).is_empty());
        assert!(local.build_model(&scenario).is_ok());

        // `partition:I` holds partition I alone, under the hosted id.
        let one = LocalData::load(&DataSource::PartitionOf(5), None, &scenario, &[0]).unwrap();
        let LocalData::Partitioned { data, .. } = &one else {
            panic!("partitioned data expected")
        };
        assert_eq!(data.train.len(), full.partition.client_len(5));
        assert_eq!(one.client(0).len(), full.partition.client_len(5));
        assert!(
            one.client(5).is_empty(),
            "partition 5 is hosted as id 0, not as id 5"
        );
        assert!(LocalData::load(&DataSource::PartitionOf(12), None, &scenario, &[0]).is_err());
        assert!(LocalData::load(&DataSource::Partition, None, &scenario, &[12]).is_err());
    }
}
