//! From a layer list and the data's input shape to the network: shapes checked layer by layer
//! (errors name the layer's key, its kind and the shapes), parameters laid out, scratch slots and
//! initialisation rules assigned.

use std::fmt;

use fedsim_types::ConfigError;

use super::conv::Conv;
use super::dense::Dense;
use super::norm::GroupNorm;
use super::pool::Pool2d;
use super::spec::{InitScheme, LayerSpec, Padding};
use crate::Layout;

/// The shape of one sample's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Channels × height × width, stored as channel-major planes over a pass.
    Image { c: usize, h: usize, w: usize },
    /// A flat vector, stored `rows × n`.
    Flat(usize),
}

impl Shape {
    /// Elements per sample.
    pub(super) fn len(&self) -> usize {
        match *self {
            Shape::Image { c, h, w } => c * h * w,
            Shape::Flat(n) => n,
        }
    }

    /// `(channels, pixels per plane)` of an image.
    pub(super) fn planes(&self) -> Option<(usize, usize)> {
        match *self {
            Shape::Image { c, h, w } => Some((c, h * w)),
            Shape::Flat(_) => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Image { c, h, w } => write!(f, "{c}x{h}x{w}"),
            Shape::Flat(n) => write!(f, "{n} (flat)"),
        }
    }
}

/// An activation: its shape and the scratch slots of its values and of its gradient.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tensor {
    pub(super) shape: Shape,
    pub(super) act: usize,
    pub(super) grad: usize,
}

/// The shortcut of a residual block.
#[derive(Debug, Clone)]
pub(super) enum Shortcut {
    Identity,
    Conv(Conv),
    Dense(Dense),
    /// The block's own layers (`shortcut = [...]`, not empty), run on the block's input. The first
    /// writes its input gradient to a slot of its own (added into the block input's gradient); the
    /// last one's output gradient slot is the block output's.
    Layers(Vec<Node>),
}

/// A residual block: its body, its shortcut (with the projection's output), and its output.
#[derive(Debug, Clone)]
pub(super) struct Residual {
    pub(super) body: Vec<Node>,
    pub(super) shortcut: Shortcut,
    /// The output of a `Conv` or `Dense` projection (its gradient slot is the block output's).
    pub(super) proj: Option<Tensor>,
}

/// What a node computes.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Conv(Conv),
    MaxPool(Pool2d),
    AvgPool(Pool2d),
    GlobalAvgPool,
    Dense(Dense),
    Relu,
    Flatten,
    GroupNorm(GroupNorm),
    /// Drop probability and the layer's number in the network (for its mask).
    Dropout(f32, u64),
    Residual(Box<Residual>),
}

/// One layer of the built network.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) op: Op,
    pub(super) input: Tensor,
    pub(super) output: Tensor,
    /// Extra per-row scratch slots (pooling arg-max, GroupNorm `x̂` and `1/σ`, dropout mask).
    pub(super) aux: [usize; 2],
    /// The layer's key and kind, e.g. `layers[3] (conv2d)`.
    pub(super) label: String,
}

/// How one parameter tensor is initialised.
#[derive(Debug, Clone, Copy)]
pub(super) enum InitRule {
    Uniform(f32),
    Normal(f32),
    Const(f32),
}

/// Slot 0 is the shared input copy ([`crate::ops::SLOT_INPUT`]); 1 and 2 are the im2col block and its
/// gradient.
pub(super) const SLOT_COL: usize = 1;
pub(super) const SLOT_DCOL: usize = 2;

/// Building state: the layout and everything sized per row.
#[derive(Debug)]
pub(super) struct Builder {
    pub(super) layout: Layout,
    pub(super) init: Vec<InitRule>,
    scheme: InitScheme,
    pub(super) classes: usize,
    /// Floats per sample of every slot, and whether the slot is only used by the backward pass.
    pub(super) slots: Vec<(usize, bool)>,
    pub(super) convs: Vec<Conv>,
    /// Forward FLOPs per sample.
    pub(super) flops: f64,
    pub(super) dropouts: u64,
}

impl Builder {
    pub(super) fn new(scheme: InitScheme, classes: usize) -> Self {
        Self {
            layout: Layout::new(),
            init: Vec::new(),
            scheme,
            classes,
            slots: vec![(0, false); 3],
            convs: Vec::new(),
            flops: 0.0,
            dropouts: 0,
        }
    }

    fn slot(&mut self, per_row: usize, backward_only: bool) -> usize {
        self.slots.push((per_row, backward_only));
        self.slots.len() - 1
    }

    pub(super) fn tensor(&mut self, shape: Shape) -> Tensor {
        Tensor {
            shape,
            act: self.slot(shape.len(), false),
            grad: self.slot(shape.len(), true),
        }
    }

    /// Adds a weight (`fan_in` inputs per output) and its optional bias; returns their offsets.
    fn weights(
        &mut self,
        name: &str,
        shape: &[usize],
        fan_in: usize,
        bias: Option<usize>,
    ) -> (usize, Option<usize>) {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let (wr, br) = match self.scheme {
            InitScheme::Pytorch => (InitRule::Uniform(bound), InitRule::Uniform(bound)),
            InitScheme::KaimingNormal => (
                InitRule::Normal((2.0 / fan_in.max(1) as f32).sqrt()),
                InitRule::Const(0.0),
            ),
        };
        let w = self.push(&format!("{name}.weight"), shape, wr);
        let b = bias.map(|n| self.push(&format!("{name}.bias"), &[n], br));
        (w, b)
    }

    fn push(&mut self, name: &str, shape: &[usize], rule: InitRule) -> usize {
        let i = self.layout.push(name, shape);
        self.init.push(rule);
        self.layout.tensors()[i].offset
    }

    /// A convolution on `input`, named `name` in the layout.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        input: Shape,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Result<Conv, String> {
        let Shape::Image { c, h, w } = input else {
            return Err(format!("needs an image input, got {input}"));
        };
        if h + 2 * pad < k || w + 2 * pad < k {
            return Err(format!(
                "kernel {k} with padding {pad} does not fit the input {input}"
            ));
        }
        let (ho, wo) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let (w_off, b_off) = self.weights(name, &[c, k, k, out], c * k * k, bias.then_some(out));
        let conv = Conv {
            cin: c,
            cout: out,
            k,
            stride,
            pad,
            h,
            w,
            ho,
            wo,
            w_off,
            b_off,
        };
        self.flops += conv.flops();
        self.convs.push(conv.clone());
        Ok(conv)
    }

    fn dense(&mut self, name: &str, n: usize, u: usize, bias: bool) -> Dense {
        let (w_off, b_off) = self.weights(name, &[n, u], n, bias.then_some(u));
        let d = Dense { n, u, w_off, b_off };
        self.flops += d.flops();
        d
    }

    /// Builds `specs` on `input`; `key` is the list's key (`layers`), `prefix` the parameter-name
    /// prefix. Returns the nodes and the output.
    pub(super) fn seq(
        &mut self,
        specs: &[LayerSpec],
        input: Tensor,
        key: &str,
        prefix: &str,
    ) -> Result<(Vec<Node>, Tensor), ConfigError> {
        let mut nodes = Vec::with_capacity(specs.len());
        let mut cur = input;
        for (i, spec) in specs.iter().enumerate() {
            let node_key = format!("{key}[{i}]");
            let name = format!("{prefix}{i}");
            let node = self
                .node(spec, cur, &node_key, &name)
                .map_err(|e| e.into_config(&node_key, spec.kind(), cur.shape))?;
            cur = node.output;
            nodes.push(node);
        }
        Ok((nodes, cur))
    }

    /// The shortcut layers `specs` of the residual block at `key` (parameters `{name}.shortcut.{j}.…`)
    /// on the block's `input`; their output must have the body's output `y`, whose gradient slot
    /// becomes theirs too.
    fn shortcut_layers(
        &mut self,
        specs: &[LayerSpec],
        input: Tensor,
        y: Tensor,
        key: &str,
        name: &str,
    ) -> Result<Shortcut, NodeError> {
        let (x, y_grad, y) = (input.shape, y.grad, y.shape);
        if specs.is_empty() {
            return if x == y {
                Ok(Shortcut::Identity)
            } else {
                Err(format!(
                    "the shortcut (empty: the identity) gives {x}, the body's output is {y}"
                )
                .into())
            };
        }
        // The block's input values, with an input gradient of the shortcut's own.
        let sc_in = Tensor {
            shape: x,
            act: input.act,
            grad: self.slot(x.len(), true),
        };
        let sc_key = format!("{key}.residual.shortcut");
        let (mut nodes, out) = self.seq(specs, sc_in, &sc_key, &format!("{name}.shortcut."))?;
        if out.shape != y {
            return Err(format!(
                "the shortcut maps the input {x} to {}, the body's output is {y} (they must be equal)",
                out.shape
            )
            .into());
        }
        if let Some(last) = nodes.last_mut() {
            self.share_grad(last, y_grad);
        }
        Ok(Shortcut::Layers(nodes))
    }

    /// Makes `g` the output gradient slot of `node` and of the layers inside it that share that slot
    /// (a residual block's last body layer, projection or last shortcut layer); frees the old slot.
    fn share_grad(&mut self, node: &mut Node, g: usize) {
        self.slots[node.output.grad].0 = 0;
        node.output.grad = g;
        if let Op::Residual(r) = &mut node.op {
            if let Some(last) = r.body.last_mut() {
                self.share_grad(last, g);
            }
            if let Some(t) = &mut r.proj {
                t.grad = g;
            }
            if let Shortcut::Layers(sc) = &mut r.shortcut
                && let Some(last) = sc.last_mut()
            {
                self.share_grad(last, g);
            }
        }
    }

    fn node(
        &mut self,
        spec: &LayerSpec,
        input: Tensor,
        key: &str,
        name: &str,
    ) -> Result<Node, NodeError> {
        let x = input.shape;
        let mut aux = [0, 0];
        let (op, shape) = match spec {
            LayerSpec::Conv2d(c) => {
                let pad = match c.padding {
                    Padding::Same => (c.kernel - 1) / 2,
                    Padding::Size(p) => p,
                };
                let conv = self.conv(name, x, c.out, c.kernel, c.stride, pad, c.bias)?;
                let s = Shape::Image {
                    c: c.out,
                    h: conv.ho,
                    w: conv.wo,
                };
                (Op::Conv(conv), s)
            }
            LayerSpec::MaxPool(p) | LayerSpec::AvgPool(p) => {
                let Shape::Image { c, h, w } = x else {
                    return Err(format!("needs an image input, got {x}").into());
                };
                if p.size > h || p.size > w {
                    return Err(format!("window {} is larger than the input {x}", p.size).into());
                }
                let (ho, wo) = ((h - p.size) / p.stride + 1, (w - p.size) / p.stride + 1);
                let g = Pool2d {
                    h,
                    w,
                    size: p.size,
                    stride: p.stride,
                    ho,
                    wo,
                };
                let s = Shape::Image { c, h: ho, w: wo };
                if matches!(spec, LayerSpec::MaxPool(_)) {
                    aux[0] = self.slot(s.len(), false);
                    (Op::MaxPool(g), s)
                } else {
                    (Op::AvgPool(g), s)
                }
            }
            LayerSpec::GlobalAvgPool => match x {
                Shape::Image { c, .. } => (Op::GlobalAvgPool, Shape::Flat(c)),
                Shape::Flat(_) => return Err(format!("needs an image input, got {x}").into()),
            },
            LayerSpec::Dense(d) => {
                let Shape::Flat(n) = x else {
                    return Err(format!(
                        "needs a flat input, got {x} (put \"flatten\" or \"global_avg_pool\" before it)"
                    )
                    .into());
                };
                let u = d.units.unwrap_or(self.classes);
                (Op::Dense(self.dense(name, n, u, d.bias)), Shape::Flat(u))
            }
            LayerSpec::Relu => (Op::Relu, x),
            LayerSpec::Flatten => (Op::Flatten, Shape::Flat(x.len())),
            LayerSpec::GroupNorm(g) => {
                let (c, hw) = x.planes().unwrap_or((x.len(), 1));
                if c % g.groups != 0 {
                    return Err(format!(
                        "{} groups do not divide the {c} channels of the input {x}",
                        g.groups
                    )
                    .into());
                }
                let w_off = self.push(&format!("{name}.weight"), &[c], InitRule::Const(1.0));
                let b_off = self.push(&format!("{name}.bias"), &[c], InitRule::Const(0.0));
                aux = [self.slot(x.len(), false), self.slot(g.groups, false)];
                let gn = GroupNorm {
                    c,
                    hw,
                    groups: g.groups,
                    eps: g.eps,
                    flat: x.planes().is_none(),
                    w_off,
                    b_off,
                };
                (Op::GroupNorm(gn), x)
            }
            LayerSpec::Dropout(p) => {
                aux[0] = self.slot(x.len(), false);
                self.dropouts += 1;
                (Op::Dropout(*p as f32, self.dropouts), x)
            }
            LayerSpec::Residual(spec) => {
                let inner = format!("{key}.residual.layers");
                let (nodes, last) =
                    self.seq(&spec.layers, input, &inner, &format!("{name}.body."))?;
                let y = last.shape;
                let (shortcut, proj) = if let Some(layers) = &spec.shortcut {
                    (self.shortcut_layers(layers, input, last, key, name)?, None)
                } else if y == x {
                    (Shortcut::Identity, None)
                } else {
                    let sc = match (x, y) {
                        (
                            Shape::Image { h, w, .. },
                            Shape::Image {
                                c: co,
                                h: ho,
                                w: wo,
                            },
                        ) => {
                            let stride = (1..=h.max(w))
                                .find(|s| (h - 1) / s + 1 == ho && (w - 1) / s + 1 == wo)
                                .ok_or_else(|| {
                                    format!(
                                        "no 1x1-convolution shortcut maps the input {x} to the \
                                         body's output {y}"
                                    )
                                })?;
                            let sc_name = format!("{name}.shortcut");
                            Shortcut::Conv(self.conv(&sc_name, x, co, 1, stride, 0, false)?)
                        }
                        (Shape::Flat(n), Shape::Flat(u)) => {
                            Shortcut::Dense(self.dense(&format!("{name}.shortcut"), n, u, false))
                        }
                        _ => {
                            return Err(format!(
                                "the body maps the input {x} to {y}: no shortcut between an image \
                                 and a flat tensor"
                            )
                            .into());
                        }
                    };
                    let t = Tensor {
                        shape: y,
                        act: self.slot(y.len(), false),
                        grad: last.grad,
                    };
                    (sc, Some(t))
                };
                let output = Tensor {
                    shape: y,
                    act: self.slot(y.len(), false),
                    grad: last.grad,
                };
                return Ok(Node {
                    op: Op::Residual(Box::new(Residual {
                        body: nodes,
                        shortcut,
                        proj,
                    })),
                    input,
                    output,
                    aux,
                    label: format!("{key} (residual)"),
                });
            }
        };
        Ok(Node {
            op,
            input,
            output: self.tensor(shape),
            aux,
            label: format!("{key} ({})", spec.kind()),
        })
    }
}

/// Why a node could not be built: a message about this layer, or an error already naming an inner
/// layer (of a residual body).
#[derive(Debug)]
pub(super) enum NodeError {
    Here(String),
    Inner(ConfigError),
}

impl From<String> for NodeError {
    fn from(s: String) -> Self {
        NodeError::Here(s)
    }
}

impl From<ConfigError> for NodeError {
    fn from(e: ConfigError) -> Self {
        NodeError::Inner(e)
    }
}

impl NodeError {
    fn into_config(self, key: &str, kind: &str, input: Shape) -> ConfigError {
        match self {
            NodeError::Here(m) => ConfigError::new(key, format!("{kind} on input {input}: {m}")),
            NodeError::Inner(e) => e,
        }
    }
}
