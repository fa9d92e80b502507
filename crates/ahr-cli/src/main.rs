//! The `ahr` binary: parse arguments, dispatch, and turn errors into a message and exit code 1.
//! Under `mpirun` / `srun` (built with the `mpi` feature) `pretrain` and `train-policy` run as one
//! rank each of a data-parallel group; an error or a panic on any rank ends the whole job.

use ahr_cli::args::{BenchCommand, Cli, Command};
use ahr_cli::commands;
use ahr_train::PretrainArgs;
use clap::Parser;

/// Rust's allocations go to mimalloc: a decode step, a rollout step and the judge's forwards
/// allocate and free many small vectors and tensors per token, and glibc's malloc and free were
/// ~15 % of a rollout worker's time in `perf` (docs/BENCHMARKS.md, "mimalloc"). Allocation never
/// changes a computed value, so every result is the same bits. libtorch (`tch`) allocates through
/// glibc still; [`ahr_cli::alloc::keep_freed_memory`] sets both allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ahr_cli::alloc::keep_freed_memory();
    let cli = Cli::parse();
    // Lives to the end of `main`, where dropping it ends MPI (on success only: errors abort).
    let launch = ahr_dist::Launch::init().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let comm = launch.comm();
    comm.abort_on_panic();
    if comm.is_distributed() && std::env::var("AHR_FAULT_RANK").is_ok_and(|r| r.parse() == Ok(comm.rank())) {
        // Fault injection for scripts/mpi-check.sh: one rank dies, the job must end, not hang.
        panic!("AHR_FAULT_RANK={}: injected failure", comm.rank());
    }
    if comm.is_distributed() && !matches!(cli.command, Command::Pretrain { .. } | Command::TrainPolicy { .. }) {
        eprintln!("error: only `pretrain` and `train-policy` run across several processes; launch other commands once");
        comm.abort(2);
    }
    let result = match cli.command {
        Command::Quickstart { out, pretrain, sequences, workers, common } => {
            commands::quickstart::quickstart(&out, pretrain, Some(sequences), workers, &common)
        }
        Command::Pretrain { model_config, env, out, steps, seed, resume, init, stop_after, common } => {
            commands::pretrain::pretrain(
                &PretrainArgs { model_config, env, out, steps, seed, resume, init, stop_after },
                &common,
                &comm,
            )
        }
        Command::EvalModel { model, env, data, choices, out, common } => {
            commands::eval_model::eval_model(&model, env.as_deref(), data.as_deref(), &choices, &out, &common)
        }
        Command::ImportT6 { weights, config, out, common } => {
            commands::import_t6::import_t6(&weights, &config, &out, &common)
        }
        Command::Logits { model, tokens, choices, out, common } => {
            commands::logits::logits(&model, &tokens, &choices, &out, &common)
        }
        Command::Generate { model, policy, prompt, tokens, max_new_tokens, out, common } => {
            commands::generate::generate(
                &model,
                policy.as_deref(),
                prompt.as_deref(),
                tokens.as_deref(),
                max_new_tokens,
                out.as_deref(),
                &common,
            )
            .map(|_| ())
        }
        Command::Eval {
            models,
            env,
            policies,
            baselines,
            sequences,
            fractions,
            fit_sequences,
            fit_rounds,
            fit_cache,
            rule_tables,
            workers,
            out,
            common,
        } => {
            let sizes = commands::eval::Sizes { sequences, fit_sequences, fit_rounds, fit_cache };
            commands::eval::eval(
                models,
                env,
                policies,
                &baselines,
                sizes,
                &rule_tables,
                &fractions,
                workers,
                &out,
                &common,
            )
            .map(|_| ())
        }
        Command::FitRule { model, env, family, fraction, fit_cache, workers, out, common } => {
            commands::eval::fit_rule(&model, &env, &family, fraction, fit_cache, workers, &out, &common)
        }
        Command::Calibrate { model, env, policy, target, sequences, seed, out, common } => {
            commands::calibrate::calibrate(&model, &env, &policy, target, sequences, seed, &out, &common)
        }
        Command::Analyze { model, policy, env, compare, sequences, lengths, no_ablation, out, common } => {
            commands::analyze::parse_lengths(&lengths).and_then(|lengths| {
                let a =
                    ahr_eval::analysis::AnalyzeArgs { model, policy, compare, env, sequences, lengths, no_ablation };
                commands::analyze::analyze(&a, &out, &common).map(|_| {
                    print!("{}", std::fs::read_to_string(out.join("report.md")).unwrap_or_default());
                    println!("report: {}", out.join("report.md").display());
                })
            })
        }
        Command::TrainPolicy { args, common } => commands::train_policy::train_policy(&args, &common, &comm),
        Command::Cartpole { config, seed, workers, out, common } => {
            commands::train_policy::cartpole(&config, seed, workers, out.as_deref(), &common).map(|_| ())
        }
        Command::Bench(BenchCommand::Rollout { model, env, workers, num_envs, iterations, out, common }) => {
            commands::bench::bench_rollout(&model, &env, &workers, num_envs, iterations, out.as_deref(), &common)
        }
        Command::Bench(BenchCommand::Decode { model, policy, env, ctx, batch, reps, cold, out, common }) => {
            commands::bench::bench_decode(
                &model,
                policy.as_deref(),
                env.as_deref(),
                &ctx,
                &batch,
                reps,
                cold,
                out.as_deref(),
                &common,
            )
            .map(|_| ())
        }
        Command::Bench(BenchCommand::Train {
            model_configs,
            env,
            devices,
            pytorch,
            pytorch_device,
            steps,
            head,
            out,
            common,
        }) => {
            let reference = pytorch.map(|python| commands::bench::PyTorchReference { python, device: pytorch_device });
            commands::bench::bench_train(
                &model_configs,
                &devices,
                reference.as_ref(),
                head,
                &env,
                steps,
                out.as_deref(),
                &common,
            )
        }
    };
    if let Err(e) = result {
        if comm.is_distributed() {
            // The other ranks may be waiting in a collective: end them with this one.
            eprintln!("error (rank {} of {}): {e:#}", comm.rank(), comm.size());
            comm.abort(1);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
