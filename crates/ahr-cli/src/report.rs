//! The judge's report files: `metrics.json`, `pareto.csv`, `pareto.md` and the Pareto plot.

use std::path::Path;

use ahr_eval::judge::FamilyBest;
use ahr_eval::{EvalOutput, Point};
use ahr_tpa::checkpoint::{write_atomic, write_json};
use anyhow::{Context, Result};

fn family_cell(p: &Point) -> String {
    p.family().map_or_else(|| format!("{:?}", p.kind).to_lowercase(), |f| f.name().to_string())
}

fn best_row(b: &FamilyBest, exact: f64) -> String {
    format!(
        "{} | {} | {:.4} | {:.1} ({:.1} %)",
        b.name,
        b.setting,
        b.metric,
        b.kv_bytes_per_token,
        100.0 * b.kv_bytes_per_token / exact
    )
}

/// The report as Markdown: every point by memory, then each policy's verdict against the best
/// setting of every family at its memory, then the fixed memory targets.
pub fn markdown(o: &EvalOutput) -> String {
    let exact = o.exact_kv_bytes_per_token;
    let mut sorted: Vec<&Point> = o.points.iter().collect();
    sorted.sort_by(|a, b| a.kv_bytes_per_token.total_cmp(&b.kv_bytes_per_token));
    let mut md = format!(
        "Memory: time-averaged KV bytes per token (exact choice: {exact:.1}); {} pooled over labelled positions.\n\n\
         | name | setting | {} | per-sequence | KV bytes/token | peak | attention FLOPs/token | Pareto |\n\
         |---|---|---:|---:|---:|---:|---:|:-:|\n",
        o.metric, o.metric
    );
    for p in sorted {
        md.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:.1} | {:.1} | {:.0} | {} |\n",
            p.name,
            p.setting,
            p.metric,
            p.metric_per_sequence,
            p.kv_bytes_per_token,
            p.peak_kv_bytes_per_token,
            p.flops_per_token,
            if p.on_front { "★" } else { "" }
        ));
    }
    for v in &o.policies {
        md.push_str(&format!(
            "\n### {}: {} {:.4} at {:.1} bytes/token ({:.1} % of exact{})\n\n\
             | family | best at ≤ its memory | setting | {} | bytes/token | policy better | margin, 95 % interval (paired) | sequences better / worse | cross-fitted margin (setting chosen on the other half) |\n\
             |---|---|---|---:|---:|:-:|---|---|---|\n",
            v.name,
            o.metric,
            v.metric,
            v.kv_bytes_per_token,
            100.0 * v.mem_frac,
            v.train_target.map_or(String::new(), |t| format!("; trained to {:.1} %", 100.0 * t)),
            o.metric
        ));
        for (b, beats) in &v.families {
            let (interval, counts) = b.paired.as_ref().map_or((String::new(), String::new()), |p| {
                (p.to_string(), format!("{} / {} of {}", p.sequences_better, p.sequences_worse, p.sequences))
            });
            let crossed = b.cross_fitted.as_ref().map_or(String::new(), |c| c.paired.to_string());
            md.push_str(&format!(
                "| {} | {} | {} | {interval} | {counts} | {crossed} |\n",
                b.family,
                best_row(b, exact),
                if *beats { "yes" } else { "**no**" }
            ));
        }
        for f in &v.no_setting_fits {
            md.push_str(&format!("| {f} | no setting within its memory | | | | | | | |\n"));
        }
        md.push_str(&format!(
            "\nBetter than the best setting of every family at its memory: **{}**; on the Pareto front: {}. \
             Cross-fitted: each family's setting chosen on one half of the held-out sequences (in order), \
             scored on the other.\n",
            if v.beats_every_family { "yes" } else { "no" },
            v.on_front
        ));
    }
    if !o.targets.is_empty() {
        md.push_str(&format!(
            "\n### Best setting of each family at fixed memory\n\n| target | family | point | setting | {} | bytes/token |\n|---|---|---|---|---:|---:|\n",
            o.metric
        ));
        for t in &o.targets {
            for b in &t.families {
                md.push_str(&format!("| {:.0} % | {} | {} |\n", 100.0 * t.fraction, b.family, best_row(b, exact)));
            }
        }
    }
    md.push_str("\nHow each family ran:\n\n");
    for n in &o.notes {
        md.push_str(&format!("- {n}\n"));
    }
    md
}

/// Write `metrics.json`, `pareto.csv`, `pareto.md`, `pareto.svg` and `pareto.png` into `out`.
pub fn write(out: &Path, o: &EvalOutput) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_json(&out.join("metrics.json"), o)?;
    let mut csv = String::from(
        "name,family,setting,metric,metric_per_sequence,kv_bytes_per_token,peak_kv_bytes_per_token,flops_per_token,on_front\n",
    );
    for p in &o.points {
        csv.push_str(&format!(
            "{},{},\"{}\",{:.6},{:.6},{:.3},{:.3},{:.1},{}\n",
            p.name,
            family_cell(p),
            p.setting,
            p.metric,
            p.metric_per_sequence,
            p.kv_bytes_per_token,
            p.peak_kv_bytes_per_token,
            p.flops_per_token,
            p.on_front
        ));
    }
    write_atomic(&out.join("pareto.csv"), csv.as_bytes())?;
    write_atomic(&out.join("pareto.md"), markdown(o).as_bytes())?;
    crate::plot::pareto(&out.join("pareto.svg"), &out.join("pareto.png"), o)?;
    Ok(())
}
