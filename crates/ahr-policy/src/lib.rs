//! `ahr-policy`: the rank allocation module (RAM) — what the agent observes (a versioned feature
//! spec with running normalisation), what it chooses (one menu option per layer, with validity
//! masks), the masked multi-categorical distribution, the actor-critic network, and the export
//! format of trained policies.
//!
//! It knows the model only through its config (menu, layer count); it runs no environment and no
//! optimiser. Inference code depends on this crate, not on PPO.

pub mod dist;
pub mod evict;
pub mod export;
pub mod net;
pub mod obs;
pub mod ops;
pub mod tanh;

pub use dist::MaskedMultiCategorical;
pub use net::{ActorCritic, PolicyConfig, PolicyKind, PriorTable, resolve_prior};
pub use obs::{Granularity, ObsBatch, ObsSpec, RunningNorm};
