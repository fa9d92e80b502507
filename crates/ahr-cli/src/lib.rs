//! `ahr-cli`: the `ahr` binary's library half — argument types, one function per subcommand,
//! the pretraining loop and the evaluation harness shared by several commands.
//!
//! It is the only crate that picks a device; everything below it takes a `Device`.

pub mod alloc;
pub mod args;
pub mod baselines;
pub mod cartpole;
pub mod commands;
pub mod device;
pub mod evaluate;
pub mod files;
pub mod plot;
pub mod pretrain;
