//! `ahr eval`: learned policies against the best setting of every rule family at their memory
//! (the fair judge, `ahr_eval::judge`), with the Pareto report.

use std::path::PathBuf;

use ahr_eval::{EvalArgs, EvalOutput, Family};
use anyhow::Result;

use crate::args::Common;
use crate::device::device;

/// Run the judge, write the report into `out` and print a line per point on stderr.
pub fn eval(
    models: Vec<PathBuf>,
    env: PathBuf,
    policies: Vec<PathBuf>,
    families: &[String],
    sequences: Option<usize>,
    out: &std::path::Path,
    common: &Common,
) -> Result<EvalOutput> {
    let dev = device(&common.device)?;
    let families = families
        .iter()
        .map(|f| f.parse::<Family>().map_err(|e| anyhow::anyhow!("--baselines: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let args = EvalArgs { models, env, policies, families, sequences, fractions: vec![0.1, 0.25, 0.5] };
    crate::stages::judge(&args, out, &dev)
}
