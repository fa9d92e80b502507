//! Micro-benchmark of the host decode kernel alone (`host::attend`): ns per cached token for
//! dense and rank-ρ groups of the `mqar` preset's shape (3 heads × 16; HEADS and HEAD_DIM for
//! another; Q_RANK=m for a TPA query of rank m, contracted in FlashTPA's order). `cargo run --release --example attend_micro -- [TOKENS] [REPS] [ONLY]`.
use ahr_tpa::host::{HeadDims, HostGroup, HostKind, StepQuery, Tiles, attend};
use std::time::Instant;

fn main() {
    // SPLIT=1: the cache split across the cores, called as the decode loops call it (on a worker
    // of the decode pool); OUTSIDE=1 as well: called from the main thread, each call handing its
    // pieces to the pool (what every decode step did before `on_workers`).
    match std::env::var("OUTSIDE").is_ok() {
        true => run(),
        false => ahr_tpa::host::on_workers(run),
    }
}

fn run() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(16384);
    let reps: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let (heads, head_dim) = (var("HEADS", 3), var("HEAD_DIM", 16));
    let dims = HeadDims { heads, kv_heads: heads, head_dim };
    let mut seed = 1u32;
    let mut rnd = || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let q: Vec<f32> = (0..heads * head_dim).map(|_| rnd()).collect();
    let k: Vec<f32> = (0..heads * head_dim).map(|_| rnd()).collect();
    let v: Vec<f32> = (0..heads * head_dim).map(|_| rnd()).collect();
    // A factored query: B_Q's rows (m × d_h) contracted with each cached B_K row, mixed by A_Q.
    let q_rank = var("Q_RANK", 0);
    let rows: Vec<f32> = (0..q_rank * head_dim).map(|_| rnd()).collect();
    let mix: Vec<f32> = (0..heads * q_rank).map(|_| rnd()).collect();
    let only: Option<usize> = std::env::args().nth(3).and_then(|s| s.parse().ok());
    let kinds = [HostKind::Dense, HostKind::Factors { rank: 1 }, HostKind::Factors { rank: 2 }];
    for (i, kind) in kinds.into_iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let mut tiles = Tiles::new(dims.width(kind));
        for _ in 0..n {
            let tok: Vec<f32> = (0..dims.width(kind)).map(|_| rnd()).collect();
            tiles.push(&tok);
        }
        let g = HostGroup { kind, tiles };
        let groups = [&g];
        let (mut out, mut lse) = (vec![0f32; heads * head_dim], vec![0f32; heads]);
        let query = StepQuery {
            rows: if q_rank > 0 { &rows } else { &q },
            head_mix: (q_rank > 0).then_some(&mix[..]),
            query: &q,
            key: &k,
            value: &v,
        };
        let mut times = Vec::new();
        // With FLUSH, 64 MiB (FLUSH=n: n MiB, more than the L3 where it is larger) are read
        // between steps, so the cache streams from memory (as in `ahr bench decode`, where every
        // cache kind is timed in turn).
        let flush = std::env::var("FLUSH").ok().map(|v| vec![1f32; v.parse::<usize>().unwrap_or(0).max(64) << 18]);
        for _ in 0..reps {
            if let Some(f) = &flush {
                std::hint::black_box(f.iter().sum::<f32>());
            }
            let t = Instant::now();
            std::hint::black_box(attend(dims, &groups, query, &mut out, &mut lse, std::env::var("SPLIT").is_ok()));
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let med = times[reps / 2];
        let bytes = g.tiles.bytes() as f64;
        println!(
            "{kind:?}: {:.3} ms, {:.2} ns/token, {:.1} GB/s, out[0] {}",
            med * 1e3,
            med * 1e9 / n as f64,
            bytes / med / 1e9,
            out[0]
        );
    }
}
