//! The scenario's `[model]` section: the model registry.
//!
//! Every `[model] kind` is a configuration type implementing [`Kind<Models>`](Kind), listed once in
//! [`Models::registered`]. The scenario holds a [`ModelSpec`] (a registered kind with its settings);
//! `spec.validate()?.build(&input)` makes the model for the data's input shape.

use fedsim_types::ConfigError;
use fedsim_types::registry::{Entry, Family, Kind, Spec, Validated};
use serde::{Deserialize, Serialize};

use crate::supermask::{MaskBy, default_keep};
use crate::{Model, NnError};

pub use fedsim_types::{ImageShape, InputSpec};

/// What a configured model kind provides, checked against what the strategy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCapabilities {
    /// The model is a supermask model: its parameters are edge scores (FRL needs one).
    pub supermask: bool,
    /// The built model states its smoothness constant ([`Model::smoothness`]).
    pub states_smoothness: bool,
}

impl ModelCapabilities {
    /// A dense model that states no smoothness constant.
    pub const PLAIN: ModelCapabilities = ModelCapabilities {
        supermask: false,
        states_smoothness: false,
    };
}

/// The model family: `[model] kind = …`.
#[derive(Debug, Clone, Copy)]
pub struct Models;

impl Family for Models {
    const SECTION: &'static str = "model";
    type Capabilities = ModelCapabilities;
    type Input<'a> = &'a InputSpec;
    type Output = Result<Box<dyn Model>, NnError>;

    fn registered() -> &'static [Entry<Self>] {
        static REGISTERED: &[Entry<Models>] = &[
            Entry::of::<LogregConfig>(),
            Entry::of::<LogregNonconvexConfig>(),
            Entry::of::<MlpConfig>(),
            Entry::of::<CnnConfig>(),
            Entry::of::<SupermaskMlpConfig>(),
            Entry::of::<SupermaskCnnConfig>(),
            Entry::of::<crate::stack::SequentialConfig>(),
        ];
        REGISTERED
    }

    fn default_spec() -> Spec<Self> {
        Spec::new(LogregConfig {})
    }

    /// `init_from = "FILE"`: start from saved parameters (any kind; see [`ModelSpecExt::init_from`]).
    const COMMON_KEYS: &'static [&'static str] = &["init_from"];
}

/// The scenario's `[model]` section: a registered model kind and its settings.
pub type ModelSpec = Spec<Models>;

/// What the scenario asks of a [`ModelSpec`], read from its capabilities.
pub trait ModelSpecExt {
    /// Whether this is a supermask model (parameters are edge scores; FRL needs one).
    fn is_supermask(&self) -> bool;
    /// Whether the built model states its smoothness constant ([`Model::smoothness`]).
    fn states_smoothness(&self) -> bool;
    /// `model.init_from`: a file (a run's `model.bin`, or safetensors in PyTorch's layout) whose
    /// parameters replace the initialisation; an error names the key when it is not a path.
    fn init_from(&self) -> Result<Option<std::path::PathBuf>, ConfigError>;
}

impl ModelSpecExt for ModelSpec {
    fn is_supermask(&self) -> bool {
        self.capabilities().supermask
    }

    fn states_smoothness(&self) -> bool {
        self.capabilities().states_smoothness
    }

    fn init_from(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        match self.common_as::<String>("init_from")? {
            Some(p) if p.is_empty() => Err(ConfigError::new(
                "model.init_from",
                "must name a file (a run's model.bin or a safetensors file)",
            )),
            p => Ok(p.map(Into::into)),
        }
    }
}

/// `kind = "logreg"`: multinomial logistic regression (softmax regression), one linear layer with
/// bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogregConfig {}

/// `kind = "logreg_nonconvex"`: binary logistic regression with the nonconvex regulariser
/// `λ Σ x_k²/(1 + x_k²)` (EF21 experiments): class 0 → y = −1, class 1 → y = +1, no bias,
/// `x⁰ ~ N(0, I)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogregNonconvexConfig {
    /// Regularisation strength λ.
    #[serde(default = "default_nc_lambda")]
    pub lambda: f64,
}

/// `kind = "mlp"`: multi-layer perceptron with ReLU hidden layers, e.g. McMahan's 2NN with
/// `hidden = [200, 200]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
}

/// `kind = "cnn"`: McMahan's CNN, conv 5x5 (32) → pool → conv 5x5 (64) → pool → FC (512) →
/// FC (classes), "same" padding. Needs image data (a data set with an image shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Channels of the two convolutions.
    #[serde(default = "default_cnn_channels")]
    pub channels: [usize; 2],
    /// Width of the fully connected hidden layer.
    #[serde(default = "default_cnn_fc")]
    pub fc: usize,
}

/// `kind = "supermask_mlp"`: supermask (edge-popup) version of [`MlpConfig`] for FRL: bias-free
/// layers with frozen signed-constant weights, the parameters are per-edge scores, the top `keep`
/// fraction of each layer is used (`../shared/algorithms.md` §5.2). The supermask 2NN is
/// `hidden = [200, 200]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupermaskMlpConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Fraction of each layer's edges kept by the mask, in (0, 1] (default 0.5).
    #[serde(default = "default_keep")]
    pub keep: f64,
    /// What the mask ranks: `signed` (the paper, default) or `abs` (the reference code, §5.7).
    #[serde(default)]
    pub mask_by: MaskBy,
    /// Seed of the frozen weights and of the initial scores, shared by server and clients.
    #[serde(default)]
    pub seed: u64,
}

/// `kind = "supermask_cnn"`: supermask version of [`CnnConfig`] (bias-free convolutions and dense
/// layers). Needs image data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupermaskCnnConfig {
    /// Channels of the two convolutions.
    #[serde(default = "default_cnn_channels")]
    pub channels: [usize; 2],
    /// Width of the fully connected hidden layer.
    #[serde(default = "default_cnn_fc")]
    pub fc: usize,
    /// Fraction of each layer's edges kept by the mask, in (0, 1] (default 0.5).
    #[serde(default = "default_keep")]
    pub keep: f64,
    /// What the mask ranks: `signed` (default) or `abs`.
    #[serde(default)]
    pub mask_by: MaskBy,
    /// Seed of the frozen weights and of the initial scores, shared by server and clients.
    #[serde(default)]
    pub seed: u64,
}

fn default_nc_lambda() -> f64 {
    crate::logreg_nc::DEFAULT_LAMBDA
}

fn default_cnn_channels() -> [usize; 2] {
    [32, 64]
}

fn default_cnn_fc() -> usize {
    512
}

/// Checks of the input every model kind makes.
pub(crate) fn check_input(input: &InputSpec) -> Result<(), NnError> {
    if input.num_classes < 2 {
        return Err(NnError::InvalidSpec(format!(
            "need at least 2 classes, got {}",
            input.num_classes
        )));
    }
    if input.features == 0 {
        return Err(NnError::InvalidSpec("input has no features".into()));
    }
    Ok(())
}

/// The image shape a CNN kind needs.
fn image_of(input: &InputSpec, kind: &str) -> Result<ImageShape, NnError> {
    input.image.ok_or_else(|| {
        NnError::InvalidSpec(format!(
            "model kind \"{kind}\" needs image data (a data set with an image shape)"
        ))
    })
}

fn validate_hidden(hidden: &[usize]) -> Result<(), ConfigError> {
    match hidden.iter().position(|&w| w == 0) {
        Some(i) => Err(ConfigError::new(
            format!("hidden[{i}]"),
            "layer widths must be positive",
        )),
        None => Ok(()),
    }
}

fn validate_cnn(channels: [usize; 2], fc: usize) -> Result<(), ConfigError> {
    if let Some(i) = channels.iter().position(|&c| c == 0) {
        return Err(ConfigError::new(
            format!("channels[{i}]"),
            "must be positive",
        ));
    }
    if fc == 0 {
        return Err(ConfigError::new("fc", "must be positive"));
    }
    Ok(())
}

fn validate_keep(keep: f64) -> Result<(), ConfigError> {
    if keep > 0.0 && keep <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            "keep",
            format!("must be in (0, 1], got {keep}"),
        ))
    }
}

impl Kind<Models> for LogregConfig {
    const KIND: &'static str = "logreg";
    const SUMMARY: &'static str =
        "multinomial logistic regression (softmax regression): one linear layer with bias";

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities::PLAIN
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        Ok(Box::new(crate::logreg::LogReg::new(
            input.features,
            input.num_classes,
        )))
    }
}

impl Kind<Models> for LogregNonconvexConfig {
    const KIND: &'static str = "logreg_nonconvex";
    const SUMMARY: &'static str = "binary logistic regression with the nonconvex regulariser λ Σ x²/(1 + x²) (EF21); states L_i";
    const EXAMPLE: &'static str = "lambda = 0.1";
    const EXAMPLE_SETTINGS: &'static [&'static str] = &["data.classes=2"];

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities {
            states_smoothness: true,
            ..ModelCapabilities::PLAIN
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.lambda.is_finite() && self.lambda >= 0.0 {
            Ok(())
        } else {
            Err(ConfigError::new(
                "lambda",
                format!("must be a non-negative number, got {}", self.lambda),
            ))
        }
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        if input.num_classes != 2 {
            return Err(NnError::InvalidSpec(format!(
                "model kind \"logreg_nonconvex\" is binary, the data has {} classes",
                input.num_classes
            )));
        }
        Ok(Box::new(crate::logreg_nc::LogRegNonconvex::new(
            input.features,
            self.lambda,
        )))
    }
}

impl Kind<Models> for MlpConfig {
    const KIND: &'static str = "mlp";
    const SUMMARY: &'static str =
        "multi-layer perceptron with ReLU hidden layers (2NN: hidden = [200, 200])";
    const EXAMPLE: &'static str = "hidden = [8]";

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities::PLAIN
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_hidden(&self.hidden)
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        Ok(Box::new(crate::mlp::Mlp::new(
            input.features,
            &self.hidden,
            input.num_classes,
        )))
    }
}

impl Kind<Models> for CnnConfig {
    const KIND: &'static str = "cnn";
    const SUMMARY: &'static str =
        "McMahan's CNN: two 5x5 convolutions with max-pooling, then two dense layers (image data)";
    const EXAMPLE: &'static str = "channels = [4, 8]\nfc = 16";

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities::PLAIN
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_cnn(self.channels, self.fc)
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        let image = image_of(input, Self::KIND)?;
        Ok(Box::new(crate::cnn::Cnn::new(
            image,
            self.channels,
            self.fc,
            input.num_classes,
        )?))
    }
}

impl Kind<Models> for SupermaskMlpConfig {
    const KIND: &'static str = "supermask_mlp";
    const SUMMARY: &'static str =
        "supermask (edge-popup) MLP for FRL: frozen random weights, the parameters are edge scores";
    const EXAMPLE: &'static str = "hidden = [8]";

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities {
            supermask: true,
            ..ModelCapabilities::PLAIN
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_hidden(&self.hidden)?;
        validate_keep(self.keep)
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        let inner = crate::mlp::Mlp::new(input.features, &self.hidden, input.num_classes);
        Ok(Box::new(crate::supermask::Supermask::new(
            Box::new(inner),
            self.keep,
            self.mask_by,
            self.seed,
        )?))
    }
}

impl Kind<Models> for SupermaskCnnConfig {
    const KIND: &'static str = "supermask_cnn";
    const SUMMARY: &'static str =
        "supermask version of the CNN for FRL (bias-free layers, edge scores; image data)";
    const EXAMPLE: &'static str = "channels = [4, 8]\nfc = 16";

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities {
            supermask: true,
            ..ModelCapabilities::PLAIN
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_cnn(self.channels, self.fc)?;
        validate_keep(self.keep)
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        let image = image_of(input, Self::KIND)?;
        let inner = crate::cnn::Cnn::new(image, self.channels, self.fc, input.num_classes)?;
        Ok(Box::new(crate::supermask::Supermask::new(
            Box::new(inner),
            self.keep,
            self.mask_by,
            self.seed,
        )?))
    }
}

impl Kind<Models> for crate::stack::SequentialConfig {
    const KIND: &'static str = "sequential";
    const SUMMARY: &'static str = "a stack of layers (conv2d, pools, dense, relu, flatten, group_norm, dropout, residual) or a preset";
    const EXAMPLE: &'static str = "layers = [\"flatten\", {dense = {units = 8}}, \"relu\", {dropout = {p = 0.1}}, {residual = {layers = [{dense = {units = 4}}, \"relu\"]}}, \"dense\"]";

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities {
            supermask: self.supermask.is_some(),
            ..ModelCapabilities::PLAIN
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(m) = &self.supermask {
            validate_keep(m.keep).map_err(|e| e.at("supermask"))?;
        }
        self.resolve().map(|_| ())
    }

    fn build(&self, input: &InputSpec, _: Validated) -> Result<Box<dyn Model>, NnError> {
        check_input(input)?;
        let layers = self
            .resolve()
            .map_err(|e| NnError::InvalidSpec(e.at("model").to_string()))?;
        let model = crate::stack::Sequential::new(&layers, input, self.init)
            .map_err(|e| NnError::InvalidSpec(e.at("model").to_string()))?;
        Ok(match &self.supermask {
            None => Box::new(model),
            Some(m) => Box::new(crate::supermask::Supermask::new(
                Box::new(model),
                m.keep,
                m.mask_by,
                m.seed,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsim_types::registry;

    fn input(classes: usize, image: bool) -> InputSpec {
        InputSpec {
            features: 16,
            num_classes: classes,
            image: image.then_some(ImageShape {
                channels: 1,
                height: 4,
                width: 4,
            }),
        }
    }

    fn spec(text: &str) -> Result<ModelSpec, ConfigError> {
        ModelSpec::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn kinds_are_unique_and_examples_parse_validate_and_build() {
        registry::check_family::<Models>(|| Box::leak(Box::new(input(2, true))));
        for e in registry::all::<Models>() {
            let spec = e.example_spec().unwrap();
            let model = spec.validate().unwrap().build(&input(2, true)).unwrap();
            assert!(!model.layout().is_empty(), "{}", e.kind);
        }
        assert_eq!(ModelSpec::default().kind(), "logreg");
    }

    #[test]
    fn capabilities_match_the_kinds() {
        for (text, supermask, smooth) in [
            ("kind = \"logreg\"", false, false),
            ("kind = \"logreg_nonconvex\"", false, true),
            ("kind = \"mlp\"\nhidden = []", false, false),
            ("kind = \"cnn\"", false, false),
            ("kind = \"supermask_mlp\"\nhidden = [4]", true, false),
            ("kind = \"supermask_cnn\"", true, false),
            ("kind = \"sequential\"\npreset = \"conv4\"", false, false),
            (
                "kind = \"sequential\"\npreset = \"conv4\"\nsupermask = {}",
                true,
                false,
            ),
        ] {
            let s = spec(text).unwrap();
            assert_eq!(s.is_supermask(), supermask, "{text}");
            assert_eq!(s.states_smoothness(), smooth, "{text}");
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let s = spec("kind = \"supermask_cnn\"").unwrap();
        assert_eq!(
            s.config::<SupermaskCnnConfig>(),
            Some(&SupermaskCnnConfig {
                channels: [32, 64],
                fc: 512,
                keep: 0.5,
                mask_by: MaskBy::Signed,
                seed: 0,
            })
        );
        let s = spec("kind = \"logreg_nonconvex\"").unwrap();
        assert_eq!(
            s.config::<LogregNonconvexConfig>().map(|c| c.lambda),
            Some(crate::logreg_nc::DEFAULT_LAMBDA)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = spec("kind = \"nope\"").unwrap_err();
        assert_eq!(e.key, "model.kind");
        assert!(e.message.contains("supermask_cnn"), "{e}");
        let e = spec("kind = \"mlp\"\nhidden = [8]\nwidth = 3").unwrap_err();
        assert_eq!(e.key, "model");
        assert!(e.message.contains("width"), "{e}");
        let e = spec("kind = \"mlp\"").unwrap_err();
        assert!(e.message.contains("hidden"), "{e}");
        for (text, key) in [
            ("kind = \"mlp\"\nhidden = [8, 0]", "model.hidden[1]"),
            (
                "kind = \"supermask_mlp\"\nhidden = [8]\nkeep = 0.0",
                "model.keep",
            ),
            ("kind = \"supermask_cnn\"\nkeep = 1.5", "model.keep"),
            ("kind = \"cnn\"\nchannels = [0, 8]", "model.channels[0]"),
            ("kind = \"cnn\"\nfc = 0", "model.fc"),
            ("kind = \"logreg_nonconvex\"\nlambda = -1.0", "model.lambda"),
            (
                "kind = \"sequential\"\npreset = \"conv4\"\nsupermask = { keep = 0.0 }",
                "model.supermask.keep",
            ),
        ] {
            let e = spec(text).unwrap().validate().unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn init_from_is_a_path_for_every_kind() {
        for kind in [
            "kind = \"logreg\"",
            "kind = \"sequential\"\npreset = \"mlp\"",
        ] {
            let s = spec(&format!("{kind}\ninit_from = \"runs/a/model.safetensors\"")).unwrap();
            assert_eq!(
                s.init_from().unwrap(),
                Some(std::path::PathBuf::from("runs/a/model.safetensors"))
            );
            assert_eq!(spec(kind).unwrap().init_from().unwrap(), None);
        }
        for bad in ["3", "\"\""] {
            let e = spec(&format!("kind = \"logreg\"\ninit_from = {bad}"))
                .unwrap()
                .init_from()
                .unwrap_err();
            assert_eq!(e.key, "model.init_from", "{bad}: {e}");
        }
    }

    #[test]
    fn input_dependent_checks_stay_in_build() {
        let build = |text: &str, input: &InputSpec| {
            spec(text)
                .unwrap()
                .validate()
                .unwrap()
                .build(input)
                .map(|_| ())
        };
        assert!(build("kind = \"logreg\"", &input(1, false)).is_err());
        assert!(build("kind = \"logreg_nonconvex\"", &input(3, false)).is_err());
        assert!(build("kind = \"cnn\"", &input(10, false)).is_err());
        assert!(build("kind = \"supermask_cnn\"", &input(10, false)).is_err());
        assert!(build("kind = \"mlp\"\nhidden = [4]", &input(10, false)).is_ok());
    }
}
