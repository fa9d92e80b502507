//! `ahr eval`: learned policies against the best setting of every rule family at their memory
//! (the fair judge, `ahr_eval::judge`), with the Pareto report.

use std::path::PathBuf;

use ahr_eval::{EvalArgs, EvalOutput, Family};
use anyhow::Result;

use crate::args::Common;
use crate::device::device;

/// Run the judge, write the report into `out` and print a line per point on stderr.
#[allow(clippy::too_many_arguments)]
pub fn eval(
    models: Vec<PathBuf>,
    env: PathBuf,
    policies: Vec<PathBuf>,
    families: &[String],
    sequences: Option<usize>,
    fractions: Vec<f64>,
    workers: usize,
    out: &std::path::Path,
    common: &Common,
) -> Result<EvalOutput> {
    if let Some(f) = fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
        anyhow::bail!("--fractions: {f} is not a fraction of the exact memory in [0, 1]");
    }
    let dev = device(&common.device)?;
    let families = families
        .iter()
        .map(|f| f.parse::<Family>().map_err(|e| anyhow::anyhow!("--baselines: {e}")))
        .collect::<Result<Vec<_>>>()?;
    if workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let args = EvalArgs { models, env, policies, families, sequences, fractions, workers };
    crate::stages::judge(&args, out, &dev)
}
