//! `ahr-tasks`: the data side of ahr — Zoology's MQAR, mixed-difficulty MQAR, byte-level text
//! corpora and JSONL token datasets, as deterministic batches of token ids and labels.
//!
//! Every batch is a pure function of (task config, seed, split, batch index), so training can
//! resume mid-run and evaluation sees the same held-out data every time. No tensors here: the
//! model crate turns batches into tensors.

pub mod batch;
pub mod error;
pub mod jsonl;
pub mod mqar;
pub mod spec;
pub mod text;

pub use batch::{Batch, IGNORE, Metrics, Split, TokenRole};
pub use error::{Error, Result};
pub use spec::{Metric, Task, TaskConfig};
