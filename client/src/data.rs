//! A client process's local data: its partitions of the scenario's data set (local simulation), or a
//! data file of its own (a real deployment).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedsim_algorithms::train::ClientData;
use fedsim_data::{Dataset, FederatedData};
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
        /// The whole federated data set.
        data: Arc<FederatedData>,
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
                let data = scenario.load_data()?;
                let map = match source {
                    DataSource::PartitionOf(i) => {
                        if ids.len() != 1 {
                            return Err(ClientError::Refused(
                                "--data partition:I hosts exactly one client".into(),
                            ));
                        }
                        if *i as usize >= data.partition.num_clients() {
                            return Err(ClientError::Refused(format!(
                                "partition {i} does not exist ({} clients)",
                                data.partition.num_clients()
                            )));
                        }
                        vec![(ids[0], *i as usize)]
                    }
                    _ => ids.iter().map(|&c| (c, c as usize)).collect(),
                };
                Ok(LocalData::Partitioned {
                    data: Arc::new(data),
                    map,
                })
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

    /// The data of hosted client `id`.
    pub fn client(&self, id: ClientId) -> ClientData<'_> {
        match self {
            LocalData::Partitioned { data, map } => {
                let k = map
                    .iter()
                    .find(|(c, _)| *c == id)
                    .map_or(id as usize, |(_, k)| *k);
                ClientData {
                    dataset: &data.train,
                    indices: data.partition.client(k),
                }
            }
            LocalData::File { dataset, indices } => ClientData { dataset, indices },
        }
    }
}
