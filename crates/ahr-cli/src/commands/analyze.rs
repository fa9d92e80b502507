//! `ahr analyze`: runs `ahr_eval::analysis` and writes `analysis.json`, `report.md` (findings
//! stated with their numbers, then the tables) and the PNG bar charts.

use std::path::Path;

use ahr_eval::analysis::{Analysis, AnalyzeArgs, Bucket, Outcome};
use ahr_eval::eviction::{ClassKeep, EvictionAnalysis};
use anyhow::{Result, bail};

use crate::args::Common;
use crate::device::device;

/// `--lengths`: sequence-length multiples ≥ 2, or `none`.
pub fn parse_lengths(items: &[String]) -> Result<Vec<usize>> {
    if items.iter().any(|s| s.trim() == "none") {
        return Ok(Vec::new());
    }
    items
        .iter()
        .map(|s| match s.trim().parse::<usize>() {
            Ok(m) if m >= 2 => Ok(m),
            _ => bail!("--lengths: `{s}` is not a whole multiple ≥ 2 of the env's sequence length (or `none`)"),
        })
        .collect()
}

/// Run `ahr analyze` and write its files into `out`: `analysis.json` and `report.md`, with the
/// bar charts for a per-token policy; a learned-eviction policy gets its own report
/// ([`ahr_eval::eviction`]).
pub fn analyze(a: &AnalyzeArgs, out: &Path, common: &Common) -> Result<()> {
    let dev = device(&common.device)?;
    let create = || std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()));
    if ahr_policy::export::load_manifest(&a.policy)?.evict.is_some() {
        let analysis = ahr_eval::eviction::analyze_eviction(a, &dev)?;
        create()?;
        super::write_json(&out.join("analysis.json"), &analysis)?;
        ahr_tpa::checkpoint::write_atomic(&out.join("report.md"), eviction_report(&analysis, a).as_bytes())?;
        return Ok(());
    }
    let analysis = ahr_eval::analysis::analyze(a, &dev)?;
    create()?;
    super::write_json(&out.join("analysis.json"), &analysis)?;
    write_plots(out, &analysis)?;
    ahr_tpa::checkpoint::write_atomic(&out.join("report.md"), report(&analysis, a).as_bytes())?;
    Ok(())
}

/// `report.md` for a learned evicter: findings with their numbers, then the tables.
fn eviction_report(e: &EvictionAnalysis, args: &AnalyzeArgs) -> String {
    let policy = &e.outcomes[0];
    let mut s = format!(
        "# What the learned evicter does\n\nModel `{}`, policy `{}`, env `{}`; {} held-out sequences of {} tokens; \
         metric: {}.\n\nEvery token is written `{}`; each layer holds at most {} tokens{} ({} of the exact choice's KV \
         bytes, time-averaged); after each query the policy picks which leaves{}. It starts at `{}` \
         (the rules below run with their own caches at the same budget{}).\n\n\
         ## Findings\n\n",
        args.model.display(),
        args.policy.display(),
        args.env.display(),
        e.sequences,
        e.seq_len,
        e.metric,
        e.store,
        if e.tilt == 0 {
            e.budget.to_string()
        } else {
            format!("{} (tilted by {:+} from the last layer to the first)", e.budget, e.tilt)
        },
        e.tier2.as_ref().map_or(String::new(), |t| format!(" in its first tier and, in its second, the last {t}")),
        pct(policy.mem_frac),
        if e.tier2.is_some() { " the first tier (first in, first out from the second)" } else { "" },
        e.start,
        if e.tier2.is_some() {
            ": the start rule, with the same second tier, holds the same memory at every step; TOVA has no second tier"
        } else {
            ": the same memory at every step"
        },
    );
    for (rule, p) in &e.margins {
        let verdict = if p.low > 0.0 {
            "the policy is better"
        } else if p.high < 0.0 {
            "the rule is better"
        } else {
            "level (the interval holds zero)"
        };
        s.push_str(&format!(
            "- Against `{rule}`: margin {p} (paired, 95 %; positive favours the policy): {verdict}; \
             {} sequences favour the policy, {} the rule.\n",
            p.sequences_better, p.sequences_worse
        ));
    }
    for l in &e.layers {
        s.push_str(&format!(
            "- Layer {}: {} of the tokens leave at another query than under `{}`; the policy keeps {} to the end \
             that the rule evicts, the rule {} that the policy evicts.\n",
            l.layer,
            pct(l.differs),
            e.start,
            pct(l.kept_by_policy_only),
            pct(l.kept_by_rule_only)
        ));
    }
    let shift = |c: &ClassKeep| c.policy_held - c.rule_held;
    if let (Some(up), Some(down)) = (
        e.classes.iter().max_by(|x, y| shift(x).total_cmp(&shift(y))),
        e.classes.iter().min_by(|x, y| shift(x).total_cmp(&shift(y))),
    ) {
        s.push_str(&format!(
            "- By class: the policy holds {} tokens {:+.1} queries longer on average than the rule ({:.1} against {:.1}), \
             {} tokens {:+.1} ({:.1} against {:.1}).\n",
            up.class,
            shift(up),
            up.policy_held,
            up.rule_held,
            down.class,
            shift(down),
            down.policy_held,
            down.rule_held
        ));
    }
    s.push_str(&format!(
        "\n## The metric at the same memory\n\n| | {} | KV bytes (of exact) | bytes/token |\n|---|---:|---:|---:|\n",
        e.metric
    ));
    for o in &e.outcomes {
        s.push_str(&format!("| {} | {:.4} | {} | {:.1} |\n", o.name, o.metric, pct(o.mem_frac), o.kv_bytes_per_token));
    }
    s.push_str(&format!(
        "\n## Evictions against `{}`, per layer\n\n| layer | tokens | another query | kept by the policy only | \
         kept by the rule only |\n|---|---:|---:|---:|---:|\n",
        e.start
    ));
    for l in &e.layers {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            l.layer,
            l.tokens,
            pct(l.differs),
            pct(l.kept_by_policy_only),
            pct(l.kept_by_rule_only)
        ));
    }
    s.push_str(
        "\n## How long a token is held, per class (queries; tokens × layers)\n\n| class | n | held, policy | held, rule | \
         kept to the end, policy | kept to the end, rule | policy longer | policy shorter |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in &e.classes {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
            c.class,
            c.count,
            c.policy_held,
            c.rule_held,
            pct(c.policy_kept),
            pct(c.rule_kept),
            pct(c.longer),
            pct(c.shorter)
        ));
    }
    s
}

fn write_plots(out: &Path, a: &Analysis) -> Result<()> {
    use crate::plot::bars;
    let layers: Vec<String> = (0..a.options_by_layer.len()).map(|l| format!("layer {l}")).collect();
    bars(
        &out.join("options_by_layer.png"),
        "Options chosen per layer",
        "fraction of tokens",
        &layers,
        &a.menu,
        &a.options_by_layer,
    )?;
    let single = |name: &str, title: &str, buckets: &[Bucket]| -> Result<()> {
        if buckets.is_empty() {
            return Ok(());
        }
        let labels: Vec<String> = buckets.iter().map(|b| b.label.clone()).collect();
        let values: Vec<Vec<f64>> = buckets.iter().map(|b| vec![b.kept]).collect();
        bars(&out.join(name), title, "bytes kept / exact", &labels, &["policy".into()], &values)
    };
    single("bytes_by_position.png", "Bytes kept by position", &a.by_position)?;
    single("bytes_by_entropy.png", "Bytes kept by predictive-entropy quintile", &a.by_entropy)?;
    let by_token_title = if a.by_token.iter().any(|b| b.label == "key") {
        "Bytes kept by token role"
    } else {
        "Bytes kept by token frequency"
    };
    single("bytes_by_token.png", by_token_title, &a.by_token)?;
    if a.by_difficulty.len() > 1 {
        single("bytes_by_difficulty.png", "Bytes kept by number of key-value pairs", &a.by_difficulty)?;
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn table(rows: &[Bucket], what: &str) -> String {
    let with_metric = rows.iter().any(|b| b.metric.is_some());
    // Per-layer columns where every row has them and there is more than one layer.
    let layers = rows.first().map_or(0, |b| b.kept_by_layer.len());
    let layers = if layers > 1 && rows.iter().all(|b| b.kept_by_layer.len() == layers) { layers } else { 0 };
    let mut s = format!(
        "| {what} | n | bytes kept |{}{}\n|---|---:|---:|{}{}\n",
        (0..layers).map(|l| format!(" layer {l} |")).collect::<String>(),
        if with_metric { " metric |" } else { "" },
        "---:|".repeat(layers),
        if with_metric { "---:|" } else { "" }
    );
    for b in rows {
        s.push_str(&format!("| {} | {} | {} |", b.label, b.count, pct(b.kept)));
        for &k in b.kept_by_layer.iter().take(layers) {
            s.push_str(&format!(" {} |", pct(k)));
        }
        if let Some(m) = b.metric {
            s.push_str(&format!(" {m:.4} |"));
        }
        s.push('\n');
    }
    s
}

/// The buckets that keep the most and the fewest bytes.
fn extremes(buckets: &[Bucket]) -> Option<(&Bucket, &Bucket)> {
    let most = buckets.iter().max_by(|x, y| x.kept.total_cmp(&y.kept))?;
    let least = buckets.iter().min_by(|x, y| x.kept.total_cmp(&y.kept))?;
    Some((most, least))
}

/// `report.md`: each finding stated with its number, then the tables.
fn report(a: &Analysis, args: &AnalyzeArgs) -> String {
    let better = |x: f64, y: f64| if a.higher_is_better { x > y } else { x < y };
    let mut s = format!(
        "# What the policy does\n\nModel `{}`, policy `{}`, env `{}`; {} held-out sequences of {} tokens; \
         metric: {}.\n\nThe policy: {} {:.4} at {} of the exact choice's KV bytes ({:.1} bytes/token).\n\n## Findings\n\n",
        args.model.display(),
        args.policy.display(),
        args.env.display(),
        a.sequences,
        a.seq_len,
        a.metric,
        a.metric,
        a.policy.metric,
        pct(a.policy.mem_frac),
        a.policy.kv_bytes_per_token,
    );
    if let Some(rate) = a.policy.review_change_rate {
        s.push_str(&format!(
            "- Reviews: {} of the second decisions changed the write-time option (demoted the token, dropped it, \
             or kept it to a later age and dropped it there; at a chain's later ages: kept it on, to the next age \
             or to the end); the options below are what tokens ended as.\n",
            pct(rate)
        ));
    }
    if !a.values_at_query.is_empty() {
        let per: Vec<String> = a
            .values_at_query
            .iter()
            .zip(&a.values_dropped_by_review)
            .enumerate()
            .map(|(l, (v, r))| format!("layer {l} {} (a review dropped it: {})", pct(*v), pct(*r)))
            .collect();
        s.push_str(&format!(
            "- Values at their query: of the labelled queries, the share whose value (the latest assignment of the \
             queried key) is still held when the query comes: {}.\n",
            per.join(", ")
        ));
    }
    if !a.review_drop_triggers.is_empty() {
        let per: Vec<String> = a
            .review_drop_triggers
            .iter()
            .map(|(label, shares)| {
                let layers: Vec<String> = shares.iter().map(|x| pct(*x)).collect();
                format!("{label} {}", layers.join(" / "))
            })
            .collect();
        s.push_str(&format!(
            "- Those review drops by the row whose spike brought the value up (share of labelled queries, per layer): {}.\n",
            per.join(", ")
        ));
    }
    // Layers.
    for (l, row) in a.options_by_layer.iter().enumerate() {
        let parts: Vec<String> =
            row.iter().zip(&a.menu).filter(|(f, _)| **f > 0.0).map(|(f, m)| format!("{m} {}", pct(*f))).collect();
        s.push_str(&format!("- Layer {l}: {}.\n", parts.join(", ")));
    }
    // Tokens.
    if let Some((hi, lo)) = extremes(&a.by_token) {
        s.push_str(&format!(
            "- Tokens: `{}` keep the most ({} of exact bytes), `{}` the least ({}).\n",
            hi.label,
            pct(hi.kept),
            lo.label,
            pct(lo.kept)
        ));
    }
    // Position and entropy.
    if let Some((hi, lo)) = extremes(&a.by_position) {
        s.push_str(&format!(
            "- Position: positions {} keep {}, positions {} keep {}.\n",
            hi.label,
            pct(hi.kept),
            lo.label,
            pct(lo.kept)
        ));
    }
    if let (Some(first), Some(last)) = (a.by_entropy.first(), a.by_entropy.last()) {
        s.push_str(&format!(
            "- Entropy: the lowest predictive-entropy quintile keeps {}, the highest {}.\n",
            pct(first.kept),
            pct(last.kept)
        ));
    }
    let corr: Vec<String> = a.correlations.iter().map(|(n, r)| format!("{n} ρ = {r:+.3}")).collect();
    s.push_str(&format!("- Spearman correlation of bytes kept with {}.\n", corr.join(", ")));
    let strongest = a.correlations.iter().max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()));
    if let Some((n, r)) = strongest {
        s.push_str(&format!(
            "- The strongest single predictor of the bytes a token keeps is {n} (|ρ| = {:.3}).\n",
            r.abs()
        ));
    }
    if a.by_difficulty.len() > 1 {
        let (first, last) = (&a.by_difficulty[0], &a.by_difficulty[a.by_difficulty.len() - 1]);
        s.push_str(&format!(
            "- Difficulty: sequences with {} keep {} of exact bytes, with {} {} — the policy spends {} on harder sequences.\n",
            first.label,
            pct(first.kept),
            last.label,
            pct(last.kept),
            if last.kept > first.kept { "more" } else { "not more" }
        ));
    }
    // Uniform.
    if let Some(exact) = a.uniform.iter().max_by(|x, y| x.mem_frac.total_cmp(&y.mem_frac)) {
        let tol = 0.02;
        let good: Vec<&Outcome> = a
            .uniform
            .iter()
            .filter(
                |u| if a.higher_is_better { u.metric >= exact.metric - tol } else { u.metric <= exact.metric + tol },
            )
            .collect();
        match good.iter().filter(|u| u.mem_frac < exact.mem_frac).min_by(|x, y| x.mem_frac.total_cmp(&y.mem_frac)) {
            Some(cheapest) => s.push_str(&format!(
                "- Uniform: `{}` is within {tol} of `{}` ({:.4} vs {:.4}) at {} of its bytes — there a uniform rank \
                 is good enough; the policy reaches {:.4} at {}.\n",
                cheapest.name,
                exact.name,
                cheapest.metric,
                exact.metric,
                pct(cheapest.mem_frac),
                a.policy.metric,
                pct(a.policy.mem_frac)
            )),
            None => {
                let closest = a.uniform.iter().filter(|u| u.mem_frac < exact.mem_frac).max_by(|x, y| {
                    if a.higher_is_better { x.metric.total_cmp(&y.metric) } else { y.metric.total_cmp(&x.metric) }
                });
                if let Some(c) = closest {
                    s.push_str(&format!(
                        "- Uniform: no cheaper uniform choice is within {tol} of `{}` ({:.4}); the closest is `{}` with {:.4} at {}.\n",
                        exact.name,
                        exact.metric,
                        c.name,
                        c.metric,
                        pct(c.mem_frac)
                    ));
                }
            }
        }
        let beaten: Vec<&Outcome> = a
            .uniform
            .iter()
            .filter(|u| u.mem_frac <= a.policy.mem_frac && !better(a.policy.metric, u.metric))
            .collect();
        if beaten.is_empty() {
            s.push_str("- The policy beats every uniform choice that uses at most its bytes.\n");
        } else {
            let names: Vec<&str> = beaten.iter().map(|u| u.name.as_str()).collect();
            s.push_str(&format!("- Uniform choices at most its bytes that match or beat it: {}.\n", names.join(", ")));
        }
    }
    // Ablation.
    if let Some(top) = a.ablations.iter().max_by(|x, y| x.changed_decisions.total_cmp(&y.changed_decisions)) {
        s.push_str(&format!(
            "- Ablation: replacing `{}` by its mean changes the most decisions ({}), {} {:+.4}, memory {:+.3}.\n",
            top.feature,
            pct(top.changed_decisions),
            a.metric,
            top.d_metric,
            top.d_mem
        ));
        let idle: Vec<&str> =
            a.ablations.iter().filter(|x| x.changed_decisions < 0.005).map(|x| x.feature.as_str()).collect();
        if !idle.is_empty() {
            s.push_str(&format!("- Features the policy ignores (< 0.5% of decisions change): {}.\n", idle.join(", ")));
        }
    }
    if let Some(t) = &a.as_table {
        s.push_str(&format!(
            "- As a per-token table (each token at its most common option per layer over {} {} sequences, {} of \
             decisions changed): {} {:.4} at {} (the policy replayed: {:.4} at {}); the policy against it {}.\n",
            t.read_off,
            if t.apart { "other held-out" } else { "the same" },
            pct(t.changed_decisions),
            a.metric,
            t.table.metric,
            pct(t.table.mem_frac),
            t.replay.metric,
            pct(t.replay.mem_frac),
            t.margin.as_ref().map_or("unpaired".into(), |m| format!(
                "{m} ({} / {} sequences)",
                m.sequences_better, m.sequences_worse
            ))
        ));
    }
    if let Some((t, p)) = a.as_table.as_ref().and_then(|t| t.prior.as_ref().map(|p| (t, p))) {
        s.push_str(&format!(
            "- The per-token table the policy started from (`prior_table`): {} {:.4} at {}; the policy against it {}.\n",
            a.metric,
            p.metric,
            pct(p.mem_frac),
            t.prior_margin.as_ref().map_or("unpaired".into(), |m| format!(
                "{m} ({} / {} sequences)",
                m.sequences_better, m.sequences_worse
            ))
        ));
    }
    for (name, mode, o) in &a.compared {
        s.push_str(&format!(
            "- `{name}` ({mode}): {} {:.4} at {} (the policy: {:.4} at {}).\n",
            a.metric,
            o.metric,
            pct(o.mem_frac),
            a.policy.metric,
            pct(a.policy.mem_frac)
        ));
    }
    for r in &a.lengths {
        s.push_str(&format!(
            "- Length {}× ({} tokens): the policy {:.4} at {} of exact bytes; the exact choice {:.4}.\n",
            r.multiple,
            r.seq_len,
            r.policy.metric,
            pct(r.policy.mem_frac),
            r.exact.metric
        ));
    }

    s.push_str("\n## Options per layer\n\n![options](options_by_layer.png)\n\n| layer |");
    for m in &a.menu {
        s.push_str(&format!(" {m} |"));
    }
    s.push_str(&format!("\n|---|{}\n", "---:|".repeat(a.menu.len())));
    for (l, row) in a.options_by_layer.iter().enumerate() {
        s.push_str(&format!("| {l} |"));
        for f in row {
            s.push_str(&format!(" {} |", pct(*f)));
        }
        s.push('\n');
    }
    s.push_str(&format!(
        "\nDecisions off their token's most common option (what no per-token table reproduces): {}.\n",
        a.beyond_token.iter().enumerate().map(|(l, f)| format!("layer {l} {}", pct(*f))).collect::<Vec<_>>().join(", ")
    ));
    if !a.prior_changes.is_empty() {
        s.push_str(
            "\n## Against the per-token table the policy started from\n\n\
             | layer | decisions changed | to a richer option | to a cheaper option |\n|---|---:|---:|---:|\n",
        );
        for c in &a.prior_changes {
            s.push_str(&format!("| {} | {} | {} | {} |\n", c.layer, pct(c.changed), pct(c.richer), pct(c.cheaper)));
        }
    }
    s.push_str("\n## Bytes kept by position\n\n![position](bytes_by_position.png)\n\n");
    s.push_str(&table(&a.by_position, "positions"));
    s.push_str("\n## Bytes kept by the model's predictive entropy (/ ln V)\n\n![entropy](bytes_by_entropy.png)\n\n");
    s.push_str(&table(&a.by_entropy, "quintile"));
    s.push_str("\n## Bytes kept by token\n\n![token](bytes_by_token.png)\n\n");
    s.push_str(&table(&a.by_token, "token"));
    if !a.by_difficulty.is_empty() {
        s.push_str("\n## Bytes kept and metric by difficulty (sequences)\n\n");
        if a.by_difficulty.len() > 1 {
            s.push_str("![difficulty](bytes_by_difficulty.png)\n\n");
        }
        s.push_str(&table(&a.by_difficulty, "difficulty"));
    }
    s.push_str(&format!("\n## Uniform menu choices (same sequences)\n\n| choice | {} | bytes kept | bytes/token |\n|---|---:|---:|---:|\n", a.metric));
    for u in &a.uniform {
        s.push_str(&format!("| {} | {:.4} | {} | {:.1} |\n", u.name, u.metric, pct(u.mem_frac), u.kv_bytes_per_token));
    }
    if !a.ablations.is_empty() {
        s.push_str(&format!(
            "\n## Feature ablation (feature replaced by its training mean; token id by token 0)\n\n\
             | feature | {} | Δ | bytes kept | Δ | decisions changed |\n|---|---:|---:|---:|---:|---:|\n| (none) | {:.4} | | {} | | |\n",
            a.metric,
            a.policy.metric,
            pct(a.policy.mem_frac)
        ));
        for x in &a.ablations {
            s.push_str(&format!(
                "| {} | {:.4} | {:+.4} | {} | {:+.3} | {} |\n",
                x.feature,
                x.outcome.metric,
                x.d_metric,
                pct(x.outcome.mem_frac),
                x.d_mem,
                pct(x.changed_decisions)
            ));
        }
    }
    if !a.compared.is_empty() {
        s.push_str(&format!(
            "\n## Other policies on the same data\n\n| policy | mode | {} | bytes kept |\n|---|---|---:|---:|\n| {} | per-token | {:.4} | {} |\n",
            a.metric,
            args.policy.display(),
            a.policy.metric,
            pct(a.policy.mem_frac)
        ));
        for (name, mode, o) in &a.compared {
            s.push_str(&format!("| {name} | {mode} | {:.4} | {} |\n", o.metric, pct(o.mem_frac)));
        }
    }
    if !a.lengths.is_empty() {
        s.push_str(&format!(
            "\n## Length generalisation\n\n| length | × | policy {} | policy bytes kept | exact {} |\n|---:|---:|---:|---:|---:|\n| {} | 1 | {:.4} | {} | {} |\n",
            a.metric,
            a.metric,
            a.seq_len,
            a.policy.metric,
            pct(a.policy.mem_frac),
            a.uniform.iter().max_by(|x, y| x.mem_frac.total_cmp(&y.mem_frac)).map_or("".into(), |u| format!("{:.4}", u.metric))
        ));
        for r in &a.lengths {
            s.push_str(&format!(
                "| {} | {} | {:.4} | {} | {:.4} |\n",
                r.seq_len,
                r.multiple,
                r.policy.metric,
                pct(r.policy.mem_frac),
                r.exact.metric
            ));
        }
    }
    s
}
