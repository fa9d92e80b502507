//! Per-(sequence, token, layer) storage choices, as menu indices.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, RngExt};

use crate::config::{ModelConfig, StoreOption};
use crate::error::Invalid;

/// A choice of menu option for every (sequence, token, layer); index order `[b][t][l]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choices {
    batch: usize,
    seq_len: usize,
    n_layers: usize,
    data: Vec<u8>,
    /// Eviction (parallel forward only): `[B, T, L]` first query position that no longer sees
    /// key t in layer l (`u32::MAX` = never). Cache-eviction rules (sink + window, heavy
    /// hitters) are expressed this way; a storage choice is made once, an eviction later.
    evicted_at: Option<Vec<u32>>,
    /// Demotion (parallel forward only): `[B, T, L]` first query position that sees key t of layer
    /// l in the later form (`u32::MAX` = never), and that form — a nested lower rank of what the
    /// token's own option stores. Overrides the option's own schedule where set.
    demoted_at: Option<(Vec<u32>, StoreOption)>,
}

impl Choices {
    /// Every entry set to menu index `option`.
    pub fn filled(batch: usize, seq_len: usize, n_layers: usize, option: usize) -> Self {
        let option = u8::try_from(option).expect("menu index should fit in u8");
        Self {
            batch,
            seq_len,
            n_layers,
            data: vec![option; batch * seq_len * n_layers],
            evicted_at: None,
            demoted_at: None,
        }
    }

    /// The exact (richest) option everywhere.
    pub fn exact(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        Self::filled(batch, seq_len, cfg.n_layers, cfg.exact_index())
    }

    /// Build from a function of (b, t, l) returning a menu index.
    pub fn from_fn(
        batch: usize,
        seq_len: usize,
        n_layers: usize,
        mut f: impl FnMut(usize, usize, usize) -> usize,
    ) -> Self {
        let mut data = Vec::with_capacity(batch * seq_len * n_layers);
        for b in 0..batch {
            for t in 0..seq_len {
                for l in 0..n_layers {
                    data.push(u8::try_from(f(b, t, l)).expect("menu index should fit in u8"));
                }
            }
        }
        Self { batch, seq_len, n_layers, data, evicted_at: None, demoted_at: None }
    }

    /// Independent draws from `weights` (one weight per menu option) for every entry.
    pub fn sample(batch: usize, seq_len: usize, n_layers: usize, weights: &[f64], rng: &mut impl Rng) -> Self {
        let total: f64 = weights.iter().sum();
        Self::from_fn(batch, seq_len, n_layers, |_, _, _| {
            let mut u = rng.random::<f64>() * total;
            for (i, w) in weights.iter().enumerate() {
                if u < *w {
                    return i;
                }
                u -= w;
            }
            weights.len() - 1
        })
    }

    /// Menu index at (b, t, l).
    pub fn get(&self, b: usize, t: usize, l: usize) -> usize {
        self.data[(b * self.seq_len + t) * self.n_layers + l] as usize
    }

    /// Set the menu index at (b, t, l).
    pub fn set(&mut self, b: usize, t: usize, l: usize, option: usize) {
        self.data[(b * self.seq_len + t) * self.n_layers + l] =
            u8::try_from(option).expect("menu index should fit in u8");
    }

    /// These choices with evictions `[B, T, L]` (row-major like the choices): key t stops being
    /// visible to queries from position `evicted_at` on (`u32::MAX` = never). Parallel forward only.
    pub fn with_evictions(mut self, evicted_at: Vec<u32>) -> Self {
        assert_eq!(evicted_at.len(), self.data.len(), "one eviction position per (sequence, token, layer)");
        self.evicted_at = Some(evicted_at);
        self
    }

    /// These choices with demotions `[B, T, L]` (row-major like the choices): from query
    /// `demoted_at` on key t is seen as `form` (`u32::MAX` = never) — a token whose own option is
    /// dense or a higher rank moved to a nested lower rank at a query of its own, as a two-tier
    /// cache does. Parallel forward only; the harness charges it ([`crate::cost::sequence_cost_demoted`]).
    pub fn with_demotions(mut self, demoted_at: Vec<u32>, form: StoreOption) -> Self {
        assert_eq!(demoted_at.len(), self.data.len(), "one demotion position per (sequence, token, layer)");
        assert!(matches!(form, StoreOption::Rank(_)), "a demotion keeps a plain rank");
        self.demoted_at = Some((demoted_at, form));
        self
    }

    /// The first query position that sees key `t` of sequence `b` in layer `l` in its demoted
    /// form, set by [`Choices::with_demotions`].
    pub fn demoted_at(&self, b: usize, t: usize, l: usize) -> Option<(usize, StoreOption)> {
        let (at, form) = self.demoted_at.as_ref()?;
        let d = at[(b * self.seq_len + t) * self.n_layers + l];
        (d != u32::MAX).then_some((d as usize, *form))
    }

    /// The first query position that no longer sees key `t` of sequence `b` in layer `l`.
    pub fn evicted_at(&self, b: usize, t: usize, l: usize) -> Option<usize> {
        let e = self.evicted_at.as_ref()?[(b * self.seq_len + t) * self.n_layers + l];
        (e != u32::MAX).then_some(e as usize)
    }

    /// The first query position that no longer sees key `t` of sequence `b` in layer `l`, from
    /// an eviction or from its option expiring (`recent:W` and schedules to `drop`: t + W + 1);
    /// `None` = never.
    pub fn visible_until(&self, cfg: &ModelConfig, b: usize, t: usize, l: usize) -> Option<usize> {
        let expiry = cfg.menu[self.get(b, t, l)].expires_at(t);
        match (self.evicted_at(b, t, l), expiry) {
            (Some(e), Some(x)) => Some(e.min(x)),
            (e, x) => e.or(x),
        }
    }

    /// The sequences `rows` of these choices, evictions included (a data-parallel rank's shard).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        assert!(rows.end <= self.batch, "rows {rows:?} of choices for {} sequences", self.batch);
        let per_row = self.seq_len * self.n_layers;
        let cells = rows.start * per_row..rows.end * per_row;
        Self {
            batch: rows.len(),
            seq_len: self.seq_len,
            n_layers: self.n_layers,
            data: self.data[cells.clone()].to_vec(),
            evicted_at: self.evicted_at.as_ref().map(|e| e[cells.clone()].to_vec()),
            demoted_at: self.demoted_at.as_ref().map(|(d, f)| (d[cells].to_vec(), *f)),
        }
    }

    /// Everything the forward of layers `layers` reads of these choices — each (sequence, token)'s
    /// option and eviction in those layers — as bytes: choices with equal keys give those layers
    /// the same inputs ([`Choices::layer_tensors`]).
    pub fn layers_key(&self, layers: std::ops::Range<usize>) -> Vec<u8> {
        let cells = (0..self.batch * self.seq_len).flat_map(|i| layers.clone().map(move |l| i * self.n_layers + l));
        let mut key: Vec<u8> = cells.clone().map(|c| self.data[c]).collect();
        if let Some(e) = &self.evicted_at {
            key.extend(cells.clone().flat_map(|c| e[c].to_le_bytes()));
        }
        if let Some((d, form)) = &self.demoted_at {
            key.extend(form.to_string().bytes());
            key.extend(cells.flat_map(|c| d[c].to_le_bytes()));
        }
        key
    }

    /// `[batch, seq_len, n_layers]`.
    pub fn dims(&self) -> [usize; 3] {
        [self.batch, self.seq_len, self.n_layers]
    }

    /// Check the dimensions and that every index lies in the menu.
    pub fn check(&self, cfg: &ModelConfig, batch: usize, seq_len: usize) -> Result<(), Invalid> {
        if self.dims() != [batch, seq_len, cfg.n_layers] {
            return Err(Invalid::new(
                "choices",
                format!(
                    "have shape {:?}, expected [batch, seq_len, n_layers] = {:?}",
                    self.dims(),
                    [batch, seq_len, cfg.n_layers]
                ),
            ));
        }
        if let Some(bad) = self.data.iter().find(|&&c| c as usize >= cfg.menu.len()) {
            return Err(Invalid::new(
                "choices",
                format!("index {bad} is outside the menu of {} options", cfg.menu.len()),
            ));
        }
        Ok(())
    }

    /// What one layer's parallel forward needs. See [`LayerChoiceTensors`].
    pub fn layer_tensors(&self, cfg: &ModelConfig, layer: usize, device: &Device) -> LayerChoiceTensors {
        let (b_n, t_n) = (self.batch, self.seq_len);
        let exact = cfg.exact_option();
        let option = |b: usize, t: usize| cfg.menu[self.get(b, t, layer)];
        let first = FormWeights::new(cfg, b_n, t_n, |b, t| option(b, t).stored_as(exact));
        let timed = (0..b_n).any(|b| (0..t_n).any(|t| option(b, t).is_timed()));
        let until = (self.evicted_at.is_some() || timed).then(|| {
            (0..b_n * t_n).map(|i| self.visible_until(cfg, i / t_n, i % t_n, layer).unwrap_or(t_n).min(t_n)).collect()
        });
        // Demotions to a kept form: from query `at` on, key t is seen in its later form.
        let demoted = |b: usize, t: usize| {
            self.demoted_at(b, t, layer)
                .or_else(|| option(b, t).later(t))
                .filter(|(_, then)| *then != StoreOption::Drop)
        };
        let late = (0..b_n).any(|b| (0..t_n).any(|t| demoted(b, t).is_some())).then(|| {
            let later = FormWeights::new(cfg, b_n, t_n, |b, t| demoted(b, t).map_or(StoreOption::Drop, |(_, f)| f));
            LateForms {
                weights: later.tensors(cfg, b_n, t_n, device),
                from: (0..b_n * t_n).map(|i| demoted(i / t_n, i % t_n).map_or(usize::MAX, |(at, _)| at)).collect(),
            }
        });
        LayerChoiceTensors {
            weights: first.tensors(cfg, b_n, t_n, device),
            stored: first.keep,
            until,
            late,
            dims: [b_n, t_n],
        }
    }
}

/// Per-token weights of one plain form per (sequence, token), on the host.
struct FormWeights {
    rank_w: Vec<f32>,
    full_w: Vec<f32>,
    keep: Vec<f32>,
}

impl FormWeights {
    fn new(cfg: &ModelConfig, b_n: usize, t_n: usize, form: impl Fn(usize, usize) -> StoreOption) -> Self {
        let r_max = cfg.kv_rank_max.max(1);
        let mut w =
            Self { rank_w: vec![0f32; b_n * t_n * r_max], full_w: vec![0f32; b_n * t_n], keep: vec![0f32; b_n * t_n] };
        for b in 0..b_n {
            for t in 0..t_n {
                let i = b * t_n + t;
                match form(b, t) {
                    StoreOption::Drop => {}
                    StoreOption::Rank(r) => {
                        w.keep[i] = 1.0;
                        for c in 0..r {
                            w.rank_w[i * r_max + c] = 1.0 / r as f32;
                        }
                    }
                    StoreOption::Full => {
                        w.keep[i] = 1.0;
                        w.full_w[i] = 1.0;
                    }
                    timed => unreachable!("{timed} is not a plain form"),
                }
            }
        }
        w
    }

    fn tensors(&self, cfg: &ModelConfig, b_n: usize, t_n: usize, device: &Device) -> StoredWeights {
        let r_max = cfg.kv_rank_max.max(1);
        StoredWeights {
            rank_w: Tensor::from_data(TensorData::new(self.rank_w.clone(), [b_n, t_n, 1, r_max]), device),
            full_w: Tensor::from_data(TensorData::new(self.full_w.clone(), [b_n, t_n, 1, 1]), device),
        }
    }
}

/// How each token's stored K/V is composed from the projections, for the parallel forward.
#[derive(Clone, Debug)]
pub struct StoredWeights {
    /// `[B, T, 1, R_max]`: `1/ρ` on components `< ρ` for rank-ρ tokens, else 0.
    pub rank_w: Tensor<4>,
    /// `[B, T, 1, 1]`: 1 for tokens kept dense.
    pub full_w: Tensor<4>,
}

/// The later forms of demoted tokens (schedules `first/W/then` with `then` kept).
#[derive(Clone, Debug)]
pub struct LateForms {
    /// Each token's later form (zero for tokens never demoted).
    pub weights: StoredWeights,
    /// `[B·T]`: the first query that sees the key in its later form (`usize::MAX`: none).
    pub from: Vec<usize>,
}

/// One layer's choices for the parallel forward: the stored forms as tensors, visibility per key
/// on the host. Which query sees which key is a threshold per key (a token is evicted or expires
/// once and stays gone; a demotion, once made, stays), so the `[B, T, T]` masks of the tensor path
/// are built from these thresholds only when asked for ([`LayerChoiceTensors::keep`],
/// [`LayerChoiceTensors::late_mask`]); the host forward reads the thresholds directly.
#[derive(Clone, Debug)]
pub struct LayerChoiceTensors {
    /// Each token's first stored form.
    pub weights: StoredWeights,
    /// `[B·T]`: 1 for tokens stored (a first form other than drop).
    pub stored: Vec<f32>,
    /// `[B·T]`: the first query that no longer sees the key (evicted or expired), when any token
    /// of the layer is evicted or timed; otherwise every later query sees every stored key.
    pub until: Option<Vec<usize>>,
    /// Demoted tokens' later forms, if any token is demoted.
    pub late: Option<LateForms>,
    /// `[B, T]`.
    pub dims: [usize; 2],
}

impl LayerChoiceTensors {
    /// `[B, 1, 1, T]`: 1 for keys visible to later queries; `[B, 1, T, T]` (query × key) when
    /// keys leave before the end.
    pub fn keep(&self, device: &Device) -> Tensor<4> {
        let [b_n, t_n] = self.dims;
        let Some(until) = &self.until else {
            return Tensor::from_data(TensorData::new(self.stored.clone(), [b_n, 1, 1, t_n]), device);
        };
        let mut visible = vec![0f32; b_n * t_n * t_n];
        for (row, cells) in visible.chunks_mut(t_n).enumerate() {
            let (b, q) = (row / t_n, row % t_n);
            let keys = b * t_n..(b + 1) * t_n;
            for ((v, u), k) in cells.iter_mut().zip(&until[keys.clone()]).zip(&self.stored[keys]) {
                *v = if q < *u { *k } else { 0.0 };
            }
        }
        Tensor::from_data(TensorData::new(visible, [b_n, 1, t_n, t_n]), device)
    }

    /// `[B, 1, T, T]` (query × key): 1 where the query sees the key in its later form.
    pub fn late_mask(&self, device: &Device) -> Option<Tensor<4>> {
        let [b_n, t_n] = self.dims;
        let late = self.late.as_ref()?;
        let mut mask = vec![0f32; b_n * t_n * t_n];
        for (row, cells) in mask.chunks_mut(t_n).enumerate() {
            let (b, q) = (row / t_n, row % t_n);
            for (m, f) in cells.iter_mut().zip(&late.from[b * t_n..(b + 1) * t_n]) {
                *m = if q >= *f { 1.0 } else { 0.0 };
            }
        }
        Some(Tensor::from_data(TensorData::new(mask, [b_n, 1, t_n, t_n]), device))
    }
}

/// A named way to choose: `exact` or one option for every token and layer (`uniform:rank:2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceSpec {
    /// The richest option everywhere.
    Exact,
    /// One option everywhere.
    Uniform(StoreOption),
}

impl ChoiceSpec {
    /// Expand into per-entry choices for a batch; fails if the option is not in the menu.
    pub fn choices(&self, cfg: &ModelConfig, batch: usize, seq_len: usize) -> Result<Choices, String> {
        let index = match self {
            ChoiceSpec::Exact => cfg.exact_index(),
            ChoiceSpec::Uniform(o) => cfg.option_index(*o)?,
        };
        Ok(Choices::filled(batch, seq_len, cfg.n_layers, index))
    }

    /// `exact` followed by `uniform:<o>` for every menu option.
    pub fn rank_curve(cfg: &ModelConfig) -> Vec<ChoiceSpec> {
        std::iter::once(ChoiceSpec::Exact).chain(cfg.menu.iter().map(|o| ChoiceSpec::Uniform(*o))).collect()
    }

    /// The option every layer keeps under this spec.
    pub fn option(&self, cfg: &ModelConfig) -> StoreOption {
        match self {
            ChoiceSpec::Exact => cfg.exact_option(),
            ChoiceSpec::Uniform(o) => *o,
        }
    }
}

impl fmt::Display for ChoiceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChoiceSpec::Exact => write!(f, "exact"),
            ChoiceSpec::Uniform(o) => write!(f, "uniform:{o}"),
        }
    }
}

impl FromStr for ChoiceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "exact" => Ok(ChoiceSpec::Exact),
            other => match other.strip_prefix("uniform:") {
                Some(o) => Ok(ChoiceSpec::Uniform(o.parse()?)),
                None => Err(format!(
                    "unknown choices `{other}`: expected `exact` or `uniform:<option>` (e.g. uniform:rank:2)"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard of choices holds its sequences' entries and evictions, and nothing else.
    #[test]
    fn rows_cut_whole_sequences() {
        let c = Choices::from_fn(3, 2, 2, |b, t, l| b * 4 + t * 2 + l).with_evictions((0..12).collect());
        let r = c.rows(1..2);
        assert_eq!(r.dims(), [1, 2, 2]);
        assert_eq!(
            (0..2).flat_map(|t| (0..2).map(move |l| (t, l))).map(|(t, l)| r.get(0, t, l)).collect::<Vec<_>>(),
            [4, 5, 6, 7]
        );
        assert_eq!(r.evicted_at(0, 1, 1), Some(7));
        assert_eq!(c.rows(0..3), c);
    }

    #[test]
    fn specs_parse_and_expand() {
        let cfg = ModelConfig::tiny();
        assert_eq!("exact".parse::<ChoiceSpec>().unwrap(), ChoiceSpec::Exact);
        let u: ChoiceSpec = "uniform:rank:2".parse().unwrap();
        assert_eq!(u.to_string(), "uniform:rank:2");
        let c = u.choices(&cfg, 2, 3).unwrap();
        assert_eq!(c.get(1, 2, 1), 2);
        assert!("uniform:rank:9".parse::<ChoiceSpec>().unwrap().choices(&cfg, 1, 1).is_err());
        assert!("best".parse::<ChoiceSpec>().is_err());
        assert_eq!(ChoiceSpec::rank_curve(&cfg).len(), cfg.menu.len() + 1);
    }
}
