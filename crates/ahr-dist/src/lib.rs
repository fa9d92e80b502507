//! `ahr-dist`: ahr's trainers past one process (DESIGN.md §11), on MPI — the engine RL and ML
//! practitioners already use for this (OpenAI baselines' `MpiAdam`, DD-PPO) — rather than a
//! network layer of our own.
//!
//! - [`Launch`] starts the process group: `MPI_COMM_WORLD` when `mpirun` / `srun` started the
//!   process and the `mpi` feature is built in (threading "funneled": only the learner thread calls
//!   MPI, rollout workers never do), one process otherwise.
//! - [`Comm`] is the handle the trainers hold: rank, size, sums, broadcasts, agreement and abort.
//!   With one process every collective is the identity, so a trainer written against it runs
//!   exactly as before.
//! - [`all_reduce_grads`], [`broadcast_module`] and [`module_digest`] move burn modules and
//!   gradient sets through it as flat f32 vectors.
//! - [`share_files`] hands rank 0's checkpoint files to the other ranks (no shared filesystem
//!   needed to resume).

mod comm;
mod files;
mod module;

pub use comm::{Comm, DistError, Launch, launched_size, shard};
pub use files::{SharedFiles, share_files};
pub use module::{all_reduce_grads, broadcast_module, flat_params, module_digest};
