//! Serialisable model specifications (the scenario's `[model]` section) and the model registry.

use serde::{Deserialize, Serialize};

use crate::{Model, NnError};

pub use fedsim_types::{ImageShape, InputSpec};

/// A model description, selected by `kind` in the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Multinomial logistic regression (softmax regression): one linear layer with bias.
    Logreg,
    /// Binary logistic regression with the nonconvex regulariser `λ Σ x_k²/(1 + x_k²)` (EF21 experiments):
    /// class 0 → y = −1, class 1 → y = +1, no bias, `x⁰ ~ N(0, I)`.
    LogregNonconvex {
        /// Regularisation strength λ.
        #[serde(default = "default_nc_lambda")]
        lambda: f64,
    },
    /// Multi-layer perceptron with ReLU hidden layers, e.g. McMahan's 2NN with `hidden = [200, 200]`.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
    },
    /// McMahan's CNN: conv 5x5 (32) → pool → conv 5x5 (64) → pool → FC (512) → FC (classes), "same" padding.
    Cnn {
        /// Channels of the two convolutions.
        #[serde(default = "default_cnn_channels")]
        channels: [usize; 2],
        /// Width of the fully connected hidden layer.
        #[serde(default = "default_cnn_fc")]
        fc: usize,
    },
    /// Supermask (edge-popup) version of [`ModelSpec::Mlp`] for FRL: bias-free layers with frozen
    /// signed-constant weights, the parameters are per-edge scores, the top `keep` fraction of each layer
    /// is used (`../shared/algorithms.md` §5.2). The supermask 2NN is `hidden = [200, 200]`.
    SupermaskMlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
        /// Fraction of each layer's edges kept by the mask, in (0, 1] (default 0.5).
        #[serde(default = "default_keep")]
        keep: f64,
        /// What the mask ranks: `signed` (the paper, default) or `abs` (the reference code, §5.7).
        #[serde(default)]
        mask_by: crate::supermask::MaskBy,
        /// Seed of the frozen weights and of the initial scores, shared by server and clients.
        #[serde(default)]
        seed: u64,
    },
    /// Supermask version of [`ModelSpec::Cnn`] (bias-free convolutions and dense layers).
    SupermaskCnn {
        /// Channels of the two convolutions.
        #[serde(default = "default_cnn_channels")]
        channels: [usize; 2],
        /// Width of the fully connected hidden layer.
        #[serde(default = "default_cnn_fc")]
        fc: usize,
        /// Fraction of each layer's edges kept by the mask, in (0, 1] (default 0.5).
        #[serde(default = "default_keep")]
        keep: f64,
        /// What the mask ranks: `signed` (default) or `abs`.
        #[serde(default)]
        mask_by: crate::supermask::MaskBy,
        /// Seed of the frozen weights and of the initial scores, shared by server and clients.
        #[serde(default)]
        seed: u64,
    },
}

fn default_keep() -> f64 {
    0.5
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

impl ModelSpec {
    /// Whether this is a supermask model (parameters are edge scores; FRL needs one).
    pub fn is_supermask(&self) -> bool {
        matches!(
            self,
            ModelSpec::SupermaskMlp { .. } | ModelSpec::SupermaskCnn { .. }
        )
    }

    /// Whether the built model states its smoothness constant ([`Model::smoothness`]).
    pub fn states_smoothness(&self) -> bool {
        matches!(self, ModelSpec::LogregNonconvex { .. })
    }

    /// Builds the model for the given input.
    pub fn build(&self, input: &InputSpec) -> Result<Box<dyn Model>, NnError> {
        if input.num_classes < 2 {
            return Err(NnError::InvalidSpec(format!(
                "need at least 2 classes, got {}",
                input.num_classes
            )));
        }
        if input.features == 0 {
            return Err(NnError::InvalidSpec("input has no features".into()));
        }
        match self {
            ModelSpec::Logreg => Ok(Box::new(crate::logreg::LogReg::new(
                input.features,
                input.num_classes,
            ))),
            ModelSpec::LogregNonconvex { lambda } => {
                if input.num_classes != 2 {
                    return Err(NnError::InvalidSpec(format!(
                        "model kind \"logreg_nonconvex\" is binary, the data has {} classes",
                        input.num_classes
                    )));
                }
                if !(lambda.is_finite() && *lambda >= 0.0) {
                    return Err(NnError::InvalidSpec(format!(
                        "model.lambda must be a non-negative number, got {lambda}"
                    )));
                }
                Ok(Box::new(crate::logreg_nc::LogRegNonconvex::new(
                    input.features,
                    *lambda,
                )))
            }
            ModelSpec::Mlp { hidden } => {
                if hidden.contains(&0) {
                    return Err(NnError::InvalidSpec(
                        "model.hidden: layer widths must be positive".into(),
                    ));
                }
                Ok(Box::new(crate::mlp::Mlp::new(
                    input.features,
                    hidden,
                    input.num_classes,
                )))
            }
            ModelSpec::Cnn { channels, fc } => {
                let image = input.image.ok_or_else(|| {
                    NnError::InvalidSpec(
                        "model kind \"cnn\" needs image data (a data set with an image shape)"
                            .into(),
                    )
                })?;
                Ok(Box::new(crate::cnn::Cnn::new(
                    image,
                    *channels,
                    *fc,
                    input.num_classes,
                )?))
            }
            ModelSpec::SupermaskMlp {
                hidden,
                keep,
                mask_by,
                seed,
            } => {
                if hidden.contains(&0) {
                    return Err(NnError::InvalidSpec(
                        "model.hidden: layer widths must be positive".into(),
                    ));
                }
                let inner = crate::mlp::Mlp::new(input.features, hidden, input.num_classes);
                Ok(Box::new(crate::supermask::Supermask::new(
                    Box::new(inner),
                    *keep,
                    *mask_by,
                    *seed,
                )?))
            }
            ModelSpec::SupermaskCnn {
                channels,
                fc,
                keep,
                mask_by,
                seed,
            } => {
                let image = input.image.ok_or_else(|| {
                    NnError::InvalidSpec(
                        "model kind \"supermask_cnn\" needs image data (a data set with an image shape)".into(),
                    )
                })?;
                let inner = crate::cnn::Cnn::new(image, *channels, *fc, input.num_classes)?;
                Ok(Box::new(crate::supermask::Supermask::new(
                    Box::new(inner),
                    *keep,
                    *mask_by,
                    *seed,
                )?))
            }
        }
    }
}
