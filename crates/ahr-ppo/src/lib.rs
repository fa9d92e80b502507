//! `ahr-ppo`: PPO as CleanRL's `ppo.py` (GAE, advantage normalisation, clipped surrogate and value
//! losses, entropy bonus, global grad-norm clipping, LR annealing, minibatch epochs, target-KL
//! stop), with its hyper-parameter names and defaults, rollout workers on crossbeam channels,
//! metrics sinks (TensorBoard, JSONL) and checkpoints.
//!
//! It trains any [`ahr_env::VecEnv`] with the RAM actor-critic of `ahr-policy`; it does not know
//! what a rank is.

pub mod bench;
mod buffer;
mod checkpoint;
pub mod config;
pub mod gae;
pub mod logging;
pub mod loss;
pub mod metrics;
pub mod trainer;
pub mod update;
pub mod workers;

pub use config::{AdvantageBaseline, Credit, PpoConfig};
pub use trainer::{TrainOutcome, Trainer};
