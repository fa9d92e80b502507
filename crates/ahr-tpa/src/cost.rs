//! The cost model: pure functions of the config, the one source of truth for KV bytes and FLOPs
//! (reward, evaluation and the inference cache all use these, never a recomputation).
//!
//! Bytes per token per layer: rank ρ keeps `A_K, B_K, A_V, B_V` = `2·ρ·(h + d_h)` elements,
//! `full` keeps dense K and V = `2·h_kv·d_h` elements, `drop` keeps nothing; `recent:W` keeps the
//! exact option's elements while it is held (W + 1 steps at most, [`charged_bytes`]).
//!
//! Attention FLOPs of one query against one cached entry follow FlashTPA's contraction order
//! (`B_K·B_Qᵀ`, then the head factors, then the value factors); a dense entry costs a dot product
//! and a weighted sum per head. Multiply-adds count as 2 FLOPs.

use crate::config::{AttentionKind, ModelConfig, StoreOption};

/// Bytes of one cached element (the cache stores `f32`).
pub const CACHE_ELEMENT_BYTES: usize = 4;

/// Cached elements for one token in one layer under `option`.
pub fn elements_per_token(cfg: &ModelConfig, option: StoreOption) -> usize {
    match option {
        StoreOption::Drop => 0,
        StoreOption::Rank(r) => 2 * r * (cfg.n_heads + cfg.head_dim),
        StoreOption::Full => 2 * cfg.kv_heads() * cfg.head_dim,
        StoreOption::Recent(_) => elements_per_token(cfg, cfg.exact_option()),
    }
}

/// Cached bytes for one token in one layer under `option`, while it is held.
pub fn bytes_per_token(cfg: &ModelConfig, option: StoreOption) -> usize {
    elements_per_token(cfg, option) * CACHE_ELEMENT_BYTES
}

/// Bytes a token kept as `option` is charged in a sequence of `seq_len` tokens: what it holds,
/// times the share of the sequence it is held for. A token that never expires holds its bytes
/// to the end (share 1); `recent:W` holds them for its own step and W queries, `(W + 1) / T`.
/// A cache whose tokens arrive evenly at each option then peaks at the sum of the charges, so
/// the reward's memory and the peak a sequence reaches (what evaluation reports) agree.
pub fn charged_bytes(cfg: &ModelConfig, option: StoreOption, seq_len: usize) -> f64 {
    let bytes = bytes_per_token(cfg, option) as f64;
    match option.window() {
        Some(w) => bytes * ((w + 1).min(seq_len.max(1)) as f64 / seq_len.max(1) as f64),
        None => bytes,
    }
}

/// Cached bytes for one token over all layers when every layer keeps the exact option.
pub fn exact_bytes_per_token(cfg: &ModelConfig) -> usize {
    cfg.n_layers * bytes_per_token(cfg, cfg.exact_option())
}

/// Bytes per token of a dense MHA cache with the same query heads and head dim, all layers.
pub fn dense_mha_bytes_per_token(cfg: &ModelConfig) -> usize {
    cfg.n_layers * 2 * cfg.n_heads * cfg.head_dim * CACHE_ELEMENT_BYTES
}

/// Attention FLOPs for one query reading one cached entry kept as `option`, in one layer.
pub fn attention_flops_per_entry(cfg: &ModelConfig, option: StoreOption) -> usize {
    let (h, dh) = (cfg.n_heads, cfg.head_dim);
    match option {
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
        StoreOption::Recent(_) => attention_flops_per_entry(cfg, cfg.exact_option()),
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
/// (counts per menu option of the entries it sees, in menu order) plus its own exact entry.
pub fn step_attention_flops(cfg: &ModelConfig, entries_per_option: &[usize]) -> usize {
    let cached: usize =
        cfg.menu.iter().zip(entries_per_option).map(|(o, n)| n * attention_flops_per_entry(cfg, *o)).sum();
    cached + attention_flops_per_entry(cfg, cfg.exact_option())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // recent:W holds the exact bytes for W + 1 of the T steps.
        let recent = StoreOption::Recent(15);
        assert_eq!(bytes_per_token(&cfg, recent), 384);
        assert_eq!(charged_bytes(&cfg, recent, 128), 384.0 * 16.0 / 128.0);
        assert_eq!(charged_bytes(&cfg, recent, 8), 384.0);
        assert_eq!(charged_bytes(&cfg, StoreOption::Rank(1), 128), 152.0);
    }

    #[test]
    fn step_flops_count_every_entry_once() {
        let cfg = ModelConfig::mqar();
        let per = |o| attention_flops_per_entry(&cfg, o);
        let n = [3, 0, 2, 5]; // drop, rank:1, rank:2, full
        let expect = 2 * per(StoreOption::Rank(2)) + 5 * per(StoreOption::Full) + per(StoreOption::Full);
        assert_eq!(step_attention_flops(&cfg, &n), expect);
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
