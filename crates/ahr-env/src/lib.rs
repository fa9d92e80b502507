//! `ahr-env`: the RL environment of ahr (DESIGN.md §5) — a frozen model, a task and a reward
//! that balances task loss against KV memory and attention FLOPs, stepped for many streams
//! through one batched decode. It knows nothing of PPO: trainers see the [`VecEnv`] trait.
//!
//! Memory and FLOPs come from `ahr_tpa::cost`, never from a second formula.

pub mod budget;
pub mod calibrate;
pub mod evaluate;
pub mod factory;
pub mod history;
pub mod layer;
pub mod rank;
pub mod spec;
pub mod vec_env;

pub use budget::{BudgetController, initial_lambda};
pub use calibrate::{CalibrateError, calibrate};
pub use evaluate::{PolicyEval, evaluate_policy, evaluate_rule};
pub use factory::{load_task, make_env};
pub use history::History;
pub use layer::LayerEnv;
pub use rank::RankEnv;
pub use spec::{BudgetKind, EnvSettings, EnvSpec, RewardConfig, TaskBaseline};
pub use vec_env::{EnvError, EpisodeStats, VecEnv, VecStep, run_episodes};
