//! `fedsim eval`: evaluates a saved model (a run's `model.bin` or a safetensors file) on a scenario's
//! test set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedsim_engine::Scenario;
use fedsim_engine::engine::build_model;
use fedsim_engine::eval::evaluate;
use fedsim_engine::report::{model_hash, read_params, write_model, write_safetensors};

/// What `fedsim eval` computed.
#[derive(Debug, serde::Serialize)]
pub(crate) struct EvalReport {
    /// The model file.
    pub(crate) model: PathBuf,
    /// Test samples evaluated.
    pub(crate) samples: u64,
    /// Test accuracy.
    pub(crate) accuracy: f64,
    /// Mean test loss.
    pub(crate) loss: f64,
    /// Accuracy per class (`null` for a class without test samples).
    pub(crate) class_accuracy: Vec<Option<f64>>,
}

/// Loads the scenario's data and model, reads `model` and evaluates it on the test set, in chunks of
/// `eval.batch_size` as a run does (so the figures equal the run's own evaluation of that model).
pub(crate) fn eval_model(scenario: &Scenario, model: &Path) -> Result<EvalReport> {
    let data = scenario.load_data()?;
    let net = build_model(scenario, &data)?;
    let params = read_params(model, net.as_ref())
        .context("evaluate a model with the scenario it was trained with")?;
    if data.test.is_empty() {
        bail!("the scenario's data set has no test samples");
    }
    let stats = evaluate(
        net.as_ref(),
        &params,
        &data.test,
        None,
        scenario.eval.batch_size,
    );
    Ok(EvalReport {
        model: model.to_path_buf(),
        samples: data.test.len() as u64,
        accuracy: stats.accuracy(),
        loss: stats.mean_loss(),
        class_accuracy: stats.class_accuracy(),
    })
}

/// The report as lines for a person.
pub(crate) fn render(r: &EvalReport) -> String {
    let classes: Vec<String> = r
        .class_accuracy
        .iter()
        .enumerate()
        .map(|(c, a)| match a {
            Some(a) => format!("{c}: {a:.4}"),
            None => format!("{c}: -"),
        })
        .collect();
    format!(
        "model     {}\nsamples   {}\naccuracy  {:.4}\nloss      {:.4}\nper class {}\n",
        r.model.display(),
        r.samples,
        r.accuracy,
        r.loss,
        classes.join(", ")
    )
}

/// Reads the model in `input` (a `model.bin`, a safetensors file, or a coordinator's
/// `checkpoint.bin`, whose global model is taken) for the scenario's architecture, and writes it to
/// `output`: safetensors in PyTorch's layout, or `model.bin` when `output` ends in `.bin`. Returns the
/// number of parameters written.
pub(crate) fn export_model(scenario: &Scenario, input: &Path, output: &Path) -> Result<usize> {
    // Only the architecture is needed: no sample is decoded where the loader can avoid it.
    let net = scenario
        .model
        .validate()
        .map_err(fedsim_engine::EngineError::from)?
        .build(&scenario.input_spec()?)
        .map_err(fedsim_engine::EngineError::from)?;
    let params = if input.file_name().is_some_and(|n| n == "checkpoint.bin") {
        let dir = input.parent().unwrap_or(Path::new("."));
        let snap = fedsim_server::checkpoint::load(dir, &scenario.hash())
            .context("pass the scenario the checkpointed run uses (its scenario.toml)")?;
        if snap.global.len() != net.num_params() {
            bail!(
                "{} holds {} parameters, the scenario's model {} has {}",
                input.display(),
                snap.global.len(),
                net.name(),
                net.num_params()
            );
        }
        snap.global
    } else {
        read_params(input, net.as_ref())
            .context("export a model with the scenario it was trained with")?
    };
    if output.extension().is_some_and(|e| e == "bin") {
        write_model(output, &params)?;
    } else {
        let meta = [
            ("fedsim.scenario", scenario.name.clone()),
            ("fedsim.source", input.display().to_string()),
            ("fedsim.model_hash", model_hash(&params)),
        ];
        write_safetensors(output, net.as_ref(), &params, &meta)?;
    }
    Ok(params.len())
}
