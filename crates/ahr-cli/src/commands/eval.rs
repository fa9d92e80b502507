//! `ahr eval`: learned policies against the best setting of every rule family at their memory
//! (the fair judge, `ahr_eval::judge`), with the Pareto report.

use std::path::{Path, PathBuf};

use ahr_eval::{EvalArgs, EvalOutput, Family};
use anyhow::{Context, Result};

use crate::args::Common;
use crate::device::device;

/// How many sequences the judge reads.
pub struct Sizes {
    /// Held-out sequences per point (`None`: all).
    pub sequences: Option<usize>,
    /// Training sequences the fitted vocabulary rules are fitted on, one fit per count (empty:
    /// each family's own).
    pub fit_sequences: Vec<usize>,
    /// At most this many rounds of the fitted rules' search (`None`: each family's own).
    pub fit_rounds: Option<usize>,
    /// Where the fitted rules' measurements are kept between runs (`None`: in memory).
    pub fit_cache: Option<PathBuf>,
}

/// `--fractions`: memory targets as fractions of the exact memory in [0, 1], or `none`.
fn parse_fractions(items: &[String]) -> Result<Vec<f64>> {
    if items.len() == 1 && items[0].trim() == "none" {
        return Ok(Vec::new());
    }
    items
        .iter()
        .map(|s| match s.trim().parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => anyhow::bail!("--fractions: `{s}` is not a fraction of the exact memory in [0, 1] (or `none`)"),
        })
        .collect()
}

/// Run the judge, write the report into `out` and print a line per point on stderr.
#[allow(clippy::too_many_arguments)]
pub fn eval(
    models: Vec<PathBuf>,
    env: PathBuf,
    policies: Vec<PathBuf>,
    families: &[String],
    Sizes { sequences, fit_sequences, fit_rounds, fit_cache }: Sizes,
    rule_tables: &[PathBuf],
    fractions: &[String],
    workers: usize,
    out: &std::path::Path,
    common: &Common,
) -> Result<EvalOutput> {
    let fractions = parse_fractions(fractions)?;
    let rule_tables = table_files(rule_tables)?;
    if fractions.is_empty() && policies.is_empty() {
        anyhow::bail!("nothing to judge: no --policy and --fractions none");
    }
    let dev = device(&common.device)?;
    // No --baselines: every default family, from the one list (`Family::ALL`).
    let families = if families.is_empty() {
        Family::ALL.into_iter().filter(|f| !f.opt_in()).collect()
    } else {
        families
            .iter()
            .map(|f| f.parse::<Family>().map_err(|e| anyhow::anyhow!("--baselines: {e}")))
            .collect::<Result<Vec<_>>>()?
    };
    if workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    if fit_sequences.contains(&0) {
        anyhow::bail!("--fit-sequences must be at least 1");
    }
    if fit_rounds == Some(0) {
        anyhow::bail!("--fit-rounds must be at least 1");
    }
    let args = EvalArgs {
        models,
        env,
        policies,
        families,
        sequences,
        fractions,
        workers,
        fit_sequences,
        fit_rounds,
        fit_cache,
        rule_tables,
    };
    crate::stages::judge(&args, out, &dev)
}

/// `--rule-tables`: each file as given, each directory's `*.json` files in name order.
fn table_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).with_context(|| format!("--rule-tables: {}", path.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            anyhow::ensure!(!found.is_empty(), "--rule-tables: {} holds no *.json table", path.display());
            found.sort();
            files.extend(found);
        } else {
            anyhow::ensure!(path.is_file(), "--rule-tables: {} is neither a file nor a directory", path.display());
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// `ahr fit-rule`: a fitted vocabulary rule (`family`: `token-class` or `token-table`) at
/// `fraction` of the exact bytes, written to `out` as a per-token prior table; prints the setting
/// and its training point; `fit_cache`: keep its measurements in files there.
#[allow(clippy::too_many_arguments)]
pub fn fit_rule(
    model: &Path,
    env: &Path,
    family: &str,
    fraction: f64,
    fit_cache: Option<PathBuf>,
    workers: usize,
    out: &Path,
    common: &Common,
) -> Result<()> {
    if workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let family: ahr_eval::Family = family.parse().map_err(anyhow::Error::msg)?;
    let dev = device(&common.device)?;
    let cache = match fit_cache {
        Some(dir) => {
            Some(ahr_eval::token_class::FitCache { dir, model_fingerprint: ahr_tpa::checkpoint::fingerprint(model)? })
        }
        None => None,
    };
    let ahr_train::EnvRun { spec, model, task } = ahr_train::EnvRun::load(model, env, &dev)?;
    let fitted =
        ahr_eval::token_class::fit_prior(&model, &task, &spec, family, fraction, workers, cache.as_ref(), &dev, |r| {
            eprintln!("{family}: {r}")
        })?;
    let exact = ahr_tpa::cost::exact_bytes_per_token(model.config()) as f64;
    let p = &fitted.train;
    println!("{}", p.setting);
    println!(
        "the best of {} fitted settings on {} other training sequences: metric {:.4}, loss {:.4}, {:.1} bytes/token = {:.2} % of exact",
        fitted.candidates,
        ahr_eval::token_class::SELECT_SEQUENCES,
        p.metric,
        p.loss,
        p.kv_bytes_per_token,
        100.0 * p.kv_bytes_per_token / exact
    );
    crate::commands::write_json(out, &fitted.table)?;
    println!("table: {}", out.display());
    Ok(())
}
