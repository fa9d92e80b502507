//! What one layer's projection of a token holds — the query and everything the cache may keep.
//! A leaf type: attention produces it, the cache stores it, neither imports the other for it.

use burn::tensor::Tensor;

/// A block of tokens projected by one layer: everything the cache may keep and the query.
///
/// Shapes use `[B, T, …]`; in decode `T = 1`.
#[derive(Clone, Debug)]
pub struct Projected {
    /// TPA query factors: `A_Q [B, T, h, R_Q]`, rotated `B_Q [B, T, R_Q, d_h]`.
    pub q_factors: Option<(Tensor<4>, Tensor<4>)>,
    /// Dense rotated query `[B, T, h, d_h]` (MHA/GQA).
    pub q_dense: Option<Tensor<4>>,
    /// TPA K/V factors: `A_K [B,T,h,R]`, rotated `B_K [B,T,R,d_h]`, `A_V [B,T,h,R]`, `B_V [B,T,R,d_h]`.
    pub kv_factors: Option<[Tensor<4>; 4]>,
    /// Dense rotated K and V `[B, T, h_kv, d_h]`.
    pub kv_dense: Option<(Tensor<4>, Tensor<4>)>,
}
