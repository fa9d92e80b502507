//! `ahr-cli`: the `ahr` binary's library half — argument types, one function per subcommand,
//! progress display, reports and plots. Pretraining and policy training live in `ahr-train`,
//! the judge in `ahr-eval`; commands never import each other (shared stages are in [`stages`]).
//!
//! It is the only crate that picks a device; everything below it takes a `Device`.

pub mod alloc;
pub mod args;
pub mod cartpole;
pub mod commands;
pub mod device;
pub mod plot;
pub mod progress;
pub mod report;
pub mod stages;
