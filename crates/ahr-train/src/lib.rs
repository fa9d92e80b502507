//! `ahr-train`: the two training recipes of ahr as a library.
//!
//! - [`pretrain`]: nested-rank pretraining of the frozen TPA model (DESIGN.md §3) — the recipe
//!   config, the training loop with a per-step callback, atomic checkpoints and exact resume, the
//!   rank curve; [`evaluate`] scores a model under one storage choice on held-out data.
//! - [`policy`]: PPO training of a rank policy on the environment an env spec describes, and its
//!   export as a policy directory that `ahr-infer` loads.
//! - [`mod@bench`]: pretraining throughput, side by side with a PyTorch eager reference.
//!
//! It picks no device and prints nothing: callers (the `ahr` binary, `examples/`) pass a
//! `Device` and render progress from the callbacks.

pub mod bench;
pub mod evaluate;
pub mod files;
pub mod policy;
pub mod pretrain;

pub use files::{EnvRun, ModelFile, load_env_model, load_policy_model};
pub use pretrain::{PretrainArgs, PretrainConfig, PretrainOutcome, StepReport};
