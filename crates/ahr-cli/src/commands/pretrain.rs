//! `ahr pretrain`.

use std::io::IsTerminal;

use anyhow::Result;

use crate::args::Common;
use crate::device::device;
use crate::pretrain::{PretrainArgs, run};

/// Run nested-rank pretraining and print where the model and its rank curve went.
pub fn pretrain(mut args: PretrainArgs, common: &Common) -> Result<()> {
    let dev = device(&common.device)?;
    args.progress = std::io::stderr().is_terminal();
    eprintln!("run directory: {}", args.out.display());
    let outcome = run(&args, &dev)?;
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
