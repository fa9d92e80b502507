//! One function per subcommand.

pub mod analyze;
pub mod bench;
pub mod eval;
pub mod eval_model;
pub mod generate;
pub mod import_t6;
pub mod logits;
pub mod pretrain;
pub mod quickstart;
pub mod train_policy;

use std::path::Path;

use anyhow::Result;

/// Write pretty JSON atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("output should serialise");
    ahr_tpa::checkpoint::write_atomic(path, text.as_bytes())?;
    Ok(())
}
