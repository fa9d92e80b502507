//! The cost model: pure functions of the config, the one source of truth for KV bytes and FLOPs
//! (reward, evaluation and the inference cache all use these, never a recomputation).
//!
//! Bytes per token per layer: rank ρ keeps `A_K, B_K, A_V, B_V` = `2·ρ·(h + d_h)` elements,
//! `full` keeps dense K and V = `2·h_kv·d_h` elements, `drop` keeps nothing; `recent:W` keeps the
//! exact option's elements while it is held (W + 1 steps at most, [`held_steps`]); a schedule
//! `first/W/then` keeps `first` (plus its shadow factors, if any) for W + 1 steps, then `then`
//! ([`bytes_at`]).
//!
//! Memory is measured one way everywhere ([`charged_bytes`], [`sequence_cost`]): the bytes the
//! cache holds, averaged over the steps of a sequence, expressed per token (a uniform option reads
//! its own bytes per token); the peak is reported beside it.
//!
//! Attention FLOPs of one query against one cached entry follow FlashTPA's contraction order
//! (`B_K·B_Qᵀ`, then the head factors, then the value factors); a dense entry costs a dot product
//! and a weighted sum per head. Multiply-adds count as 2 FLOPs.

use crate::config::{AttentionKind, ModelConfig, StoreOption};

/// Bytes of one cached element (the cache stores `f32`).
pub const CACHE_ELEMENT_BYTES: usize = 4;

/// Cached elements for one token in one layer under `option`, in its first form (with the
/// factors a schedule keeps beside it).
pub fn elements_per_token(cfg: &ModelConfig, option: StoreOption) -> usize {
    let plain = |o: StoreOption| match o {
        StoreOption::Rank(r) => 2 * r * (cfg.n_heads + cfg.head_dim),
        StoreOption::Full => 2 * cfg.kv_heads() * cfg.head_dim,
        _ => 0,
    };
    plain(option.stored_as(cfg.exact_option())) + option.shadow().map_or(0, plain)
}

/// Cached bytes for one token in one layer under `option`, in its first form.
pub fn bytes_per_token(cfg: &ModelConfig, option: StoreOption) -> usize {
    elements_per_token(cfg, option) * CACHE_ELEMENT_BYTES
}

/// Bytes the cache holds for a token written at `t` as `option` while query `q ≥ t` runs (the
/// first form until [`StoreOption::later`] says otherwise).
pub fn bytes_at(cfg: &ModelConfig, option: StoreOption, t: usize, q: usize) -> usize {
    match (option.later(t), option.expires_at(t)) {
        (_, Some(end)) if q >= end => 0,
        (Some((at, then)), _) if q >= at => bytes_per_token(cfg, then),
        _ => bytes_per_token(cfg, option),
    }
}

/// Byte-steps a token written at `t` as `option` is held over a sequence of `seq_len` tokens,
/// evicted from query `evicted_at` on (`None` = never): `Σ_{q=t}^{end-1} bytes_at(q)`.
pub fn byte_steps(
    cfg: &ModelConfig,
    option: StoreOption,
    t: usize,
    seq_len: usize,
    evicted_at: Option<usize>,
) -> usize {
    let end = [Some(seq_len), evicted_at, option.expires_at(t)].into_iter().flatten().min().unwrap_or(seq_len);
    if end <= t {
        return 0;
    }
    match option.later(t) {
        Some((at, then)) => {
            let switch = at.clamp(t, end);
            bytes_per_token(cfg, option) * (switch - t) + bytes_per_token(cfg, then) * (end - switch)
        }
        None => bytes_per_token(cfg, option) * (end - t),
    }
}

/// Steps the cache holds a token written at position `t` of a sequence of `seq_len` tokens: from
/// its own step until it expires (`recent:W`: its own step and W queries), is evicted
/// (`evicted_at`: the first query that no longer sees it) or the sequence ends.
pub fn held_steps(option: StoreOption, t: usize, seq_len: usize, evicted_at: Option<usize>) -> usize {
    let mut end = seq_len;
    if let Some(e) = option.expires_at(t) {
        end = end.min(e);
    }
    if let Some(e) = evicted_at {
        end = end.min(e);
    }
    if option == StoreOption::Drop { 0 } else { end.saturating_sub(t) }
}

/// Token-steps a cache that keeps every token holds over a sequence, per token of the sequence:
/// `Σ_q (q + 1) / T = (T + 1) / 2`. Time-averaged bytes divided by this read as bytes per token,
/// so a uniform option reads its own [`bytes_per_token`].
pub fn full_cache_steps_per_token(seq_len: usize) -> f64 {
    (seq_len.max(1) as f64 + 1.0) / 2.0
}

/// The memory a token written at `t` as `option` is charged (the one memory measure of the
/// workspace, DESIGN.md §9): the bytes it holds times the steps it holds them, over
/// [`full_cache_steps_per_token`]. Summed over a sequence's tokens and divided by its length
/// this is the time-averaged bytes the cache holds per step, in bytes per token — what a server
/// pays, what the reward charges and what evaluation reports.
pub fn charged_bytes(cfg: &ModelConfig, option: StoreOption, t: usize, seq_len: usize) -> f64 {
    charged_bytes_evicted(cfg, option, t, seq_len, None)
}

/// [`charged_bytes`] of a token evicted from query `evicted_at` on (`None` = never; a spike
/// review's drop).
pub fn charged_bytes_evicted(
    cfg: &ModelConfig,
    option: StoreOption,
    t: usize,
    seq_len: usize,
    evicted_at: Option<usize>,
) -> f64 {
    byte_steps(cfg, option, t, seq_len, evicted_at) as f64 / full_cache_steps_per_token(seq_len)
}

/// What re-storing a held token changes in its [`charged_bytes`]: held as plain option `was`
/// until query `from`, as `now` (a lower nested rank, or [`StoreOption::Drop`]: evicted) from
/// `from` on, to the end of a sequence of `seq_len` tokens — how a learned evicter's demotions
/// and evictions re-price a token charged at its write.
pub fn recharged_bytes(cfg: &ModelConfig, was: StoreOption, now: StoreOption, from: usize, seq_len: usize) -> f64 {
    let steps = seq_len.saturating_sub(from) as f64;
    (bytes_per_token(cfg, now) as f64 - bytes_per_token(cfg, was) as f64) * steps / full_cache_steps_per_token(seq_len)
}

/// Memory and attention FLOPs of one sequence under given storage (all layers).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SequenceCost {
    /// Time-averaged KV bytes held, per token ([`charged_bytes`] summed, over T).
    pub kv_bytes_per_token: f64,
    /// The most bytes held at once (all layers, current token included), over T.
    pub peak_bytes_per_token: f64,
    /// Attention FLOPs of the decode, per token (queries 1…T−1 read what they see).
    pub flops_per_token: f64,
}

/// Time-averaged KV bytes per token (all layers) of one sequence of `seq_len` tokens in which
/// token t of layer l is stored as `entry(t, l).0` and evicted from query `entry(t, l).1` on
/// (`None` = never): the memory part of [`sequence_cost`], in O(T·L).
pub fn sequence_bytes(
    cfg: &ModelConfig,
    seq_len: usize,
    entry: impl Fn(usize, usize) -> (StoreOption, Option<usize>),
) -> f64 {
    let mut total = 0f64;
    for l in 0..cfg.n_layers {
        for t in 0..seq_len {
            let (o, e) = entry(t, l);
            total += byte_steps(cfg, o, t, seq_len, e) as f64;
        }
    }
    total / full_cache_steps_per_token(seq_len) / seq_len.max(1) as f64
}

/// Time-averaged KV bytes per token (all layers) of each menu option chosen for every token of a
/// `seq_len`-token sequence, in menu order ([`sequence_cost`] of the uniform choice).
pub fn uniform_bytes_per_token(cfg: &ModelConfig, seq_len: usize) -> Vec<f64> {
    cfg.menu.iter().map(|&o| sequence_cost(cfg, seq_len, |_, _| (o, None)).kv_bytes_per_token).collect()
}

/// The cost of one sequence of `seq_len` tokens in which token t of layer l is stored as
/// `entry(t, l).0` and evicted from query `entry(t, l).1` on (`None` = never), in O(T·L): a
/// token's bytes and FLOPs are constant over at most two spans of queries (its first form, then
/// its later one), added to running per-query totals through difference arrays.
pub fn sequence_cost(
    cfg: &ModelConfig,
    seq_len: usize,
    entry: impl Fn(usize, usize) -> (StoreOption, Option<usize>),
) -> SequenceCost {
    sequence_cost_demoted(cfg, seq_len, |t, l| {
        let (o, e) = entry(t, l);
        (o, e, None)
    })
}

/// Bytes per layer kept beside a token stored as `first` so that it can be demoted to `then` at
/// a query of its own (a two-tier cache, `Choices::with_demotions`): a dense token keeps the
/// factors of its later rank (they cannot be recomputed without its hidden state); a factor
/// token nests every lower rank and keeps nothing more.
pub fn demotion_shadow_bytes(cfg: &ModelConfig, first: StoreOption, then: StoreOption) -> usize {
    match (first.stored_as(cfg.exact_option()), then) {
        (StoreOption::Full, StoreOption::Rank(_)) => bytes_per_token(cfg, then),
        _ => 0,
    }
}

/// [`sequence_cost`] where a token may also be demoted at a query of its own: `entry(t, l).2 =
/// Some((at, then))` — seen as `then` from query `at` on, its first form charged with
/// [`demotion_shadow_bytes`] until then (what `Choices::with_demotions` forwards).
pub fn sequence_cost_demoted(
    cfg: &ModelConfig,
    seq_len: usize,
    entry: impl Fn(usize, usize) -> (StoreOption, Option<usize>, Option<(usize, StoreOption)>),
) -> SequenceCost {
    let t_n = seq_len;
    let exact = cfg.exact_option();
    // `diff[q]` changes the running total from query q on; `[a, b)` gets `v` added.
    let span = |diff: &mut [i64], a: usize, b: usize, v: usize| {
        if a < b {
            diff[a] += v as i64;
            diff[b] -= v as i64;
        }
    };
    let own = attention_flops_per_entry(cfg, exact) as i64; // each query reads its own token exactly
    let mut held = vec![0i64; t_n];
    let mut flops = 0i64;
    for l in 0..cfg.n_layers {
        let mut bytes = vec![0i64; t_n + 1];
        let mut reads = vec![0i64; t_n + 1];
        for t in 0..t_n {
            let (o, e, demoted) = entry(t, l);
            let until = t + held_steps(o, t, t_n, e);
            let shadow = demoted.map_or(0, |(_, then)| demotion_shadow_bytes(cfg, o, then));
            let (switch, then) = match demoted.or_else(|| o.later(t)) {
                Some((at, then)) => (at.clamp(t, until), Some(then)),
                None => (until, None),
            };
            // Held from its own step; read by the queries after it (`form_at`).
            span(&mut bytes, t, switch, bytes_per_token(cfg, o) + shadow);
            span(&mut reads, t + 1, switch, attention_flops_per_entry(cfg, o.stored_as(exact)));
            if let Some(then) = then {
                span(&mut bytes, switch, until, bytes_per_token(cfg, then));
                span(&mut reads, switch.max(t + 1), until, attention_flops_per_entry(cfg, then));
            }
        }
        let (mut b, mut r) = (0i64, 0i64);
        for q in 0..t_n {
            b += bytes[q];
            r += reads[q];
            held[q] += b;
            if q >= 1 {
                flops += r + own;
            }
        }
    }
    let t = t_n.max(1) as f64;
    // Σ_q held[q] is every token's byte-steps: the time average as `sequence_bytes` takes it.
    let byte_steps: i64 = held.iter().sum();
    SequenceCost {
        kv_bytes_per_token: byte_steps as f64 / full_cache_steps_per_token(t_n) / t,
        peak_bytes_per_token: held.iter().copied().max().unwrap_or(0) as f64 / t,
        flops_per_token: flops as f64 / t,
    }
}

/// Attention FLOPs of a whole sequence's decode when every layer keeps the exact option (the
/// normaliser of the reward's FLOPs term).
pub fn exact_sequence_flops(cfg: &ModelConfig, seq_len: usize) -> f64 {
    let (per, exact) = (StepFlops::new(cfg), cfg.exact_index());
    let mut counts = vec![0; cfg.menu.len()];
    (1..seq_len)
        .map(|t| {
            counts[exact] = t;
            cfg.n_layers as f64 * per.step(&counts, &[]) as f64
        })
        .sum()
}

/// Cached bytes for one token over all layers when every layer keeps the exact option.
pub fn exact_bytes_per_token(cfg: &ModelConfig) -> usize {
    cfg.n_layers * bytes_per_token(cfg, cfg.exact_option())
}

/// Bytes per token of a dense MHA cache with the same query heads and head dim, all layers.
pub fn dense_mha_bytes_per_token(cfg: &ModelConfig) -> usize {
    cfg.n_layers * 2 * cfg.n_heads * cfg.head_dim * CACHE_ELEMENT_BYTES
}

/// Attention FLOPs for one query reading one cached entry kept as `option` (in its first form),
/// in one layer.
pub fn attention_flops_per_entry(cfg: &ModelConfig, option: StoreOption) -> usize {
    let (h, dh) = (cfg.n_heads, cfg.head_dim);
    match option.stored_as(cfg.exact_option()) {
        StoreOption::Drop => 0,
        StoreOption::Rank(r) => {
            // Scores: B_K·B_Qᵀ then ·A_Q (factored query) or B_K·qᵀ (dense query); then ⊙A_K
            // summed over ρ, p⊙A_V, (p⊙A_V)ᵀ·B_V.
            let scores =
                if cfg.has_dense_query() { 2 * r * h * dh } else { 2 * r * cfg.q_rank * dh + 2 * r * cfg.q_rank * h };
            scores + 2 * r * h + r * h + 2 * r * h * dh
        }
        // q·k and p·v per head
        StoreOption::Full => 4 * h * dh,
        StoreOption::Recent(_) | StoreOption::Schedule { .. } => unreachable!("a first form is plain"),
    }
}

/// Projection FLOPs per token per layer (Q, K, V factors or dense projections, output).
pub fn projection_flops_per_token(cfg: &ModelConfig) -> usize {
    let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.head_dim);
    let outputs = match cfg.attention {
        AttentionKind::Tpa => {
            let query = if cfg.has_dense_query() { h * dh } else { cfg.q_rank * (h + dh) };
            let dense = if cfg.has_dense_kv() { 2 * h * dh } else { 0 };
            query + 2 * cfg.kv_rank_max * (h + dh) + dense
        }
        AttentionKind::Mha | AttentionKind::Gqa => h * dh + 2 * cfg.kv_heads() * dh,
    };
    2 * d * (outputs + h * dh)
}

/// Attention FLOPs of one decode step in one layer: the query reads every cached entry
/// (counts per menu option of the entries it sees in their first form, in menu order; `late`:
/// counts per menu option of the entries already in their later form) plus its own exact entry.
pub fn step_attention_flops(cfg: &ModelConfig, entries_per_option: &[usize], late: &[usize]) -> usize {
    StepFlops::new(cfg).step(entries_per_option, late)
}

/// [`step_attention_flops`] with each menu option's FLOPs per entry looked up once (an
/// environment computes a step's FLOPs for every stream and layer at every step).
#[derive(Clone, Debug, Default)]
pub struct StepFlops {
    /// Per menu option: FLOPs per entry in its first form, and in its later form (0 without one).
    first: Vec<usize>,
    later: Vec<usize>,
    /// The query's own exact entry.
    own: usize,
}

impl StepFlops {
    /// The table of `cfg`'s menu.
    pub fn new(cfg: &ModelConfig) -> Self {
        let per = |o| attention_flops_per_entry(cfg, o);
        Self {
            first: cfg.menu.iter().map(|&o| per(o)).collect(),
            later: cfg.menu.iter().map(|o| o.later(0).map_or(0, |(_, then)| per(then))).collect(),
            own: per(cfg.exact_option()),
        }
    }

    /// FLOPs of one step in one layer, as [`step_attention_flops`].
    pub fn step(&self, entries_per_option: &[usize], late: &[usize]) -> usize {
        let dot = |per: &[usize], n: &[usize]| per.iter().zip(n).map(|(f, n)| f * n).sum::<usize>();
        dot(&self.first, entries_per_option) + dot(&self.later, late) + self.own
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// [`sequence_cost`]'s peak and FLOPs by definition: every (token, query) pair visited.
    fn sequence_cost_by_pairs(
        cfg: &ModelConfig,
        t_n: usize,
        entry: impl Fn(usize, usize) -> (StoreOption, Option<usize>),
    ) -> (f64, f64) {
        let exact = cfg.exact_option();
        let mut held = vec![0usize; t_n];
        let mut flops = 0usize;
        for l in 0..cfg.n_layers {
            let until: Vec<usize> = (0..t_n).map(|t| t + held_steps(entry(t, l).0, t, t_n, entry(t, l).1)).collect();
            for t in 0..t_n {
                for (q, h) in held.iter_mut().enumerate().take(until[t]).skip(t) {
                    *h += bytes_at(cfg, entry(t, l).0, t, q);
                }
            }
            for q in 1..t_n {
                flops += (0..q)
                    .filter(|&k| until[k] > q)
                    .map(|k| attention_flops_per_entry(cfg, entry(k, l).0.form_at(exact, k, q)))
                    .sum::<usize>();
                flops += attention_flops_per_entry(cfg, exact);
            }
        }
        let t = t_n as f64;
        (held.iter().copied().max().unwrap_or(0) as f64 / t, flops as f64 / t)
    }

    #[test]
    fn sequence_cost_equals_its_definition_pair_by_pair() {
        let timed: Vec<StoreOption> =
            ["recent:3", "full/2/rank:1", "full/4/rank:2/5", "rank:2/1/rank:1", "full/3/drop"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let cfg = ModelConfig::mqar().with_timed(&timed).unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        for t_n in [1, 2, 7, 40] {
            let picks: Vec<(StoreOption, Option<usize>)> = (0..t_n * cfg.n_layers)
                .map(|i| {
                    let t = i / cfg.n_layers;
                    let o = cfg.menu[rng.random_range(0..cfg.menu.len())];
                    let e = (rng.random_range(0..3) == 0).then(|| rng.random_range(t + 1..=t_n + 1));
                    (o, e)
                })
                .collect();
            let entry = |t: usize, l: usize| picks[t * cfg.n_layers + l];
            let fast = sequence_cost(&cfg, t_n, entry);
            let (peak, flops) = sequence_cost_by_pairs(&cfg, t_n, entry);
            assert_eq!(fast.peak_bytes_per_token, peak, "T = {t_n}");
            assert_eq!(fast.flops_per_token, flops, "T = {t_n}");
        }
    }

    #[test]
    fn bytes_follow_the_design_formulas() {
        let cfg = ModelConfig::mqar(); // 2 layers, h = 3, d_h = 16, ranks ≤ 2
        assert_eq!(bytes_per_token(&cfg, StoreOption::Drop), 0);
        assert_eq!(bytes_per_token(&cfg, StoreOption::Rank(1)), 2 * 19 * 4);
        assert_eq!(bytes_per_token(&cfg, StoreOption::Rank(2)), 4 * 19 * 4);
        assert_eq!(bytes_per_token(&cfg, StoreOption::Full), 2 * 48 * 4);
        assert_eq!(exact_bytes_per_token(&cfg), 2 * 384);
        // Every richer option of the preset's menu costs more.
        let bytes: Vec<usize> = cfg.menu.iter().map(|o| bytes_per_token(&cfg, *o)).collect();
        assert!(bytes.windows(2).all(|w| w[0] < w[1]), "{bytes:?}");
        let mut gqa = cfg.clone();
        gqa.attention = AttentionKind::Gqa;
        gqa.n_heads = 4;
        gqa.kv_heads = Some(2);
        gqa.menu = vec![StoreOption::Drop, StoreOption::Full];
        assert_eq!(bytes_per_token(&gqa, StoreOption::Full), 2 * 2 * 16 * 4);
        let mut mha = gqa.clone();
        mha.attention = AttentionKind::Mha;
        assert_eq!(dense_mha_bytes_per_token(&gqa), dense_mha_bytes_per_token(&mha));
        // recent:W holds the exact bytes for W + 1 steps (fewer near the end).
        let recent = StoreOption::Recent(15);
        assert_eq!(bytes_per_token(&cfg, recent), 384);
        assert_eq!(held_steps(recent, 0, 128, None), 16);
        assert_eq!(held_steps(recent, 120, 128, None), 8);
        assert_eq!(held_steps(StoreOption::Rank(1), 100, 128, Some(110)), 10);
        assert_eq!(held_steps(StoreOption::Drop, 3, 128, None), 0);
        assert_eq!(charged_bytes(&cfg, recent, 0, 127), 384.0 * 16.0 / 64.0);
        // A token kept to the end is charged by how long it is held: the first of T = 127 for
        // 127 steps of the 64 a full cache averages.
        assert_eq!(charged_bytes(&cfg, StoreOption::Rank(1), 0, 127), 152.0 * 127.0 / 64.0);
        // A uniform option reads its own bytes per token (per layer here: one layer of two).
        let uniform = sequence_bytes(&cfg, 128, |_, _| (StoreOption::Rank(1), None));
        assert!((uniform - 2.0 * 152.0).abs() < 1e-9, "{uniform}");
    }

    /// A hand-computed fixture: T = 4, one layer kept as {full, rank:1 evicted at 3, drop,
    /// recent:1} — held per step (own token included): full 384 from step 0 to 3; rank:1 152 at
    /// steps 1–2; recent:1 at step 3 only (the sequence ends).
    #[test]
    fn sequence_cost_of_a_small_pattern_with_expiries() {
        let mut cfg = ModelConfig::mqar();
        cfg.n_layers = 1;
        cfg.menu.push(StoreOption::Recent(1));
        let entries = [
            (StoreOption::Full, None),
            (StoreOption::Rank(1), Some(3)),
            (StoreOption::Drop, None),
            (StoreOption::Recent(1), None),
        ];
        let c = sequence_cost(&cfg, 4, |t, _| entries[t]);
        // Held per step: [384, 536, 536, 768]; byte-steps 2224 over (T+1)/2 = 2.5, over T = 4.
        assert!((c.kv_bytes_per_token - 2224.0 / 2.5 / 4.0).abs() < 1e-9, "{c:?}");
        assert!((c.peak_bytes_per_token - 768.0 / 4.0).abs() < 1e-9, "{c:?}");
        let per = |o| attention_flops_per_entry(&cfg, o);
        // Query 1 sees {0}; 2 sees {0, 1}; 3 sees {0} (1 evicted at 3, 2 dropped); each plus itself.
        let f = 3 * per(StoreOption::Full) + per(StoreOption::Rank(1)) + 3 * per(StoreOption::Full);
        assert!((c.flops_per_token - f as f64 / 4.0).abs() < 1e-9, "{c:?}");
        // The charge of each token summed gives the same memory.
        let charged: f64 = (0..4).map(|t| charged_bytes(&cfg, entries[t].0, t, 4)).sum::<f64>() / 4.0;
        let no_eviction = 2224.0 - 152.0 * 2.0 + 152.0 * 3.0;
        assert!((charged - no_eviction / 2.5 / 4.0).abs() < 1e-9, "charged_bytes ignores evictions: {charged}");
        // Uniform exact: its bytes per token, and the FLOPs normaliser.
        let exact = sequence_cost(&cfg, 4, |_, _| (StoreOption::Full, None));
        assert!((exact.kv_bytes_per_token - 384.0).abs() < 1e-9);
        assert!((exact.flops_per_token * 4.0 - exact_sequence_flops(&cfg, 4)).abs() < 1e-9);
        assert_eq!(exact_sequence_flops(&cfg, 4), ((1 + 1) + (2 + 1) + (3 + 1)) as f64 * per(StoreOption::Full) as f64);
    }

    /// A schedule by hand: T = 6, one layer, `full/1/rank:1` at t = 1 (dense with rank-1 shadow
    /// factors at queries 1–2, rank 1 from 3 on) and `rank:2/2/drop` at t = 2 (queries 2–4).
    #[test]
    fn schedules_are_charged_phase_by_phase() {
        let mut cfg = ModelConfig::mqar();
        cfg.n_layers = 1;
        let demote: StoreOption = "full/1/rank:1".parse().unwrap();
        let expire: StoreOption = "rank:2/2/drop".parse().unwrap();
        cfg = cfg.with_timed(&[demote, expire]).unwrap();
        let (full, r1, r2) = (384, 152, 304);
        assert_eq!(bytes_per_token(&cfg, demote), full + r1);
        assert_eq!(bytes_at(&cfg, demote, 1, 2), full + r1);
        assert_eq!(bytes_at(&cfg, demote, 1, 3), r1);
        assert_eq!(byte_steps(&cfg, demote, 1, 6, None), 2 * (full + r1) + 3 * r1);
        assert_eq!(byte_steps(&cfg, demote, 1, 6, Some(3)), 2 * (full + r1));
        assert_eq!(byte_steps(&cfg, expire, 2, 6, None), 3 * r2);
        assert_eq!(byte_steps(&cfg, expire, 5, 6, None), r2);
        // Three phases: dense at queries 1–2, rank 1 at 3–4, evicted from 5 on.
        let three: StoreOption = "full/1/rank:1/2".parse().unwrap();
        assert_eq!(byte_steps(&cfg, three, 1, 10, None), 2 * (full + r1) + 2 * r1);
        assert_eq!(bytes_at(&cfg, three, 1, 5), 0);
        assert_eq!(held_steps(three, 1, 10, None), 4);
        let entries = [
            (StoreOption::Drop, None),
            (demote, None),
            (expire, None),
            (StoreOption::Drop, None),
            (StoreOption::Drop, None),
            (StoreOption::Drop, None),
        ];
        let c = sequence_cost(&cfg, 6, |t, _| entries[t]);
        // Held per step: q=1: 536; q=2: 536 + 304; q=3: 152 + 304; q=4: 152 + 304; q=5: 152.
        let held = [0, 536, 840, 456, 456, 152];
        let total: usize = held.iter().sum();
        assert!((c.kv_bytes_per_token - total as f64 / 3.5 / 6.0).abs() < 1e-9, "{c:?}");
        assert!((c.peak_bytes_per_token - 840.0 / 6.0).abs() < 1e-9, "{c:?}");
        let charged: f64 = (0..6).map(|t| charged_bytes(&cfg, entries[t].0, t, 6)).sum::<f64>() / 6.0;
        assert!((charged - c.kv_bytes_per_token).abs() < 1e-9);
        // FLOPs: query 2 reads token 1 dense; 3 and 4 read it at rank 1 and token 2 at rank 2;
        // 5 reads token 1 at rank 1.
        let per = |o| attention_flops_per_entry(&cfg, o);
        let (f, p1, p2) = (per(StoreOption::Full), per(StoreOption::Rank(1)), per(StoreOption::Rank(2)));
        let expect = 5 * f + f + 2 * (p1 + p2) + p1;
        assert!((c.flops_per_token - expect as f64 / 6.0).abs() < 1e-9, "{c:?}");
        // The step form: one entry still first (dense), one late (rank 1).
        let i = cfg.option_index(demote).unwrap();
        let mut first = vec![0; cfg.menu.len()];
        let mut late = vec![0; cfg.menu.len()];
        first[i] = 1;
        late[i] = 1;
        assert_eq!(step_attention_flops(&cfg, &first, &late), f + p1 + f);
    }

    /// A demotion at a query of the token's own is charged as the schedule making the same move
    /// (a dense token with its rank-1 factors beside it, then those factors alone), and a factor
    /// token demoted to a nested rank keeps nothing beside it: T = 6, one layer, token 1 dense
    /// to query 2 then rank 1 (as `full/1/rank:1`), token 2 rank 2 to query 3 then rank 1,
    /// evicted from 5.
    #[test]
    fn demotions_at_own_queries_are_charged_like_schedules() {
        let mut cfg = ModelConfig::mqar();
        cfg.n_layers = 1;
        let demote: StoreOption = "full/1/rank:1".parse().unwrap();
        let cfg = cfg.with_timed(&[demote]).unwrap();
        let (full, r1, r2) = (384, 152, 304);
        assert_eq!(demotion_shadow_bytes(&cfg, StoreOption::Full, StoreOption::Rank(1)), r1);
        assert_eq!(demotion_shadow_bytes(&cfg, StoreOption::Rank(2), StoreOption::Rank(1)), 0);
        let scheduled = sequence_cost(&cfg, 6, |t, _| if t == 1 { (demote, None) } else { (StoreOption::Drop, None) });
        let own = sequence_cost_demoted(&cfg, 6, |t, _| match t {
            1 => (StoreOption::Full, None, Some((3, StoreOption::Rank(1)))),
            _ => (StoreOption::Drop, None, None),
        });
        assert_eq!(own, scheduled);
        let c = sequence_cost_demoted(&cfg, 6, |t, _| match t {
            1 => (StoreOption::Full, None, Some((3, StoreOption::Rank(1)))),
            2 => (StoreOption::Rank(2), Some(5), Some((4, StoreOption::Rank(1)))),
            _ => (StoreOption::Drop, None, None),
        });
        // Held per step: q=1: 536; q=2: 536 + 304; q=3: 152 + 304; q=4: 152 + 152; q=5: 152.
        let held = [0, full + r1, full + r1 + r2, r1 + r2, r1 + r1, r1];
        let total: usize = held.iter().sum();
        assert!((c.kv_bytes_per_token - total as f64 / 3.5 / 6.0).abs() < 1e-9, "{c:?}");
        assert!((c.peak_bytes_per_token - (full + r1 + r2) as f64 / 6.0).abs() < 1e-9, "{c:?}");
        // Without demotions the plain options are charged as before.
        let plain = sequence_cost_demoted(&cfg, 6, |t, _| match t {
            1 => (StoreOption::Full, None, None),
            _ => (StoreOption::Drop, None, None),
        });
        assert!((plain.kv_bytes_per_token - (5 * full) as f64 / 3.5 / 6.0).abs() < 1e-9, "{plain:?}");
    }

    #[test]
    fn step_flops_count_every_entry_once() {
        let cfg = ModelConfig::mqar();
        let per = |o| attention_flops_per_entry(&cfg, o);
        let n = [3, 0, 2, 5]; // drop, rank:1, rank:2, full
        let expect = 2 * per(StoreOption::Rank(2)) + 5 * per(StoreOption::Full) + per(StoreOption::Full);
        assert_eq!(step_attention_flops(&cfg, &n, &[0; 4]), expect);
        assert!(per(StoreOption::Rank(1)) < per(StoreOption::Rank(2)));
        // TPA-KVonly scores a rank-ρ entry with B_K·qᵀ (2ρ·h·d_h), a factored query with
        // B_K·B_Qᵀ then A_Q (2ρ·R_Q·(d_h + h)).
        let mut factored = cfg.clone();
        factored.q_rank = 2;
        let rest = 2 * 3 + 3 + 2 * 3 * 16; // ⊙A_K and sum, p⊙A_V, ·B_V for ρ = 1, h = 3, d_h = 16
        assert_eq!(per(StoreOption::Rank(1)), 2 * 3 * 16 + rest);
        assert_eq!(attention_flops_per_entry(&factored, StoreOption::Rank(1)), 2 * 2 * (16 + 3) + rest);
    }
}
