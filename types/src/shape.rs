//! Shapes of model inputs, shared by the data loaders (which produce them) and the models (which are
//! built for them).

use serde::{Deserialize, Serialize};

/// Shape of image inputs, channels × height × width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Channels.
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

/// What a model is built for: the input size (and image shape, if any) and the number of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// Features per sample.
    pub features: usize,
    /// Image shape when the samples are images (`features == c·h·w`).
    pub image: Option<ImageShape>,
    /// Number of classes.
    pub num_classes: usize,
}
