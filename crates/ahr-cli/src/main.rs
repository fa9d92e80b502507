//! The `ahr` binary: parse arguments, dispatch, and turn errors into a message and exit code 1.

use ahr_cli::args::{BenchCommand, Cli, Command};
use ahr_cli::commands;
use ahr_train::PretrainArgs;
use clap::Parser;

fn main() {
    ahr_cli::alloc::keep_freed_tensor_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quickstart { out, sequences, workers, common } => {
            commands::quickstart::quickstart(&out, Some(sequences), workers, &common)
        }
        Command::Pretrain { model_config, env, out, steps, seed, resume, init, stop_after, common } => {
            commands::pretrain::pretrain(
                &PretrainArgs { model_config, env, out, steps, seed, resume, init, stop_after },
                &common,
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
        Command::Eval { models, env, policies, baselines, sequences, fractions, out, common } => {
            commands::eval::eval(models, env, policies, &baselines, sequences, fractions, &out, &common).map(|_| ())
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
        Command::TrainPolicy { args, common } => commands::train_policy::train_policy(&args, &common),
        Command::Cartpole { config, seed, workers, out, common } => {
            commands::train_policy::cartpole(&config, seed, workers, out.as_deref(), &common).map(|_| ())
        }
        Command::Bench(BenchCommand::Rollout { model, env, workers, num_envs, iterations, out, common }) => {
            commands::bench::bench_rollout(&model, &env, &workers, num_envs, iterations, out.as_deref(), &common)
        }
        Command::Bench(BenchCommand::Decode { model, policy, env, ctx, batch, reps, out, common }) => {
            commands::bench::bench_decode(
                &model,
                policy.as_deref(),
                env.as_deref(),
                &ctx,
                &batch,
                reps,
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
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
