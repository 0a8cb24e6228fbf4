//! FRL — Federated Rank Learning (Mozaffari, Shejwalkar, Houmansadr; USENIX Security 2023),
//! `../shared/algorithms.md` §5. Needs a supermask model (`model.kind = "supermask_mlp"` or
//! `"supermask_cnn"`): the global "model" is the vector of edge scores, and every tensor of the model's
//! layout is one layer of the vote.
//!
//! Client (§5.3): receives the global ranking of every layer and rebuilds the global scores by giving
//! the layer's sorted **initial** score values to the edges in ranking order (`s[R_g[j]] = s0_sorted[j]`;
//! the initial scores come from the model's own seed, so nothing but rankings is shipped). It trains
//! the scores with SGD (the `[train]` section: `lr` with `lr_decay` per round, `momentum`,
//! `weight_decay`, `epochs`, `batch_size`; a fresh optimiser every round) and, with `cosine = true`, a
//! cosine annealing of the learning rate over the local epochs stepped once per epoch
//! (`lr_e = lr_t·(1 + cos(π e / E))/2`, PyTorch's `CosineAnnealingLR(T_max = E)`). It sends one
//! ranking per layer, `R_u = argsort(scores)` ascending on the **signed** scores, ties broken by edge
//! index, as a bit-packed permutation of `⌈log2 n_l⌉` bits per index (tensor `ranking.<layer>`,
//! [`TensorData::Bytes`]).
//!
//! Server (§5.4): for every layer independently, the reputation of edge `e` is the sum over voters of
//! its position in their rankings (`u64`); the global ranking sorts edges by reputation ascending, ties
//! broken by edge index; the new global scores are `s[R_g[j]] = s0_sorted[j]`, so the multiset of score
//! values never changes. Downlink: the global ranking, packed the same way. Server memory: one `u64`
//! per edge for the running vote, plus the sorted initial scores; no per-client state.
//!
//! Rank-reversal attack (§5.5): see [`reverse_rankings`] and [`crate::attack`].

use std::ops::Range;
use std::sync::{Arc, Mutex};

use fedsim_nn::order::{argsort_u32, ordered_bits};
use serde::{Deserialize, Serialize};

use super::{ClientState, Init, Reporter, Strategy, StrategyError};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies, UpdateKind};
use crate::{ClientId, LocalTrainer, Payload, TensorData};

/// FRL settings (`[strategy] kind = "frl"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrlConfig {
    /// Cosine annealing of the local learning rate over the local epochs (stepped once per epoch).
    /// Ignored when `train.steps` is set.
    #[serde(default = "yes")]
    pub cosine: bool,
}

fn yes() -> bool {
    true
}

impl Default for FrlConfig {
    fn default() -> Self {
        Self { cosine: true }
    }
}

/// Prefix of the per-layer ranking tensors in tasks and updates.
pub const RANKING: &str = "ranking.";

/// One layer of the vote: a tensor of the model's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Tensor name (e.g. `fc1.scores`); the payload tensor is `ranking.<name>`.
    pub name: String,
    /// Its range in the parameter vector.
    pub range: Range<usize>,
}

impl Layer {
    fn tensor(&self) -> String {
        format!("{RANKING}{}", self.name)
    }
}

/// The layers of a model: one per tensor of its layout.
pub fn layers_of(model: &dyn fedsim_nn::Model) -> Vec<Layer> {
    model
        .layout()
        .tensors()
        .iter()
        .map(|t| Layer {
            name: t.name.clone(),
            range: t.range(),
        })
        .collect()
}

/// Bits per index of a permutation of `n` elements: `⌈log2 n⌉` (0 for n ≤ 1).
pub fn index_bits(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

/// Bytes of a packed permutation of `n` elements: `⌈n·⌈log2 n⌉ / 8⌉`.
pub fn packed_len(n: usize) -> usize {
    (n * index_bits(n) as usize).div_ceil(8)
}

/// Packs a permutation of `0..perm.len()` with [`index_bits`] bits per index, least significant bit first.
pub fn pack_permutation(perm: &[u32]) -> Vec<u8> {
    let w = index_bits(perm.len());
    let mut out = Vec::with_capacity(packed_len(perm.len()));
    let (mut acc, mut nbits) = (0u64, 0u32);
    for &v in perm {
        acc |= (v as u64) << nbits;
        nbits += w;
        while nbits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out.push(acc as u8);
    }
    out
}

/// Unpacks what [`pack_permutation`] wrote for `n` elements, checking that it is a permutation of
/// `0..n` (exact length, every index in range, no repeats).
pub fn unpack_permutation(bytes: &[u8], n: usize) -> Result<Vec<u32>, String> {
    if n > u32::MAX as usize {
        return Err(format!("{n} elements do not fit 32-bit indices"));
    }
    let want = packed_len(n);
    if bytes.len() != want {
        return Err(format!(
            "a ranking of {n} edges takes {want} bytes, got {}",
            bytes.len()
        ));
    }
    let w = index_bits(n);
    let mask = if w == 0 { 0 } else { (1u64 << w) - 1 };
    let mut out = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let (mut acc, mut nbits) = (0u64, 0u32);
    let mut it = bytes.iter();
    for i in 0..n {
        while nbits < w {
            let b = it.next().copied().unwrap_or(0);
            acc |= (b as u64) << nbits;
            nbits += 8;
        }
        let v = (acc & mask) as usize;
        acc >>= w;
        nbits -= w;
        if v >= n {
            return Err(format!(
                "position {i} holds edge {v}, out of range for {n} edges"
            ));
        }
        if std::mem::replace(&mut seen[v], true) {
            return Err(format!(
                "edge {v} appears twice (position {i}): not a permutation"
            ));
        }
        out.push(v as u32);
    }
    if acc != 0 {
        return Err("non-zero padding bits after the last index".into());
    }
    Ok(out)
}

/// `argsort(scores)` ascending on the signed scores, ties broken by edge index (a stable sort).
pub fn ranking(scores: &[f32]) -> Vec<u32> {
    let bits: Vec<u32> = scores.iter().map(|&s| ordered_bits(s)).collect();
    argsort_u32(&bits)
}

/// Adds each edge's position in `ranking` to `votes` (`votes[ranking[j]] += j`).
pub fn add_positions(votes: &mut [u64], ranking: &[u32]) {
    for (j, &e) in ranking.iter().enumerate() {
        votes[e as usize] += j as u64;
    }
}

/// The ranking by reputation ascending, ties broken by edge index.
pub fn rank_by_votes(votes: &[u64]) -> Vec<u32> {
    if votes.iter().all(|&v| v <= u32::MAX as u64) {
        let v32: Vec<u32> = votes.iter().map(|&v| v as u32).collect();
        return argsort_u32(&v32);
    }
    let mut order: Vec<u32> = (0..votes.len() as u32).collect();
    // Stable: equal reputations keep ascending edge order.
    order.sort_by_key(|&e| votes[e as usize]);
    order
}

/// The vote of §5.4 on one layer: sum of rank positions, argsort ascending with ties by edge index.
pub fn vote(rankings: &[&[u32]]) -> Vec<u32> {
    let n = rankings.first().map_or(0, |r| r.len());
    let mut votes = vec![0u64; n];
    for r in rankings {
        add_positions(&mut votes, r);
    }
    rank_by_votes(&votes)
}

/// Writes `out[ranking[j]] = sorted[j]`.
pub fn assign_scores(ranking: &[u32], sorted: &[f32], out: &mut [f32]) {
    for (&e, &v) in ranking.iter().zip(sorted) {
        out[e as usize] = v;
    }
}

/// The rank-reversal collusion of §5.5 on one layer: the malicious clients' honest rankings are summed
/// as position vectors, and every malicious client submits `argsort(sum)` **descending** (ties by
/// edge index ascending), the reverse of the attackers' aggregate ranking.
pub fn reverse_rankings(honest: &[&[u32]]) -> Vec<u32> {
    let n = honest.first().map_or(0, |r| r.len());
    let mut votes = vec![0u64; n];
    for r in honest {
        add_positions(&mut votes, r);
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&e| std::cmp::Reverse(votes[e as usize]));
    order
}

/// Applies [`reverse_rankings`] to the updates of the malicious clients of a round, layer by layer, in
/// place (each update must hold a valid ranking for every layer).
pub fn collude_rank_reversal(
    layers: &[Layer],
    updates: &mut [(ClientId, Payload)],
) -> Result<(), StrategyError> {
    if updates.is_empty() {
        return Ok(());
    }
    for layer in layers {
        let name = layer.tensor();
        let mut honest = Vec::with_capacity(updates.len());
        for (c, p) in updates.iter() {
            honest.push(
                decode_layer(p, layer)
                    .map_err(|msg| StrategyError::InvalidUpdate { client: *c, msg })?,
            );
        }
        let refs: Vec<&[u32]> = honest.iter().map(Vec::as_slice).collect();
        let bytes = pack_permutation(&reverse_rankings(&refs));
        for (_, p) in updates.iter_mut() {
            p.push(
                name.clone(),
                TensorData::Bytes {
                    bytes: bytes.clone(),
                },
            );
        }
    }
    Ok(())
}

fn decode_layer(p: &Payload, layer: &Layer) -> Result<Vec<u32>, String> {
    let name = layer.tensor();
    match p.get(&name) {
        Some(TensorData::Bytes { bytes }) => {
            unpack_permutation(bytes, layer.range.len()).map_err(|e| format!("`{name}`: {e}"))
        }
        Some(_) => Err(format!("`{name}` is not a packed ranking (bytes)")),
        None => Err(format!("ranking `{name}` is missing")),
    }
}

fn encode_rankings(layers: &[Layer], scores: &[f32]) -> Payload {
    let mut p = Payload::new();
    for l in layers {
        p.push(
            l.tensor(),
            TensorData::Bytes {
                bytes: pack_permutation(&ranking(&scores[l.range.clone()])),
            },
        );
    }
    p
}

/// Sorts each layer's values ascending (the `s0_sorted` of §5.4), in the parameter layout.
fn sorted_per_layer(layers: &[Layer], scores: &[f32]) -> Vec<f32> {
    let mut s = scores.to_vec();
    for l in layers {
        s[l.range.clone()].sort_unstable_by(f32::total_cmp);
    }
    s
}

/// A client's layers and its sorted initial scores.
type ClientInit = Arc<(Vec<Layer>, Vec<f32>)>;

/// FRL's server state and running vote.
#[derive(Debug)]
pub struct Frl {
    config: FrlConfig,
    layers: Vec<Layer>,
    /// The initial scores sorted ascending within each layer.
    sorted_init: Vec<f32>,
    votes: Vec<u64>,
    voters: usize,
    /// Client side: the sorted initial scores of the model the client trains (computed once).
    client_sorted: Mutex<Option<ClientInit>>,
}

impl Frl {
    /// A new FRL instance.
    pub fn new(config: FrlConfig) -> Self {
        Self {
            config,
            layers: Vec::new(),
            sorted_init: Vec::new(),
            votes: Vec::new(),
            voters: 0,
            client_sorted: Mutex::new(None),
        }
    }

    /// The layers of the vote (after `init`).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    fn client_init(&self, model: &dyn fedsim_nn::Model) -> ClientInit {
        let mut guard = self
            .client_sorted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = guard.as_ref()
            && c.1.len() == model.num_params()
        {
            return Arc::clone(c);
        }
        let layers = layers_of(model);
        // A supermask model draws its initial scores from its own seed, whatever the argument.
        let sorted = sorted_per_layer(&layers, &model.init_params(0));
        let c = Arc::new((layers, sorted));
        *guard = Some(Arc::clone(&c));
        c
    }
}

impl Strategy for Frl {
    fn update_tensors(&self) -> Vec<String> {
        self.layers.iter().map(Layer::tensor).collect()
    }

    fn name(&self) -> String {
        format!("frl(cosine={})", self.config.cosine)
    }

    fn init(&mut self, init: &Init<'_>) {
        self.layers = match init.model {
            Some(m) => layers_of(m),
            None => vec![Layer {
                name: "all".into(),
                range: 0..init.global.len(),
            }],
        };
        self.sorted_init = sorted_per_layer(&self.layers, init.global);
        self.votes = vec![0; init.global.len()];
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        encode_rankings(&self.layers, global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], global: &[f32]) {
        self.votes.clear();
        self.votes.resize(global.len(), 0);
        self.voters = 0;
    }

    fn validate_update(
        &self,
        client: ClientId,
        update: &Payload,
        _num_params: usize,
    ) -> Result<(), StrategyError> {
        let bad = |msg| StrategyError::InvalidUpdate { client, msg };
        if update.tensors.len() != self.layers.len() {
            return Err(bad(format!(
                "expected {} rankings (one per layer), got {} tensors",
                self.layers.len(),
                update.tensors.len()
            )));
        }
        for l in &self.layers {
            decode_layer(update, l).map_err(bad)?;
        }
        Ok(())
    }

    fn accept(&mut self, reporter: Reporter, update: Payload) -> Result<(), StrategyError> {
        // Decode every layer before touching the vote, so a bad update leaves it unchanged.
        let mut decoded = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            decoded.push(
                decode_layer(&update, l).map_err(|msg| StrategyError::InvalidUpdate {
                    client: reporter.id,
                    msg,
                })?,
            );
        }
        for (l, r) in self.layers.iter().zip(&decoded) {
            add_positions(&mut self.votes[l.range.clone()], r);
        }
        self.voters += 1;
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.voters == 0 {
            return;
        }
        for l in &self.layers {
            let r = rank_by_votes(&self.votes[l.range.clone()]);
            assign_scores(
                &r,
                &self.sorted_init[l.range.clone()],
                &mut global[l.range.clone()],
            );
        }
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        vec![("frl_voters".into(), self.voters as f64)]
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let init = self.client_init(trainer.model);
        let (layers, sorted) = (&init.0, &init.1);
        let mut scores = vec![0.0f32; trainer.model.num_params()];
        for l in layers {
            let r = decode_layer(task, l).map_err(StrategyError::InvalidTask)?;
            assign_scores(&r, &sorted[l.range.clone()], &mut scores[l.range.clone()]);
        }
        train_scores(trainer, &mut scores, self.config.cosine);
        Ok(encode_rankings(layers, &scores))
    }
}

/// Local score training (§5.3): SGD with the `[train]` momentum and weight decay, the round's learning
/// rate, and (with `cosine`) a per-epoch cosine annealing over the local epochs.
fn train_scores(trainer: &mut LocalTrainer<'_>, scores: &mut [f32], cosine: bool) {
    let cfg = trainer.config;
    let lr0 = trainer.lr();
    let epochs = cfg.epochs.max(1);
    let per_epoch = if cfg.steps.is_none() && cosine {
        (cfg.work(trainer.data.len()).steps / epochs).max(1)
    } else {
        usize::MAX
    };
    let mut opt = fedsim_nn::Sgd::new(cfg.momentum, cfg.weight_decay);
    let mut grad = vec![0.0f32; scores.len()];
    for (i, range) in trainer.batches().into_iter().enumerate() {
        let lr = if per_epoch == usize::MAX {
            lr0
        } else {
            let e = (i / per_epoch) as f64;
            (lr0 as f64 * 0.5 * (1.0 + (std::f64::consts::PI * e / epochs as f64).cos())) as f32
        };
        trainer.loss_grad(scores, range, &mut grad);
        opt.step(lr, scores, &grad);
    }
}

impl Kind<Strategies> for FrlConfig {
    const KIND: &'static str = "frl";
    const SUMMARY: &'static str = "FRL (federated rank learning): clients send per-layer edge rankings, the server votes (supermask models)";
    const EXAMPLE_SETTINGS: &'static [&'static str] = &[
        "model={kind=\"supermask_mlp\", hidden=[8]}",
        "train.momentum=0.9",
    ];

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            update: UpdateKind::Rankings,
            needs_supermask_model: true,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(Frl::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop, prop_assert_eq, proptest};
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    use rand_chacha::ChaCha8Rng;

    fn perm(n: usize, seed: u64) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        p.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        p
    }

    fn server(global: &[f32]) -> Frl {
        let mut s = Frl::new(FrlConfig::default());
        s.init(&Init {
            global,
            num_clients: 3,
            probabilities: None,
            model: None,
            data: None,
        });
        s
    }

    fn update(r: &[u32]) -> Payload {
        Payload::new().with(
            "ranking.all",
            TensorData::Bytes {
                bytes: pack_permutation(r),
            },
        )
    }

    fn round(s: &mut Frl, global: &mut [f32], rankings: &[Vec<u32>]) {
        s.begin_round(0, &[], global);
        for (i, r) in rankings.iter().enumerate() {
            s.accept(
                Reporter {
                    id: i as u32,
                    num_samples: 1,
                    staleness: 0,
                },
                update(r),
            )
            .unwrap();
        }
        s.finish_round(0, global, &[]);
    }

    #[test]
    fn identical_rankings_vote_to_that_ranking() {
        let r = perm(1000, 1);
        for k in 1..5 {
            let v: Vec<&[u32]> = (0..k).map(|_| r.as_slice()).collect();
            assert_eq!(vote(&v), r);
        }
        // Through the server half: the new global ranks as the voters did.
        let mut global: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut s = server(&global);
        round(&mut s, &mut global, &[r.clone(), r.clone(), r.clone()]);
        assert_eq!(ranking(&global), r);
    }

    #[test]
    fn two_identical_rankings_outvote_one_reversed() {
        let r = perm(500, 2);
        let rev: Vec<u32> = r.iter().rev().copied().collect();
        // Two voters at positions j, j and one at n−1−j: the sums 2j + (n−1−j) = j + n − 1 keep r's order.
        assert_eq!(vote(&[&r, &r, &rev]), r);
        assert_eq!(vote(&[&rev, &r, &r]), r);
    }

    #[test]
    fn multiset_of_global_scores_is_invariant() {
        let mut global: Vec<f32> = (0..300)
            .map(|i| ((i * 7919) % 211) as f32 - 100.0)
            .collect();
        let mut want = global.clone();
        want.sort_by(f32::total_cmp);
        let mut s = server(&global);
        for t in 0..5 {
            let rs: Vec<Vec<u32>> = (0..4).map(|u| perm(300, 10 * t + u)).collect();
            round(&mut s, &mut global, &rs);
            let mut got = global.clone();
            got.sort_by(f32::total_cmp);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn tie_breaking_is_deterministic_by_edge_index() {
        // Two voters with reversed rankings: every edge has the same reputation n − 1.
        let r = perm(64, 3);
        let rev: Vec<u32> = r.iter().rev().copied().collect();
        let want: Vec<u32> = (0..64).collect();
        for _ in 0..3 {
            assert_eq!(vote(&[&r, &rev]), want);
            assert_eq!(vote(&[&rev, &r]), want);
        }
        // Reputations beyond 32 bits take the stable-sort path, with the same tie rule.
        let big = [u64::MAX - 1, 5, u64::MAX - 1, 5];
        assert_eq!(rank_by_votes(&big), vec![1, 3, 0, 2]);
        assert_eq!(rank_by_votes(&[7, 5, 7, 5]), vec![1, 3, 0, 2]);
        // Client rankings: equal scores rank by index.
        assert_eq!(ranking(&[1.0, 0.0, 1.0, 0.0, -0.0]), vec![4, 1, 3, 0, 2]);
        // Reverse collusion: ties by index ascending.
        assert_eq!(reverse_rankings(&[&[0, 1, 2], &[2, 1, 0]]), vec![0, 1, 2]);
    }

    #[test]
    fn round_zero_ranking_is_the_sort_of_the_initial_scores() {
        let global = vec![0.3, -0.2, 0.9, 0.0];
        let s = server(&global);
        let task = s.broadcast(0, &global);
        let Some(TensorData::Bytes { bytes }) = task.get("ranking.all") else {
            panic!("no ranking")
        };
        assert_eq!(unpack_permutation(bytes, 4).unwrap(), vec![1, 3, 0, 2]);
    }

    #[test]
    fn packed_sizes_are_exact() {
        assert_eq!(index_bits(1), 0);
        assert_eq!(index_bits(2), 1);
        assert_eq!(index_bits(3), 2);
        assert_eq!(index_bits(1024), 10);
        assert_eq!(index_bits(1025), 11);
        // The supermask 2NN: 156,800·18 + 40,000·16 + 2,000·11 bits.
        assert_eq!(index_bits(156_800), 18);
        assert_eq!(index_bits(40_000), 16);
        assert_eq!(index_bits(2_000), 11);
        let total: usize = [156_800, 40_000, 2_000]
            .iter()
            .map(|&n| packed_len(n))
            .sum();
        assert_eq!(total, (156_800 * 18 + 40_000 * 16 + 2_000 * 11) / 8);
        let r = perm(156_800, 4);
        let b = pack_permutation(&r);
        assert_eq!(b.len(), 352_800);
        assert_eq!(unpack_permutation(&b, r.len()).unwrap(), r);
        let p = update(&r);
        assert_eq!(p.encoded_len(), "ranking.all".len() + 352_800);
    }

    proptest! {
        #[test]
        fn pack_roundtrip(n in 1usize..3000, seed in 0u64..1000) {
            let r = perm(n, seed);
            let b = pack_permutation(&r);
            prop_assert_eq!(b.len(), packed_len(n));
            prop_assert_eq!(unpack_permutation(&b, n).unwrap(), r);
        }

        #[test]
        fn vote_of_one_is_identity(v in prop::collection::vec(-5i32..5, 1..200)) {
            let scores: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            let r = ranking(&scores);
            prop_assert_eq!(vote(&[&r]), r);
        }
    }

    #[test]
    fn invalid_rankings_are_rejected_with_a_reason() {
        let global = vec![0.0f32; 5];
        let mut s = server(&global);
        s.begin_round(0, &[], &global);
        let who = Reporter {
            id: 7,
            num_samples: 1,
            staleness: 0,
        };
        // A repeated edge.
        let e = s.accept(who, update(&[0, 1, 1, 3, 4])).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        // An index out of range (5 in a 3-bit field).
        let e = s.accept(who, update(&[0, 1, 2, 3, 5])).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        // Wrong length.
        let e = s.accept(who, update(&[0, 1, 2, 3])).unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
        // Missing, or not bytes.
        let p = Payload::new().with("ranking.all", TensorData::U32 { values: vec![0] });
        assert!(s.validate_update(7, &p, 5).is_err());
        assert!(s.validate_update(7, &Payload::new(), 5).is_err());
        assert!(s.validate_update(7, &update(&[4, 3, 2, 1, 0]), 5).is_ok());
        assert_eq!(s.voters, 0, "rejected updates do not vote");
    }
}
