//! A layer stack exported as safetensors gives the same logits in an independent NumPy forward pass
//! (and in the equivalent `torch.nn.Sequential` when torch is installed) as in fedsim, to 1e-5:
//! `tests/python/safetensors_logits.py` does the Python side.
//!
//! Needs Python 3 with `numpy` and `safetensors` (`pip install numpy safetensors`), so it is ignored by
//! default; `.ci/run` installs them in a virtual environment and runs it with
//! `FEDSIM_PYTHON=<venv>/bin/python cargo test --release --test model_file_python -- --ignored`.

use std::path::Path;
use std::process::Command;

use fedsim_nn::model_file::to_safetensors;
use fedsim_nn::stack::{InitScheme, LayerEntry, SequentialConfig};
use fedsim_nn::{ImageShape, InputSpec, Model, Sequential};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};

/// conv (bias, padding), ReLU, max-pool, GroupNorm, a residual block with a strided projection
/// shortcut, average pooling, flatten, dense; then global average pooling in a second model, with a
/// downsampling block whose shortcut is given (torchvision's conv1×1 stride 2 → norm layer).
const LAYERS: &str = r#"
layers = [
  { conv2d = { out = 4, kernel = 3, padding = 1 } },
  "relu",
  { max_pool = { size = 2 } },
  { group_norm = { groups = 2 } },
  { residual = { layers = [
      { conv2d = { out = 8, kernel = 3, stride = 2, padding = 1, bias = false } },
      { group_norm = { groups = 4 } },
      "relu",
  ] } },
  { avg_pool = { size = 2 } },
  { dropout = { p = 0.5 } },
  "flatten",
  { dense = { units = 12 } },
  "relu",
  "dense",
]
"#;

const GAP_LAYERS: &str = r#"
layers = [
  { conv2d = { out = 6, kernel = 3, padding = "same" } },
  { max_pool = { size = 3, stride = 2 } },
  { group_norm = { groups = 3, eps = 0.001 } },
  "relu",
  { residual = { layers = [ { conv2d = { out = 6, kernel = 3, padding = 1 } }, "relu" ] } },
  { residual = { layers = [
      { conv2d = { out = 8, kernel = 3, stride = 2, padding = 1, bias = false } },
      { group_norm = { groups = 4 } },
      "relu",
      { conv2d = { out = 8, kernel = 3, padding = 1, bias = false } },
      { group_norm = { groups = 4 } },
    ], shortcut = [
      { conv2d = { out = 8, kernel = 1, stride = 2, bias = false } },
      { group_norm = { groups = 2 } },
  ] } },
  "relu",
  "global_avg_pool",
  "dense",
]
"#;

fn python() -> String {
    std::env::var("FEDSIM_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the model, a batch with fedsim's logits and the architecture into `dir`, then runs the
/// Python check on it.
fn check(layers_toml: &str, dir: &Path) {
    let cfg: SequentialConfig = toml::from_str(layers_toml).expect("layers");
    let (c, h, w, classes) = (3, 8, 8, 5);
    let input = InputSpec {
        features: c * h * w,
        num_classes: classes,
        image: Some(ImageShape {
            channels: c,
            height: h,
            width: w,
        }),
    };
    let layers = cfg.resolve().unwrap_or_else(|e| panic!("{e}"));
    let model = Sequential::new(&layers, &input, InitScheme::Pytorch).expect("model builds");
    let mut params = model.init_params(11);
    // Non-trivial GroupNorm scales and shifts, so a transposed or misnamed one shows.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for t in model.layout().tensors() {
        let r = t.range();
        if t.shape.len() == 1 {
            for v in &mut params[r] {
                *v += rng.random_range(-0.5f32..0.5);
            }
        }
    }
    let n = 6;
    let x = Array2::from_shape_fn((n, c * h * w), |_| rng.random_range(-1.0f32..1.0));
    let logits = model.logits(&params, x.view());

    std::fs::write(
        dir.join("model.safetensors"),
        to_safetensors(&model, &params, &[]).expect("export"),
    )
    .unwrap();
    let xb = f32_bytes(x.as_slice().unwrap());
    let lb = f32_bytes(logits.as_slice().unwrap());
    let batch = safetensors::serialize(
        [
            (
                "x",
                TensorView::new(Dtype::F32, vec![n, c, h, w], &xb).unwrap(),
            ),
            (
                "logits",
                TensorView::new(Dtype::F32, vec![n, classes], &lb).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    std::fs::write(dir.join("batch.safetensors"), batch).unwrap();
    // The canonical layer list (every option written out, `dense` without units = the classes).
    let canonical: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::to_value(LayerEntry::from(l)).unwrap())
        .map(|v| fill_units(v, classes))
        .collect();
    let arch = serde_json::json!({ "input": [c, h, w], "layers": canonical });
    std::fs::write(dir.join("arch.json"), arch.to_string()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/safetensors_logits.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the Python check failed:\n{text}");
    assert!(text.contains("checked: numpy"), "{text}");
}

/// `dense` with its units left out means one unit per class; the Python side needs the number.
fn fill_units(v: serde_json::Value, classes: usize) -> serde_json::Value {
    match v {
        serde_json::Value::Object(mut m) => {
            if let Some(serde_json::Value::Object(d)) = m.get_mut("dense") {
                d.entry("units").or_insert(classes.into());
            }
            if let Some(serde_json::Value::Object(r)) = m.get_mut("residual") {
                for key in ["layers", "shortcut"] {
                    if let Some(serde_json::Value::Array(items)) = r.get_mut(key) {
                        let filled = items.drain(..).map(|i| fill_units(i, classes)).collect();
                        *items = filled;
                    }
                }
            }
            serde_json::Value::Object(m)
        }
        other => other,
    }
}

#[test]
#[ignore = "needs python3 with numpy and safetensors (pip install numpy safetensors); .ci/run runs it"]
fn exported_stacks_give_the_same_logits_in_numpy_and_torch() {
    for layers in [LAYERS, GAP_LAYERS] {
        let dir = tempfile::tempdir().unwrap();
        check(layers, dir.path());
    }
}
