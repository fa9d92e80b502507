//! `ahr-infer`: run a prompt and decode with a trained rank policy choosing how every token's
//! K/V is kept, in a cache that really holds only what was chosen.
//!
//! The cache is `ahr_tpa::KvCache`: per stream, per layer, per menu option, rank-ρ tokens as ρ
//! rows of factors and dense tokens as `[h_kv, d_h]`, nothing padded to the maximum rank.
//! Attention reads the factors directly (`B_K·B_Qᵀ` first, then the head factors, FlashTPA's
//! order) without materialising K/V. Decisions are deterministic: the policy's most probable
//! valid option per layer, from the same features the rank environment built during training.
//!
//! This crate depends on the model and the policy crates only: no environment, no PPO.

pub mod bench;
mod generate;

pub use generate::{Chooser, Generation, Generator, InferError, MemoryReport, RankPolicy};
