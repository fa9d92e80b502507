//! `ahr import-t6`.

use std::path::Path;

use ahr_tpa::checkpoint::save_model;
use anyhow::Result;

use crate::args::Common;
use crate::device::device;

/// Convert official T6 weights into a model directory.
pub fn import_t6(weights: &Path, config: &Path, out: &Path, common: &Common) -> Result<()> {
    let dev = device(&common.device)?;
    let model = ahr_tpa::t6::import(weights, config, &dev)?;
    save_model(&model, out)?;
    let cfg = model.config();
    println!(
        "imported T6 model: {} layers, d_model {}, {} heads × {}, rank {}, q_rank {} -> {}",
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.head_dim,
        cfg.kv_rank_max,
        cfg.q_rank,
        out.display()
    );
    Ok(())
}
