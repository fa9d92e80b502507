//! `ahr-eval`: the fair judge of ahr (DESIGN.md §9) — the rule families a learned rank policy
//! must beat ([`baseline`], [`rules`]), the harness that runs policies and rules on the same
//! held-out sequences with one memory measure and one metric ([`harness`]), and the search for
//! each family's best setting at a policy's memory with the verdicts ([`judge`]); what a policy
//! does and why ([`analysis`]).
//!
//! It reads models and policies and writes nothing: reports, plots and files are the caller's.

pub mod analysis;
pub mod baseline;
pub mod eviction;
pub mod harness;
pub mod judge;
pub mod own_cache;
pub mod rules;
pub mod token_class;

pub use baseline::{Baseline, Family};
pub use harness::{Harness, Point, PointKind};
pub use judge::{EvalArgs, EvalOutput, PolicyVerdict, Progress, eval};
