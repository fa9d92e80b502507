//! The factor KV cache: per stream, per layer, per menu option, each token kept exactly as chosen.
//!
//! A rank-ρ token stores `A_K, A_V: [ρ, h]` and `B_K (pre-rotated), B_V: [ρ, d_h]`; a `full`
//! token stores dense `K, V: [h_kv, d_h]`; a dropped token stores nothing. Nothing is padded to the
//! maximum rank, so [`KvCache::bytes`] (read off what is held) equals the cost model.
//!
//! A timed token (`recent:W`, a schedule `first/W/then`) is kept in its first form in a slot of
//! its own; once W more queries have seen it, it leaves from the front of that first-in,
//! first-out slot and is either evicted or demoted in place: its leading `ρ'` components move to
//! the option's *late* slot (for `full/W/rank:ρ'` the rank-ρ' factors were kept beside the dense
//! K/V in a *shadow* slot, which the kernel does not read but the bytes count). Nothing is
//! recomputed, and the bytes held at every step are what [`crate::cost::bytes_at`] charges.
//!
//! Two storages, one per kind of device ([`Storage::for_device`]): on a CPU the tokens live in host
//! memory in blocks of 64 ([`crate::host::Tiles`]) read by the fused kernel of [`crate::host`]; on
//! an accelerator they are device tensors (dense groups head-major, `[h_kv, N, d_h]`) read by
//! tensor ops. Both give the same attention (tested against each other and the parallel forward).

use std::collections::VecDeque;

use burn::tensor::{Device, Distribution, Tensor};

use crate::config::{ModelConfig, StoreOption};
use crate::cost::CACHE_ELEMENT_BYTES;
use crate::error::{Error, Result};
use crate::host::{HeadDims, HostGroup, HostKind, Tiles, to_host};
use crate::projected::Projected;

/// Where a cache keeps its tokens, and so which kernel a decode step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Host memory in blocks of 64 tokens, read by the fused CPU kernel.
    Host,
    /// Device tensors, read by tensor ops.
    Tensors,
}

impl Storage {
    /// [`Storage::Host`] for CPU devices (flex, libtorch's CPU), [`Storage::Tensors`] otherwise.
    pub fn for_device(device: &Device) -> Self {
        if crate::device::is_cpu(device) { Storage::Host } else { Storage::Tensors }
    }
}

/// The tokens of one layer of one stream that share one menu option.
// Both variants hold only tensor handles; boxing the larger one would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Group {
    /// Rank-ρ factor tokens.
    Factors {
        /// ρ.
        rank: usize,
        /// `[N, ρ, h]`.
        a_k: Tensor<3>,
        /// `[N, ρ, d_h]`, RoPE already applied.
        b_k: Tensor<3>,
        /// `[N, ρ, h]`.
        a_v: Tensor<3>,
        /// `[N, ρ, d_h]`.
        b_v: Tensor<3>,
    },
    /// Dense tokens, head-major.
    Dense {
        /// `[h_kv, N, d_h]`, RoPE already applied.
        k: Tensor<3>,
        /// `[h_kv, N, d_h]`.
        v: Tensor<3>,
    },
}

impl Group {
    fn tensors(&self) -> Vec<&Tensor<3>> {
        match self {
            Group::Factors { a_k, b_k, a_v, b_v, .. } => vec![a_k, b_k, a_v, b_v],
            Group::Dense { k, v } => vec![k, v],
        }
    }

    /// Number of tokens held.
    pub fn len(&self) -> usize {
        match self {
            Group::Factors { a_k, .. } => a_k.dims()[0],
            Group::Dense { k, .. } => k.dims()[1],
        }
    }

    /// Whether the group holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, read off the tensors' shapes.
    pub fn bytes(&self) -> usize {
        self.tensors().iter().map(|t| t.dims().iter().product::<usize>()).sum::<usize>() * CACHE_ELEMENT_BYTES
    }

    /// The group without its `n` oldest tokens (`None` when nothing is left).
    fn pop_front(self, n: usize) -> Option<Group> {
        let keep = self.len() - n;
        if keep == 0 {
            return None;
        }
        let tail = |x: Tensor<3>, dim: usize| x.narrow(dim, n, keep);
        Some(match self {
            Group::Factors { rank, a_k, b_k, a_v, b_v } => {
                Group::Factors { rank, a_k: tail(a_k, 0), b_k: tail(b_k, 0), a_v: tail(a_v, 0), b_v: tail(b_v, 0) }
            }
            Group::Dense { k, v } => Group::Dense { k: tail(k, 1), v: tail(v, 1) },
        })
    }

    /// The `n` oldest tokens.
    fn front(&self, n: usize) -> Group {
        let head = |x: &Tensor<3>, dim: usize| x.clone().narrow(dim, 0, n);
        match self {
            Group::Factors { rank, a_k, b_k, a_v, b_v } => Group::Factors {
                rank: *rank,
                a_k: head(a_k, 0),
                b_k: head(b_k, 0),
                a_v: head(a_v, 0),
                b_v: head(b_v, 0),
            },
            Group::Dense { k, v } => Group::Dense { k: head(k, 1), v: head(v, 1) },
        }
    }

    /// These factor tokens cut to their leading `rho` components (nested ranks).
    fn truncated(self, rho: usize) -> Group {
        match self {
            Group::Factors { a_k, b_k, a_v, b_v, .. } => {
                let cut = |x: Tensor<3>| x.narrow(1, 0, rho);
                Group::Factors { rank: rho, a_k: cut(a_k), b_k: cut(b_k), a_v: cut(a_v), b_v: cut(b_v) }
            }
            Group::Dense { .. } => unreachable!("only factor tokens are demoted by truncation"),
        }
    }

    fn append(self, new: Group) -> Group {
        let cat = |a: Tensor<3>, b: Tensor<3>| Tensor::cat(vec![a, b], 0);
        match (self, new) {
            (
                Group::Factors { rank, a_k, b_k, a_v, b_v },
                Group::Factors { a_k: ak, b_k: bk, a_v: av, b_v: bv, .. },
            ) => Group::Factors { rank, a_k: cat(a_k, ak), b_k: cat(b_k, bk), a_v: cat(a_v, av), b_v: cat(b_v, bv) },
            (Group::Dense { k, v }, Group::Dense { k: k2, v: v2 }) => {
                let cat1 = |a: Tensor<3>, b: Tensor<3>| Tensor::cat(vec![a, b], 1);
                Group::Dense { k: cat1(k, k2), v: cat1(v, v2) }
            }
            _ => unreachable!("a menu slot always holds the same kind of group"),
        }
    }
}

/// One menu option's tokens in one layer of one stream.
// Both variants are small handles to their data; boxing the larger one would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Slot {
    /// Device tensors.
    Tensors(Group),
    /// Host tiles.
    Host(HostGroup),
}

impl Slot {
    /// Tokens held.
    pub fn len(&self) -> usize {
        match self {
            Slot::Tensors(g) => g.len(),
            Slot::Host(g) => g.tiles.len(),
        }
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Slot::Tensors(g) => g.bytes(),
            Slot::Host(g) => g.tiles.bytes(),
        }
    }
}

/// One layer of one stream: a slot per menu option (none for `drop` or before the first token),
/// and for timed options the slots of their later and shadow forms.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    slots: Vec<Option<Slot>>,
    /// Per option, demoted tokens in their later form (attended).
    late: Vec<Option<Slot>>,
    /// Per option, factors kept beside dense tokens for their demotion (not attended).
    shadow: Vec<Option<Slot>>,
    /// Per option, the positions of the tokens a timed slot holds in their first form, oldest first.
    positions: Vec<VecDeque<usize>>,
    /// Per option, the positions of demoted tokens that expire later (`first/W/then/W2`).
    late_positions: Vec<VecDeque<usize>>,
    /// Per option, tokens a review decided to keep as they were (review mode).
    settled: Vec<Option<Slot>>,
}

impl LayerCache {
    fn attended(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().chain(&self.late).chain(&self.settled).flatten()
    }

    /// The non-empty tensor groups, in menu order (first forms, then later forms).
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.attended().filter_map(|s| match s {
            Slot::Tensors(g) => Some(g),
            Slot::Host(_) => None,
        })
    }

    /// The non-empty host groups, in menu order (first forms, then later forms).
    pub fn host_groups(&self) -> impl Iterator<Item = &HostGroup> {
        self.attended().filter_map(|s| match s {
            Slot::Host(g) => Some(g),
            Slot::Tensors(_) => None,
        })
    }

    /// Bytes held by every group of this layer (shadow factors included).
    pub fn bytes(&self) -> usize {
        self.slots.iter().chain(&self.late).chain(&self.settled).chain(&self.shadow).flatten().map(Slot::bytes).sum()
    }

    /// Remove the `n` oldest tokens of `slot`, returning them token-major (host) or as a group.
    fn take_front(slot: &mut Option<Slot>, n: usize) -> Option<Slot> {
        let taken = match slot.take()? {
            Slot::Tensors(g) => {
                let front = g.front(n);
                *slot = g.pop_front(n).map(Slot::Tensors);
                Slot::Tensors(front)
            }
            Slot::Host(mut g) => {
                let mut front = Tiles::new(g.tiles.width());
                (0..n).for_each(|i| front.push(&g.tiles.token(i)));
                g.tiles.pop_front(n);
                let kind = g.kind;
                if !g.tiles.is_empty() {
                    *slot = Some(Slot::Host(g));
                }
                Slot::Host(HostGroup { kind, tiles: front })
            }
        };
        Some(taken)
    }

    /// Evict the `n` oldest tokens of `slot` (nothing is copied out).
    fn drop_front(slot: &mut Option<Slot>, n: usize) {
        *slot = match slot.take() {
            Some(Slot::Tensors(g)) => g.pop_front(n).map(Slot::Tensors),
            Some(Slot::Host(mut g)) => {
                g.tiles.pop_front(n);
                (!g.tiles.is_empty()).then_some(Slot::Host(g))
            }
            None => None,
        };
    }

    /// Remove the `index`-th token (oldest first) of `slot`.
    fn remove(slot: &mut Option<Slot>, index: usize) {
        if let Some(Slot::Host(g)) = slot {
            g.tiles.remove(index);
            if g.tiles.is_empty() {
                *slot = None;
            }
            return;
        }
        Self::take_at(slot, index);
    }

    /// Take the `index`-th token (oldest first) out of `slot`, the others keeping their order.
    fn take_at(slot: &mut Option<Slot>, index: usize) -> Option<Slot> {
        let front = if index > 0 { Self::take_front(slot, index) } else { None };
        let taken = Self::take_front(slot, 1);
        if let Some(front) = front {
            let rest = slot.take();
            *slot = Some(front);
            if let Some(rest) = rest {
                Self::append(slot, rest);
            }
        }
        taken
    }

    /// Append `new` (same kind) to `slot`.
    fn append(slot: &mut Option<Slot>, new: Slot) {
        *slot = Some(match (slot.take(), new) {
            (None, new) => new,
            (Some(Slot::Tensors(g)), Slot::Tensors(n)) => Slot::Tensors(g.append(n)),
            (Some(Slot::Host(mut g)), Slot::Host(n)) => {
                (0..n.tiles.len()).for_each(|i| g.tiles.push(&n.tiles.token(i)));
                Slot::Host(g)
            }
            _ => unreachable!("a cache holds one storage"),
        });
    }

    /// Move the `n` oldest first-form tokens of option `o` on: dropped, or demoted to `later`.
    fn advance(&mut self, o: usize, n: usize, dims: HeadDims, later: Option<HostKind>) {
        let Some(HostKind::Factors { rank: rho }) = later else {
            // Evicted (`recent:W`, `first/W/drop`): on the rollout's hot path, so nothing is copied.
            Self::drop_front(&mut self.slots[o], n);
            return;
        };
        // Demoted: from the shadow factors when the first form is dense, else from the first form.
        let source = if self.shadow[o].is_some() {
            Self::drop_front(&mut self.slots[o], n);
            Self::take_front(&mut self.shadow[o], n)
        } else {
            Self::take_front(&mut self.slots[o], n)
        };
        if let Some(source) = source {
            Self::append(&mut self.late[o], truncated(source, rho, dims));
        }
    }
}

/// Factor tokens cut to their leading `rho` components (nested ranks: no recomputation).
fn truncated(source: Slot, rho: usize, dims: HeadDims) -> Slot {
    match source {
        Slot::Tensors(g) => Slot::Tensors(g.truncated(rho)),
        Slot::Host(g) => {
            let HostKind::Factors { rank } = g.kind else { unreachable!("demotions keep factors") };
            let kind = HostKind::Factors { rank: rho };
            let mut tiles = Tiles::new(dims.width(kind));
            let per = dims.heads + dims.head_dim;
            for i in 0..g.tiles.len() {
                let token = g.tiles.token(i);
                let (keys, values) = token.split_at(rank * per);
                tiles.push(&[&keys[..rho * per], &values[..rho * per]].concat());
            }
            Slot::Host(HostGroup { kind, tiles })
        }
    }
}

/// The cache of a batch of streams that advance together, one token per step.
#[derive(Clone, Debug)]
pub struct KvCache {
    menu: Vec<StoreOption>,
    /// Per menu option, the layout its tokens are first stored in (`None` for `drop`; a
    /// `recent:W` token is stored like the exact option).
    kinds: Vec<Option<HostKind>>,
    /// Per menu option, the layout of its demoted tokens (`None`: never demoted to a kept form).
    late_kinds: Vec<Option<HostKind>>,
    /// Per menu option, the layout of the factors kept beside its dense tokens.
    shadow_kinds: Vec<Option<HostKind>>,
    dims: HeadDims,
    storage: Storage,
    streams: Vec<Vec<LayerCache>>,
    /// Tokens per stream and menu option that the next query sees in their first form,
    /// `[stream][layer][option]` (dropped tokens counted where chosen; expired or demoted timed
    /// tokens no longer).
    counts: Vec<Vec<Vec<usize>>>,
    /// Demoted tokens per stream, layer and menu option (seen in their later form).
    late_counts: Vec<Vec<Vec<usize>>>,
    /// Per stream, the most bytes held at once (a token counted from its own step on).
    peak: Vec<usize>,
    position: usize,
    /// Review mode: the age at which every plain kept token comes up for a second decision.
    review_age: Option<usize>,
}

impl KvCache {
    /// An empty cache for `batch` streams of a model with config `cfg`, stored as suits `device`.
    pub fn new(cfg: &ModelConfig, batch: usize, device: &Device) -> Self {
        Self::with_storage(cfg, batch, Storage::for_device(device))
    }

    /// An empty cache with the given storage.
    pub fn with_storage(cfg: &ModelConfig, batch: usize, storage: Storage) -> Self {
        let n = cfg.menu.len();
        let layer = LayerCache {
            slots: vec![None; n],
            late: vec![None; n],
            shadow: vec![None; n],
            positions: vec![VecDeque::new(); n],
            late_positions: vec![VecDeque::new(); n],
            settled: vec![None; n],
        };
        let kind = |o: StoreOption| match o {
            StoreOption::Rank(rank) => Some(HostKind::Factors { rank }),
            StoreOption::Full => Some(HostKind::Dense),
            StoreOption::Drop => None,
            timed => unreachable!("{timed} is not a plain form"),
        };
        Self {
            menu: cfg.menu.clone(),
            kinds: cfg.menu.iter().map(|o| kind(o.stored_as(cfg.exact_option()))).collect(),
            late_kinds: cfg.menu.iter().map(|o| o.later(0).and_then(|(_, then)| kind(then))).collect(),
            shadow_kinds: cfg.menu.iter().map(|o| o.shadow().and_then(kind)).collect(),
            dims: HeadDims { heads: cfg.n_heads, kv_heads: cfg.kv_heads(), head_dim: cfg.head_dim },
            storage,
            streams: vec![vec![layer; cfg.n_layers]; batch],
            counts: vec![vec![vec![0; n]; cfg.n_layers]; batch],
            late_counts: vec![vec![vec![0; n]; cfg.n_layers]; batch],
            peak: vec![0; batch],
            position: 0,
            review_age: None,
        }
    }

    /// This cache in review mode (DESIGN.md §10): every token kept at a plain option waits, in a
    /// first-in-first-out slot, for a second decision when it is `age` queries old
    /// ([`KvCache::review`]).
    pub fn with_review(mut self, age: usize) -> Self {
        self.review_age = Some(age);
        self
    }

    /// Apply the review decisions for the token `age` queries old (position `position − 1 −
    /// age`): `effective[b * n_layers + l]` is the menu option that token now has in stream b,
    /// layer l — its own (kept as it is), the schedule `first/age/then` its own option becomes
    /// (`then` = drop, or a nested lower rank), or `first/W/drop` with W > age (kept as it is to
    /// age W, then evicted; writes must not use that option). Tokens not under review (dropped, timed)
    /// must be given their own option. Call after [`KvCache::push`]; the decision holds from the
    /// next query on.
    pub fn review(&mut self, effective: &[usize]) -> Result<()> {
        let Some(age) = self.review_age else {
            return Err(Error::Input("review: the cache is not in review mode".into()));
        };
        let l_n = self.streams.first().map_or(0, Vec::len);
        if effective.len() != self.batch() * l_n {
            return Err(Error::Input(format!(
                "review needs {} decisions (streams × layers), found {}",
                self.batch() * l_n,
                effective.len()
            )));
        }
        let Some(r) = self.position.checked_sub(age + 1) else { return Ok(()) };
        for (i, &eff) in effective.iter().enumerate() {
            let (s, l) = (i / l_n, i % l_n);
            let layer = &mut self.streams[s][l];
            let Some(o) =
                (0..self.menu.len()).find(|&o| layer.positions[o].front() == Some(&r) && !self.menu[o].is_timed())
            else {
                continue; // dropped or timed: nothing to review
            };
            // Where the token goes: kept as it is (to the end), moved on now (`first/age/then`), or
            // kept as it is to a later age W and dropped there (`first/W/drop`, W > age: a timed
            // slot only reviews fill, so its tokens stay in position order and expire first-in
            // first-out).
            enum Move {
                Keep,
                Now(crate::config::Form),
                Until,
            }
            let to = match self.menu.get(eff).copied() {
                Some(_) if eff == o => Move::Keep,
                Some(StoreOption::Schedule { first, window, then, then_for: None })
                    if window == age && first.option() == self.menu[o] =>
                {
                    Move::Now(then)
                }
                Some(StoreOption::Schedule { first, window, then: crate::config::Form::Drop, then_for: None })
                    if window > age
                        && first.option() == self.menu[o]
                        && layer.positions[eff].back().is_none_or(|&p| p < r) =>
                {
                    Move::Until
                }
                _ => {
                    return Err(Error::Input(format!(
                        "review: option {eff} is neither {} nor {}/{age}/<then> nor {}/<W > {age}>/drop (filled by \
                         reviews alone) for the token at {r}",
                        self.menu[o], self.menu[o], self.menu[o]
                    )));
                }
            };
            layer.positions[o].pop_front();
            if matches!(to, Move::Now(crate::config::Form::Drop)) {
                LayerCache::drop_front(&mut layer.slots[o], 1);
                self.counts[s][l][o] -= 1;
                continue;
            }
            let token = LayerCache::take_front(&mut layer.slots[o], 1).expect("a tracked token is held");
            match to {
                Move::Keep => LayerCache::append(&mut layer.settled[o], token),
                Move::Until => {
                    LayerCache::append(&mut layer.slots[eff], token);
                    layer.positions[eff].push_back(r);
                    self.counts[s][l][o] -= 1;
                    self.counts[s][l][eff] += 1;
                }
                Move::Now(crate::config::Form::Rank(rho)) => {
                    LayerCache::append(&mut layer.late[eff], truncated(token, rho, self.dims));
                    self.counts[s][l][o] -= 1;
                    self.late_counts[s][l][eff] += 1;
                }
                Move::Now(crate::config::Form::Drop | crate::config::Form::Full) => {
                    unreachable!("dropped above; parsing keeps later forms cheaper")
                }
            }
        }
        Ok(())
    }

    /// Apply a chain's later reviews (DESIGN.md §10) for step `self.position`, before its token
    /// is pushed: `(stream, layer, from, to)` moves the token `W` queries old that is kept at
    /// `from = F/W/drop` (filled by reviews alone) to `to` — `F/W'/drop` with W' > W (kept as it
    /// is to the later age W') or `F` itself (kept to the end). A token left at `from` expires in
    /// the push, as its schedule says.
    pub fn review_again(&mut self, moves: &[(usize, usize, usize, usize)]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        if self.review_age.is_none() {
            return Err(Error::Input("review again: the cache is not in review mode".into()));
        }
        for &(s, l, from, to) in moves {
            let (Some(&f), Some(&t)) = (self.menu.get(from), self.menu.get(to)) else {
                return Err(Error::Input(format!("review again: option {from} or {to} is outside the menu")));
            };
            let StoreOption::Schedule { first, window, then: crate::config::Form::Drop, then_for: None } = f else {
                return Err(Error::Input(format!("review again: {f} is not a kept-to-an-age option `F/W/drop`")));
            };
            let layer = self
                .streams
                .get_mut(s)
                .and_then(|st| st.get_mut(l))
                .ok_or_else(|| Error::Input(format!("review again: no stream {s}, layer {l}")))?;
            let r = self.position.checked_sub(window);
            if r.is_none() || layer.positions[from].front() != r.as_ref() {
                return Err(Error::Input(format!(
                    "review again: no token {window} queries old is held at {f} in stream {s}, layer {l}"
                )));
            }
            let r = r.expect("checked above");
            let later = match t {
                StoreOption::Schedule { first: f2, window: w2, then: crate::config::Form::Drop, then_for: None }
                    if f2 == first && w2 > window && layer.positions[to].back().is_none_or(|&p| p < r) =>
                {
                    true
                }
                _ if t == first.option() => false,
                _ => {
                    return Err(Error::Input(format!(
                        "review again: {f} may become {plain}/<W > {window}>/drop or {plain}, not {t}",
                        plain = first.option()
                    )));
                }
            };
            layer.positions[from].pop_front();
            let token = LayerCache::take_front(&mut layer.slots[from], 1).expect("a tracked token is held");
            if later {
                LayerCache::append(&mut layer.slots[to], token);
                layer.positions[to].push_back(r);
            } else {
                LayerCache::append(&mut layer.settled[to], token);
            }
            self.counts[s][l][from] -= 1;
            self.counts[s][l][to] += 1;
        }
        Ok(())
    }

    /// A cache whose every stream holds `counts[l][o]` tokens at menu option `o` in layer `l`
    /// (dropped ones counted too; the next position is the largest layer total), filled with
    /// uniform noise: for decode benchmarks, whose cost depends on the shapes held, not on the
    /// values. Timed tokens here are all in their first form and never expire or demote.
    pub fn synthetic(
        cfg: &ModelConfig,
        batch: usize,
        counts: &[Vec<usize>],
        storage: Storage,
        device: &Device,
    ) -> Result<Self> {
        let tokens: Vec<usize> = counts.iter().map(|c| c.iter().sum()).collect();
        if counts.len() != cfg.n_layers || counts.iter().any(|c| c.len() != cfg.menu.len()) {
            return Err(Error::Input(format!(
                "synthetic cache: counts must be [{} layers][{} options]",
                cfg.n_layers,
                cfg.menu.len()
            )));
        }
        let noise = |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Uniform(-1.0, 1.0), device);
        let (h, kvh, dh) = (cfg.n_heads, cfg.kv_heads(), cfg.head_dim);
        let mut cache = Self::with_storage(cfg, batch, storage);
        for s in 0..batch {
            for (l, per_option) in counts.iter().enumerate() {
                for (o, &n) in per_option.iter().enumerate() {
                    cache.counts[s][l][o] = n;
                    let Some(kind) = cache.kinds[o].filter(|_| n > 0) else { continue };
                    cache.streams[s][l].slots[o] = Some(match (storage, kind) {
                        (Storage::Host, _) => {
                            let mut tiles = Tiles::new(cache.dims.width(kind));
                            let rows = to_host(noise([1, n, tiles.width()]))?;
                            rows.chunks(tiles.width()).for_each(|t| tiles.push(t));
                            Slot::Host(HostGroup { kind, tiles })
                        }
                        (Storage::Tensors, HostKind::Factors { rank: rho }) => Slot::Tensors(Group::Factors {
                            rank: rho,
                            a_k: noise([n, rho, h]),
                            b_k: noise([n, rho, dh]),
                            a_v: noise([n, rho, h]),
                            b_v: noise([n, rho, dh]),
                        }),
                        (Storage::Tensors, HostKind::Dense) => {
                            Slot::Tensors(Group::Dense { k: noise([kvh, n, dh]), v: noise([kvh, n, dh]) })
                        }
                    });
                }
            }
        }
        cache.position = tokens.iter().copied().max().unwrap_or(0);
        cache.peak = (0..batch).map(|s| cache.stream_bytes(s)).collect();
        Ok(cache)
    }

    /// Number of streams.
    pub fn batch(&self) -> usize {
        self.streams.len()
    }

    /// Where the tokens are kept.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Tokens pushed so far per stream (the position of the next token).
    pub fn position(&self) -> usize {
        self.position
    }

    /// The layer caches of every stream for `layer`.
    pub fn layer(&self, layer: usize) -> Vec<&LayerCache> {
        self.streams.iter().map(|s| &s[layer]).collect()
    }

    /// Bytes held by every stream and layer together.
    pub fn bytes(&self) -> usize {
        self.streams.iter().flatten().map(LayerCache::bytes).sum()
    }

    /// Bytes held by one stream.
    pub fn stream_bytes(&self, stream: usize) -> usize {
        self.streams[stream].iter().map(LayerCache::bytes).sum()
    }

    /// The most bytes stream `stream` has held at once (equal to [`KvCache::stream_bytes`] unless
    /// tokens expired).
    pub fn peak_stream_bytes(&self, stream: usize) -> usize {
        self.peak[stream]
    }

    /// Tokens per menu option for (stream, layer) that the next query sees in their first form,
    /// dropped ones counted where chosen.
    pub fn counts(&self, stream: usize, layer: usize) -> &[usize] {
        &self.counts[stream][layer]
    }

    /// Demoted tokens per menu option for (stream, layer), seen in their later form.
    pub fn late_counts(&self, stream: usize, layer: usize) -> &[usize] {
        &self.late_counts[stream][layer]
    }

    /// Keep the token just decoded: `choices[b * n_layers + l]` is stream b's menu index for layer l.
    pub fn push(&mut self, pending: PendingToken, choices: &[usize]) -> Result<()> {
        let n_layers = pending.layers.len();
        if choices.len() != self.batch() * n_layers {
            return Err(Error::Input(format!(
                "push needs {} choices (streams × layers), found {}",
                self.batch() * n_layers,
                choices.len()
            )));
        }
        if let Some(bad) = choices.iter().find(|&&c| c >= self.menu.len()) {
            return Err(Error::Input(format!("choice {bad} is outside the menu of {}", self.menu.len())));
        }
        let t = self.position;
        for (l, proj) in pending.layers.into_iter().enumerate() {
            let layer_choices: Vec<usize> = (0..self.batch()).map(|s| choices[s * n_layers + l]).collect();
            match self.storage {
                Storage::Host => self.push_host(l, &proj, &layer_choices)?,
                Storage::Tensors => self.push_tensors(l, &proj, &layer_choices),
            }
            for (s, &c) in layer_choices.iter().enumerate() {
                let reviewed = self.review_age.is_some() && self.kinds[c].is_some();
                if self.menu[c].is_timed() || reviewed {
                    self.streams[s][l].positions[c].push_back(t);
                }
            }
        }
        self.position += 1;
        for s in 0..self.batch() {
            self.peak[s] = self.peak[s].max(self.stream_bytes(s));
        }
        self.evict_expired();
        Ok(())
    }

    /// Evict the `index`-th token (oldest first) held at plain option `option` in stream `stream`,
    /// layer `layer`, from the next query on: how rules that evict by score (the judge's H2O and
    /// TOVA scored by their own cache) run. Tokens of one option are held in the order they were
    /// pushed. Not for timed options or a cache in review mode (their tokens move by themselves).
    pub fn evict(&mut self, stream: usize, layer: usize, option: usize, index: usize) -> Result<()> {
        let plain = self.menu.get(option).is_some_and(|o| !o.is_timed()) && self.kinds[option].is_some();
        if !plain || self.review_age.is_some() {
            return Err(Error::Input(format!(
                "evict: option {option} is not a plain kept option of a cache outside review mode"
            )));
        }
        let slot = &mut self.streams[stream][layer].slots[option];
        let held = slot.as_ref().map_or(0, Slot::len);
        if index >= held {
            return Err(Error::Input(format!("evict: token {index} of {held} held at option {option}")));
        }
        LayerCache::remove(slot, index);
        self.counts[stream][layer][option] -= 1;
        Ok(())
    }

    /// Demote the `index`-th token (oldest first) held at plain factor option `from` in `stream`,
    /// `layer` to plain option `to`, a lower rank: its leading components, nothing recomputed
    /// (nested ranks), seen in that form from the next query on — how a two-tier cache moves a
    /// key out of its first tier. The token joins `to`'s tokens as the newest, so a rule that
    /// evicts `to` oldest first evicts in the order it demoted. Not for a cache in review mode.
    pub fn demote(&mut self, stream: usize, layer: usize, from: usize, index: usize, to: usize) -> Result<()> {
        let plain = |o: usize| self.menu.get(o).is_some_and(|m| !m.is_timed()).then(|| self.kinds[o]).flatten();
        let (Some(HostKind::Factors { rank }), Some(HostKind::Factors { rank: rho })) = (plain(from), plain(to)) else {
            return Err(Error::Input(format!("demote: options {from} and {to} are not plain factor options")));
        };
        if rho >= rank || self.review_age.is_some() {
            return Err(Error::Input(format!("demote: rank {rank} to rank {rho} (a lower rank, outside review mode)")));
        }
        let layer_cache = &mut self.streams[stream][layer];
        let held = layer_cache.slots[from].as_ref().map_or(0, Slot::len);
        if index >= held {
            return Err(Error::Input(format!("demote: token {index} of {held} held at option {from}")));
        }
        let token = LayerCache::take_at(&mut layer_cache.slots[from], index).expect("a held token");
        LayerCache::append(&mut layer_cache.slots[to], truncated(token, rho, self.dims));
        self.counts[stream][layer][from] -= 1;
        self.counts[stream][layer][to] += 1;
        Ok(())
    }

    /// Move on every timed token whose first form the next query (at `self.position`) no longer
    /// sees: evict it, or demote it in place.
    fn evict_expired(&mut self) {
        let next = self.position;
        for (o, opt) in self.menu.iter().enumerate().filter(|(_, opt)| opt.is_timed()) {
            for ((stream, counts), late) in self.streams.iter_mut().zip(&mut self.counts).zip(&mut self.late_counts) {
                for ((layer, counts), late) in stream.iter_mut().zip(counts.iter_mut()).zip(late.iter_mut()) {
                    let mut n = 0;
                    while let Some(&t) =
                        layer.positions[o].front().filter(|&&t| opt.later(t).is_some_and(|(at, _)| at <= next))
                    {
                        layer.positions[o].pop_front();
                        if self.late_kinds[o].is_some() && opt.expires_at(t).is_some() {
                            layer.late_positions[o].push_back(t);
                        }
                        n += 1;
                    }
                    if n > 0 {
                        layer.advance(o, n, self.dims, self.late_kinds[o]);
                        counts[o] -= n;
                        if self.late_kinds[o].is_some() {
                            late[o] += n;
                        }
                    }
                    // Demoted tokens whose second window has ended (`first/W/then/W2`).
                    let mut gone = 0;
                    while layer.late_positions[o].front().is_some_and(|&t| opt.expires_at(t).is_some_and(|e| e <= next))
                    {
                        layer.late_positions[o].pop_front();
                        gone += 1;
                    }
                    if gone > 0 {
                        LayerCache::drop_front(&mut layer.late[o], gone);
                        late[o] -= gone;
                    }
                }
            }
        }
    }

    fn push_tensors(&mut self, l: usize, proj: &Projected, choices: &[usize]) {
        let group = |s: usize, kind: HostKind| match kind {
            HostKind::Factors { rank: rho } => {
                let [ak, bk, av, bv] = proj.kv_factors.as_ref().expect("rank options need TPA factors");
                let head_major = |x: &Tensor<4>| {
                    let [_, _, h, r] = x.dims();
                    x.clone().narrow(0, s, 1).reshape([h, r]).narrow(1, 0, rho).transpose().reshape([1, rho, h])
                };
                let rank_major = |x: &Tensor<4>| {
                    let [_, _, r, dh] = x.dims();
                    x.clone().narrow(0, s, 1).reshape([r, dh]).narrow(0, 0, rho).reshape([1, rho, dh])
                };
                Group::Factors {
                    rank: rho,
                    a_k: head_major(ak),
                    b_k: rank_major(bk),
                    a_v: head_major(av),
                    b_v: rank_major(bv),
                }
            }
            HostKind::Dense => {
                let (k, v) = proj.kv_dense.as_ref().expect("the full option needs dense K/V");
                let one = |x: &Tensor<4>| {
                    let [_, _, kvh, dh] = x.dims();
                    x.clone().narrow(0, s, 1).reshape([kvh, 1, dh])
                };
                Group::Dense { k: one(k), v: one(v) }
            }
        };
        for (s, &c) in choices.iter().enumerate() {
            self.counts[s][l][c] += 1;
            let layer = &mut self.streams[s][l];
            if let Some(kind) = self.kinds[c] {
                LayerCache::append(&mut layer.slots[c], Slot::Tensors(group(s, kind)));
            }
            if let Some(kind) = self.shadow_kinds[c] {
                LayerCache::append(&mut layer.shadow[c], Slot::Tensors(group(s, kind)));
            }
        }
    }

    fn push_host(&mut self, l: usize, proj: &Projected, choices: &[usize]) -> Result<()> {
        let HeadDims { heads: h, kv_heads: kvh, head_dim: dh } = self.dims;
        let host = |x: &Tensor<4>| to_host(x.clone());
        let needs = |want: fn(HostKind) -> bool| {
            choices.iter().any(|&c| self.kinds[c].into_iter().chain(self.shadow_kinds[c]).any(want))
        };
        let factors = match (&proj.kv_factors, needs(|k| matches!(k, HostKind::Factors { .. }))) {
            (Some([ak, bk, av, bv]), true) => Some((host(ak)?, host(bk)?, host(av)?, host(bv)?, ak.dims()[3])),
            _ => None,
        };
        let dense = match (&proj.kv_dense, needs(|k| k == HostKind::Dense)) {
            (Some((k, v)), true) => Some((host(k)?, host(v)?)),
            _ => None,
        };
        let token = |s: usize, kind: HostKind| -> Vec<f32> {
            let mut token = Vec::new();
            match kind {
                HostKind::Factors { rank: rho } => {
                    let (ak, bk, av, bv, r) = factors.as_ref().expect("rank options need TPA factors");
                    // Per r: A[·, r] over heads, then B[r, ·]; keys first, then values.
                    for (a, b) in [(ak, bk), (av, bv)] {
                        let (a, b) = (&a[s * h * r..(s + 1) * h * r], &b[s * r * dh..(s + 1) * r * dh]);
                        for j in 0..rho {
                            token.extend((0..h).map(|hh| a[hh * r + j]));
                            token.extend_from_slice(&b[j * dh..(j + 1) * dh]);
                        }
                    }
                }
                HostKind::Dense => {
                    let (k, v) = dense.as_ref().expect("the full option needs dense K/V");
                    let span = s * kvh * dh..(s + 1) * kvh * dh;
                    token.extend_from_slice(&k[span.clone()]);
                    token.extend_from_slice(&v[span]);
                }
            }
            token
        };
        for (s, &c) in choices.iter().enumerate() {
            self.counts[s][l][c] += 1;
            let layer = &mut self.streams[s][l];
            for (slot, kind) in [(&mut layer.slots[c], self.kinds[c]), (&mut layer.shadow[c], self.shadow_kinds[c])] {
                let Some(kind) = kind else { continue };
                let slot = slot
                    .get_or_insert_with(|| Slot::Host(HostGroup { kind, tiles: Tiles::new(self.dims.width(kind)) }));
                match slot {
                    Slot::Host(g) => g.tiles.push(&token(s, kind)),
                    Slot::Tensors(_) => unreachable!("a host cache holds host slots only"),
                }
            }
        }
        Ok(())
    }
}

/// The projections of the token a decode step just processed, one per layer, waiting for the
/// storage choice (DESIGN.md §3: the decision for t is made after t's forward step).
#[derive(Clone, Debug)]
pub struct PendingToken {
    pub(crate) layers: Vec<Projected>,
}
