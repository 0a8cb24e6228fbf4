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
        /// All row indices.
        indices: Vec<u32>,
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
    /// Loads the data for the hosted `ids`.
    pub fn load(
        source: &DataSource,
        scenario: &Scenario,
        ids: &[ClientId],
    ) -> Result<Self, ClientError> {
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
                let indices = (0..dataset.len() as u32).collect();
                Ok(LocalData::File { dataset, indices })
            }
        }
    }

    /// The model the scenario describes, checked against the local data's shape.
    pub fn build_model(&self, scenario: &Scenario) -> Result<Box<dyn Model>, ClientError> {
        let input = match self {
            LocalData::Partitioned { data, .. } => data.train.input_spec(),
            LocalData::File { dataset, .. } => dataset.input_spec(),
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
        match self {
            LocalData::Partitioned { data, map } => ClientData {
                dataset: &data.train,
                indices: map
                    .iter()
                    .find(|(c, _)| *c == id)
                    .and_then(|&(_, k)| data.client(k))
                    .unwrap_or_default(),
            },
            LocalData::File { dataset, indices } => ClientData { dataset, indices },
        }
    }
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
        let local = LocalData::load(&DataSource::Partition, &scenario, &[3, 8]).unwrap();
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
        let one = LocalData::load(&DataSource::PartitionOf(5), &scenario, &[0]).unwrap();
        let LocalData::Partitioned { data, .. } = &one else {
            panic!("partitioned data expected")
        };
        assert_eq!(data.train.len(), full.partition.client_len(5));
        assert_eq!(one.client(0).len(), full.partition.client_len(5));
        assert!(
            one.client(5).is_empty(),
            "partition 5 is hosted as id 0, not as id 5"
        );
        assert!(LocalData::load(&DataSource::PartitionOf(12), &scenario, &[0]).is_err());
        assert!(LocalData::load(&DataSource::Partition, &scenario, &[12]).is_err());
    }
}
