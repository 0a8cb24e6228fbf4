//! The `[model] kind = "sequential"` table: the layer list, its parsing (errors name the layer, e.g.
//! key `model.layers[3]`), the presets and the registration in the model family.

use fedsim_types::ConfigError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::raw::Raw;

/// Padding of a convolution: zeros on every side, or `"same"` (stride 1, odd kernel: `(k − 1)/2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Output as large as the input (stride 1 and an odd kernel only).
    Same,
    /// This many zeros on each side.
    Size(usize),
}

/// `conv2d`: 2-D convolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv2d {
    /// Output channels.
    pub out: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride (default 1).
    pub stride: usize,
    /// Padding (default 0).
    pub padding: Padding,
    /// Whether the layer has a bias (default true).
    pub bias: bool,
}

/// `max_pool` and `avg_pool`: square windows without padding (PyTorch's floor mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Window size.
    pub size: usize,
    /// Stride (defaults to the window size).
    pub stride: usize,
}

/// `dense`: fully connected layer on a flat input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dense {
    /// Output units; `None` (the key left out) means the number of classes of the data.
    pub units: Option<usize>,
    /// Whether the layer has a bias (default true).
    pub bias: bool,
}

/// `group_norm`: GroupNorm with a learnable per-channel scale (init 1) and shift (init 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNorm {
    /// Number of groups; must divide the channels.
    pub groups: usize,
    /// Added to the variance (default 1e-5, PyTorch's).
    pub eps: f64,
}

/// `residual`: `body(x) + shortcut(x)`, written `{residual = {layers = [...]}}` or, with a shortcut of
/// its own, `{residual = {layers = [...], shortcut = [...]}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    /// The body, input to output (not empty).
    pub layers: Vec<LayerSpec>,
    /// The shortcut as a layer list run on the block's input (`shortcut = [...]`), e.g. torchvision's
    /// downsampling `[{conv2d = {out = 64, kernel = 1, stride = 2, bias = false}}, {group_norm =
    /// {groups = 2}}]`; its output must have the body's output shape, and an empty list is the
    /// identity. `None` (the key left out): the identity when the body keeps the shape, else a
    /// bias-free projection (1×1 convolution with the stride that matches, or a dense layer on flat
    /// tensors).
    pub shortcut: Option<Vec<LayerSpec>>,
}

/// One layer of a stack.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// 2-D convolution.
    Conv2d(Conv2d),
    /// Max-pooling.
    MaxPool(Pool),
    /// Average pooling.
    AvgPool(Pool),
    /// Mean of every channel plane; the output is flat (one value per channel).
    GlobalAvgPool,
    /// Fully connected layer.
    Dense(Dense),
    /// `max(x, 0)`.
    Relu,
    /// Channel-major flattening of an image (PyTorch's `flatten` of NCHW); no-op on flat input.
    Flatten,
    /// GroupNorm.
    GroupNorm(GroupNorm),
    /// Inverted dropout with drop probability `p` (active in local training only).
    Dropout(f64),
    /// `body(x) + shortcut(x)`: the block's own shortcut layers if given, else the identity when the
    /// body keeps the shape, else a bias-free projection (see [`Residual`]).
    Residual(Residual),
}

/// Every layer name, for error messages.
const LAYER_NAMES: &str = "conv2d, max_pool, avg_pool, global_avg_pool, dense, relu, flatten, group_norm, dropout, residual";

impl LayerSpec {
    /// The layer's name in the scenario.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d(_) => "conv2d",
            LayerSpec::MaxPool(_) => "max_pool",
            LayerSpec::AvgPool(_) => "avg_pool",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
            LayerSpec::Dense(_) => "dense",
            LayerSpec::Relu => "relu",
            LayerSpec::Flatten => "flatten",
            LayerSpec::GroupNorm(_) => "group_norm",
            LayerSpec::Dropout(_) => "dropout",
            LayerSpec::Residual(_) => "residual",
        }
    }

    /// The canonical TOML form (every option written out).
    fn to_raw(&self) -> Raw {
        let int = |v: usize| Raw::Int(v as i64);
        let pool = |p: &Pool| Raw::map([("size", int(p.size)), ("stride", int(p.stride))]);
        let opts = match self {
            LayerSpec::GlobalAvgPool | LayerSpec::Relu | LayerSpec::Flatten => {
                return Raw::Str(self.kind().into());
            }
            LayerSpec::Conv2d(c) => Raw::map([
                ("out", int(c.out)),
                ("kernel", int(c.kernel)),
                ("stride", int(c.stride)),
                (
                    "padding",
                    match c.padding {
                        Padding::Same => Raw::Str("same".into()),
                        Padding::Size(p) => int(p),
                    },
                ),
                ("bias", Raw::Bool(c.bias)),
            ]),
            LayerSpec::MaxPool(p) | LayerSpec::AvgPool(p) => pool(p),
            LayerSpec::Dense(d) => {
                let mut pairs = Vec::new();
                if let Some(u) = d.units {
                    pairs.push(("units", int(u)));
                }
                pairs.push(("bias", Raw::Bool(d.bias)));
                Raw::map(pairs)
            }
            LayerSpec::GroupNorm(g) => {
                Raw::map([("groups", int(g.groups)), ("eps", Raw::Float(g.eps))])
            }
            LayerSpec::Dropout(p) => Raw::map([("p", Raw::Float(*p))]),
            LayerSpec::Residual(r) => {
                let list = |l: &[LayerSpec]| Raw::List(l.iter().map(LayerSpec::to_raw).collect());
                let mut pairs = vec![("layers", list(&r.layers))];
                if let Some(sc) = &r.shortcut {
                    pairs.push(("shortcut", list(sc)));
                }
                Raw::map(pairs)
            }
        };
        Raw::map([(self.kind(), opts)])
    }
}

/// The options table of one layer, read key by key; errors carry the layer's key.
struct Opts<'a> {
    key: &'a str,
    layer: &'a str,
    pairs: &'a [(String, Raw)],
}

impl Opts<'_> {
    fn err(&self, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.key, format!("{}: {message}", self.layer))
    }

    /// Fails on keys outside `known`.
    fn only(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) if known.is_empty() => {
                Err(self.err(format_args!("unknown key `{k}` (the layer has no options)")))
            }
            Some((k, _)) => Err(self.err(format_args!(
                "unknown key `{k}`; known: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&Raw> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A non-negative integer option; `positive` also rejects 0.
    fn count(
        &self,
        name: &str,
        default: Option<usize>,
        positive: bool,
    ) -> Result<Option<usize>, ConfigError> {
        let v = match self.get(name) {
            None => return Ok(default),
            Some(Raw::Int(i)) if *i >= 0 => *i as usize,
            Some(other) => {
                return Err(self.err(format_args!(
                    "`{name}` must be a non-negative integer, got {}",
                    other.describe()
                )));
            }
        };
        if positive && v == 0 {
            return Err(self.err(format_args!("`{name}` must be positive, got 0")));
        }
        Ok(Some(v))
    }

    fn required(&self, name: &str) -> Result<usize, ConfigError> {
        self.count(name, None, true)?
            .ok_or_else(|| self.err(format_args!("missing `{name}`")))
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(Raw::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(format_args!(
                "`{name}` must be true or false, got {}",
                other.describe()
            ))),
        }
    }

    fn number(&self, name: &str, default: f64) -> Result<f64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(Raw::Float(f)) => Ok(*f),
            Some(Raw::Int(i)) => Ok(*i as f64),
            Some(other) => Err(self.err(format_args!(
                "`{name}` must be a number, got {}",
                other.describe()
            ))),
        }
    }

    fn pool(&self) -> Result<Pool, ConfigError> {
        self.only(&["size", "stride"])?;
        let size = self.required("size")?;
        let stride = self.count("stride", Some(size), true)?.unwrap_or(size);
        Ok(Pool { size, stride })
    }
}

/// Parses one layer written as `"name"` or `{name = {options}}`; `key` names it in errors.
fn parse_layer(raw: &Raw, key: &str) -> Result<LayerSpec, ConfigError> {
    let empty: &[(String, Raw)] = &[];
    let (name, pairs) = match raw {
        Raw::Str(name) => (name.as_str(), empty),
        Raw::Map(m) if m.len() == 1 => match &m[0] {
            (name, Raw::Map(pairs)) => (name.as_str(), pairs.as_slice()),
            (name, other) => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{name}: the options must be a table such as `{{{name} = {{...}}}}`, got {}",
                        other.describe()
                    ),
                ));
            }
        },
        other => {
            return Err(ConfigError::new(
                key,
                format!(
                    "a layer is a name such as \"relu\" or a one-key table such as \
                     {{conv2d = {{out = 32, kernel = 3}}}}, got {}",
                    other.describe()
                ),
            ));
        }
    };
    let o = Opts {
        key,
        layer: name,
        pairs,
    };
    Ok(match name {
        "conv2d" => {
            o.only(&["out", "kernel", "stride", "padding", "bias"])?;
            let out = o.required("out")?;
            let kernel = o.required("kernel")?;
            let stride = o.count("stride", Some(1), true)?.unwrap_or(1);
            let padding = match o.get("padding") {
                None => Padding::Size(0),
                Some(Raw::Str(s)) if s == "same" => Padding::Same,
                Some(Raw::Int(p)) if *p >= 0 => Padding::Size(*p as usize),
                Some(other) => {
                    return Err(o.err(format_args!(
                        "`padding` must be a non-negative integer or \"same\", got {}",
                        other.describe()
                    )));
                }
            };
            if padding == Padding::Same && (stride != 1 || kernel % 2 == 0) {
                return Err(o.err(format_args!(
                    "padding \"same\" needs stride 1 and an odd kernel, got stride {stride}, kernel {kernel}"
                )));
            }
            let bias = o.flag("bias", true)?;
            LayerSpec::Conv2d(Conv2d {
                out,
                kernel,
                stride,
                padding,
                bias,
            })
        }
        "max_pool" => LayerSpec::MaxPool(o.pool()?),
        "avg_pool" => LayerSpec::AvgPool(o.pool()?),
        "global_avg_pool" | "relu" | "flatten" => {
            o.only(&[])?;
            match name {
                "relu" => LayerSpec::Relu,
                "flatten" => LayerSpec::Flatten,
                _ => LayerSpec::GlobalAvgPool,
            }
        }
        "dense" => {
            o.only(&["units", "bias"])?;
            LayerSpec::Dense(Dense {
                units: o.count("units", None, true)?,
                bias: o.flag("bias", true)?,
            })
        }
        "group_norm" => {
            o.only(&["groups", "eps"])?;
            let groups = o.required("groups")?;
            let eps = o.number("eps", 1e-5)?;
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(o.err(format_args!("`eps` must be positive, got {eps}")));
            }
            LayerSpec::GroupNorm(GroupNorm { groups, eps })
        }
        "dropout" => {
            o.only(&["p"])?;
            let p = o.number("p", f64::NAN)?;
            if p.is_nan() {
                return Err(o.err("missing `p`"));
            }
            if !(0.0..1.0).contains(&p) {
                return Err(o.err(format_args!("`p` must be in [0, 1), got {p}")));
            }
            LayerSpec::Dropout(p)
        }
        "residual" => {
            o.only(&["layers", "shortcut"])?;
            let layers = match o.get("layers") {
                Some(Raw::List(items)) if !items.is_empty() => {
                    parse_layers(items, &format!("{key}.residual.layers"))?
                }
                Some(Raw::List(_)) => return Err(o.err("`layers` must not be empty")),
                Some(other) => {
                    return Err(o.err(format_args!(
                        "`layers` must be an array of layers, got {}",
                        other.describe()
                    )));
                }
                None => return Err(o.err("missing `layers`")),
            };
            let shortcut = match o.get("shortcut") {
                None => None,
                Some(Raw::List(items)) => {
                    Some(parse_layers(items, &format!("{key}.residual.shortcut"))?)
                }
                Some(other) => {
                    return Err(o.err(format_args!(
                        "`shortcut` must be an array of layers, got {}",
                        other.describe()
                    )));
                }
            };
            LayerSpec::Residual(Residual { layers, shortcut })
        }
        other => {
            return Err(ConfigError::new(
                key,
                format!("unknown layer `{other}`; known: {LAYER_NAMES}"),
            ));
        }
    })
}

/// Parses a layer list; `key` is the list's key (`layers`), each layer is `key[i]`.
fn parse_layers(items: &[Raw], key: &str) -> Result<Vec<LayerSpec>, ConfigError> {
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_layer(raw, &format!("{key}[{i}]")))
        .collect()
}

/// One entry of `layers` as written; parsed (with errors naming its index) by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEntry(pub Raw);

impl From<&LayerSpec> for LayerEntry {
    fn from(l: &LayerSpec) -> Self {
        LayerEntry(l.to_raw())
    }
}

impl Serialize for LayerEntry {
    /// The canonical form (defaults filled in) when the entry parses, else the entry as written.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match parse_layer(&self.0, "layers") {
            Ok(l) => l.to_raw().serialize(s),
            Err(_) => self.0.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for LayerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw::deserialize(d).map(LayerEntry)
    }
}

/// How conv and dense weights are initialised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch's defaults: weights Kaiming-uniform with a = √5, i.e. `U(±1/√fan_in)`, biases
    /// `U(±1/√fan_in)`.
    #[default]
    Pytorch,
    /// Weights `N(0, 2/fan_in)` (`kaiming_normal_`, fan-in mode, ReLU gain), biases 0 (FedAU's code).
    KaimingNormal,
}

/// `kind = "sequential"`: a stack of layers, written out (`layers`) or by name (`preset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequentialConfig {
    /// A named stack (see [`PRESETS`]) instead of `layers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The layers, input to output.
    #[serde(default)]
    pub layers: Vec<LayerEntry>,
    /// Weight initialisation.
    #[serde(default)]
    pub init: InitScheme,
    /// Makes the stack a supermask model over its conv and dense weights (FRL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supermask: Option<crate::supermask::SupermaskOptions>,
}

/// The presets' names.
pub const PRESETS: &[&str] = &[
    "mlp",
    "cnn",
    "cnn_cifar",
    "cnn_fmnist",
    "conv4",
    "conv8",
    "resnet8_gn",
    "resnet18_gn",
];

impl SequentialConfig {
    /// A configuration holding `layers`.
    pub fn from_layers(layers: &[LayerSpec]) -> Self {
        Self {
            preset: None,
            layers: layers.iter().map(LayerEntry::from).collect(),
            init: InitScheme::default(),
            supermask: None,
        }
    }

    /// The layer list: the preset expanded, or `layers` parsed. Errors name the key.
    pub fn resolve(&self) -> Result<Vec<LayerSpec>, ConfigError> {
        match &self.preset {
            Some(name) => {
                if !self.layers.is_empty() {
                    return Err(ConfigError::new(
                        "layers",
                        "give either `preset` or `layers`, not both",
                    ));
                }
                super::presets::expand(name).ok_or_else(|| {
                    ConfigError::new(
                        "preset",
                        format!("unknown preset `{name}`; known: {}", PRESETS.join(", ")),
                    )
                })
            }
            None => {
                if self.layers.is_empty() {
                    return Err(ConfigError::new(
                        "layers",
                        "a sequential model needs `layers` (or a `preset`)",
                    ));
                }
                let raw: Vec<Raw> = self.layers.iter().map(|e| e.0.clone()).collect();
                parse_layers(&raw, "layers")
            }
        }
    }
}
