//! `ahr-tpa`: the frozen environment model of ahr — a Tensor Product Attention transformer with
//! nested, hybrid ranks (DESIGN.md §3), MHA/GQA baselines on the same skeleton, the factor KV
//! cache that physically keeps each token at its chosen option, the pure cost model, checkpoints
//! and the import of official T6 weights.
//!
//! It is not a trainer (see `ahr-train`) and knows nothing of tasks or RL. Tensors live on a
//! runtime [`burn::tensor::Device`]; nothing here picks a backend.

pub mod attention;
pub mod cache;
pub mod checkpoint;
pub mod choices;
pub mod config;
pub mod cost;
pub mod device;
pub mod error;
pub mod expf;
pub mod grad;
pub mod host;
pub mod host_step;
pub mod model;
pub mod projected;
pub mod review;
pub mod rope;
pub mod t6;

pub use cache::{KvCache, PendingToken, Storage};
pub use choices::{ChoiceSpec, Choices};
pub use config::{AttentionKind, Form, ModelConfig, StoreOption};
pub use error::{Error, Invalid, Result};
pub use host_step::HostModel;
pub use model::{Model, StepOutput};
pub use review::{
    KeepAges, MAX_KEEP_AGES, REVIEW_FEATURES, ReviewAt, ReviewBook, Reviewed, SPIKE_FEATURES, SPIKE_TOKEN_FEATURES,
    review_options,
};
