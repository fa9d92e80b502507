//! The long stages a command runs (pretraining, policy training) with their progress on stderr and
//! their summary on stdout; `pretrain`, `train-policy` and `quickstart` share them.

use ahr_dist::Comm;
use ahr_ppo::trainer::IterationReport;
use ahr_train::policy::PolicyRunArgs;
use ahr_train::pretrain::PretrainArgs;
use anyhow::{Context, Result};
use burn::tensor::Device;

use crate::progress::Progress;

/// One line on a PPO iteration.
pub fn describe(r: &IterationReport) -> String {
    format!(
        "return {:.3} | mem {:.3} | acc {:.3} | λ {:.3} | {:.0} SPS",
        r.episodic_return, r.mem_frac, r.accuracy, r.lambda_mem, r.sps
    )
}

/// Run nested-rank pretraining with progress on stderr and print where the model and its rank
/// curve went (rank 0 only, when data-parallel over `comm`).
pub fn pretrain(args: &PretrainArgs, dev: &Device, comm: &Comm) -> Result<()> {
    let file = ahr_train::files::ModelFile::load(&args.model_config)?;
    if comm.is_root() {
        eprintln!("run directory: {}{}", args.out.display(), ranks_note(comm));
        for w in file.pretrain.warnings(&file.model) {
            eprintln!("warning: {w}");
        }
        if let Some(dir) = &args.init {
            let from = ahr_tpa::ModelConfig::load_json(&dir.join(ahr_tpa::checkpoint::CONFIG_FILE))?;
            if from.rope_base != file.model.rope_base {
                eprintln!(
                    "note: --init: RoPE base {} -> {} (fine-tuning to the new angles)",
                    from.rope_base, file.model.rope_base
                );
            }
        }
    }
    // Periodic validation runs under the exact choice, or the lowest fitted rank (factor fitting).
    let under = match file.pretrain.validation_spec(&file.model) {
        ahr_tpa::ChoiceSpec::Exact => String::new(),
        spec => format!(" ({spec})"),
    };
    let mut progress = Progress::new("step", 0);
    let outcome = ahr_train::pretrain::run_distributed(args, dev, comm, |r| {
        if let Some(v) = &r.validation {
            progress
                .println(&format!("step {:>6}  valid{under} loss {:.4}  accuracy {:.4}", r.step, v.loss, v.accuracy));
        }
        progress.update(r.step, r.total_steps, &format!("loss {:.4} | {:.0} tok/s", r.loss, r.tokens_per_sec));
    })?;
    drop(progress);
    print_digest(comm, "parameters", outcome.param_digest);
    if !comm.is_root() {
        return Ok(());
    }
    let Some(eval) = outcome.final_eval else {
        println!(
            "stopped after {} steps at {:.0} tokens/s; continue with --resume --out {}",
            outcome.steps_run,
            outcome.tokens_per_sec,
            args.out.display()
        );
        return Ok(());
    };
    println!(
        "pretrained {} steps at {:.0} tokens/s; held-out exact-choice loss {:.4}, accuracy {:.4}",
        outcome.steps_run, outcome.tokens_per_sec, eval.loss, eval.accuracy
    );
    println!("model: {}  rank curve: {}", args.out.display(), args.out.join("rank_curve.json").display());
    Ok(())
}

/// Train a rank policy with PPO and progress on stderr, export it and print its held-out
/// evaluation (rank 0 only, when DD-PPO over `comm`).
pub fn train_policy(args: &PolicyRunArgs, dev: &Device, comm: &Comm) -> Result<()> {
    let run_dir = args.run_dir();
    if comm.is_root() {
        eprintln!(
            "run directory: {} (TensorBoard: tensorboard --logdir {}){}",
            run_dir.display(),
            run_dir.join("tb").display(),
            ranks_note(comm)
        );
    }
    let mut progress = Progress::new("iteration", 0);
    let outcome = ahr_train::policy::train_policy_distributed(args, dev, comm, |r, total| {
        progress.update(r.iteration, total, &describe(r))
    })?;
    drop(progress);
    print_digest(comm, "policy", outcome.policy_digest);
    let Some(outcome) = outcome.run else { return Ok(()) };
    if let Some(last) = &outcome.last {
        println!("iteration {}: {}", last.iteration, describe(last));
    }
    let eval = &outcome.eval;
    println!(
        "held-out ({} sequences, deterministic): accuracy {:.4}, loss {:.4}, {:.1} KV bytes/token = {:.3} of exact",
        eval.sequences, eval.accuracy, eval.task_loss, eval.kv_bytes_per_token, eval.mem_frac
    );
    println!("policy: {}  run: {}", outcome.policy_dir.display(), outcome.run_dir.display());
    Ok(())
}

/// Each rank's digest of what it trained, on stderr, so that a run shows its ranks agree. One
/// write per line: the launcher merges the ranks' streams, and `eprintln!` may write a line in
/// pieces that another stream's output then splits.
fn print_digest(comm: &Comm, what: &str, digest: u64) {
    if comm.is_distributed() {
        let line = format!("rank {} of {}: {what} digest {digest:016x}\n", comm.rank(), comm.size());
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }
}

fn ranks_note(comm: &Comm) -> String {
    match comm.is_distributed() {
        true => format!("; {} ranks", comm.size()),
        false => String::new(),
    }
}

/// Run the judge with a line per finished point on stderr, write the report into `out` and print
/// the Markdown table and the plot's path.
pub fn judge(args: &ahr_eval::EvalArgs, out: &std::path::Path, dev: &Device) -> Result<ahr_eval::EvalOutput> {
    // Every point also goes to `points.jsonl` the moment it is finished: a run stopped early
    // keeps what it measured (`scripts/headroom-table.py` reads either file).
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("points.jsonl");
    let mut points = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut failed = None;
    let o = ahr_eval::eval(args, dev, |e| match e {
        ahr_eval::Progress::Searched { family, settings, seconds } => {
            eprintln!("{family}: {settings} settings to run (search {seconds:.0} s)")
        }
        ahr_eval::Progress::Warning(w) => eprintln!("warning: {w}"),
        ahr_eval::Progress::Fitting { family, round } => eprintln!("{family}: {round}"),
        ahr_eval::Progress::Measured { family, path, settings } => {
            eprintln!("{family}: {settings} settings measured before, in {}", path.display())
        }
        ahr_eval::Progress::Table { family, index, table } => {
            // Each fitted vocabulary setting as a table file, for a later judge's --rule-tables.
            let file = out.join("tables").join(format!("{family}-{index:03}.json"));
            let written = std::fs::create_dir_all(out.join("tables"))
                .map_err(anyhow::Error::from)
                .and_then(|_| crate::commands::write_json(&file, table).map_err(anyhow::Error::from));
            if let Err(e) = written {
                failed.get_or_insert(e.context(format!("writing {}", file.display())));
            }
        }
        ahr_eval::Progress::Point(p) => {
            eprintln!(
                "{:<26} {:<34} metric {:.4}  bytes/token {:.1}",
                p.name, p.setting, p.metric, p.kv_bytes_per_token
            );
            let line = serde_json::to_string(p).map(|l| l + "\n").map_err(anyhow::Error::from);
            if let Err(e) = line.and_then(|l| Ok(std::io::Write::write_all(&mut points, l.as_bytes())?)) {
                failed.get_or_insert(e.context(format!("writing {}", path.display())));
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    crate::report::write(out, &o)?;
    print!("{}", crate::report::markdown(&o));
    println!("plot: {}", out.join("pareto.png").display());
    Ok(o)
}
