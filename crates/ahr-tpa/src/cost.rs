//! The cost model: pure functions of the config, the one source of truth for KV bytes and FLOPs
//! (reward, evaluation and the inference cache all use these, never a recomputation).
//!
//! Bytes per token per layer: rank ρ keeps `A_K, B_K, A_V, B_V` = `2·ρ·(h + d_h)` elements,
//! `full` keeps dense K and V = `2·h_kv·d_h` elements, `drop` keeps nothing.
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
    }
}

/// Cached bytes for one token in one layer under `option`.
pub fn bytes_per_token(cfg: &ModelConfig, option: StoreOption) -> usize {
    elements_per_token(cfg, option) * CACHE_ELEMENT_BYTES
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
/// (counts per menu option, in menu order) plus its own exact entry.
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
