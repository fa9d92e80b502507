//! `ahr logits`.

use std::path::Path;

use ahr_tpa::ChoiceSpec;
use ahr_tpa::checkpoint::load_model;
use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::args::Common;
use crate::device::device;

#[derive(Serialize)]
struct LogitsOut {
    logits: Vec<Vec<f32>>,
}

/// Write `{"logits": [[…] per token]}` for a comma-separated token list.
pub fn logits(model_dir: &Path, tokens: &str, choices: &str, out: &Path, common: &Common) -> Result<()> {
    let dev = device(&common.device)?;
    let ids: Vec<u32> = tokens
        .split(',')
        .map(|t| t.trim().parse::<u32>().with_context(|| format!("--tokens: `{t}` is not a token id")))
        .collect::<Result<_>>()?;
    let spec: ChoiceSpec = choices.parse().map_err(|e: String| anyhow!("--choices: {e}"))?;
    let model = load_model(model_dir, &dev)?;
    let n = ids.len();
    let choices = spec.choices(model.config(), 1, n).map_err(|e| anyhow!("--choices: {e}"))?;
    let logits = model.forward(model.tokens(&ids, 1, n, &dev)?, &choices)?;
    let v = model.config().vocab_size;
    let flat = logits.into_data().try_to_vec::<f32>().map_err(|e| anyhow!("reading logits: {e:?}"))?;
    super::write_json(out, &LogitsOut { logits: flat.chunks(v).map(<[f32]>::to_vec).collect() })?;
    println!("{n} × {v} logits -> {}", out.display());
    Ok(())
}
