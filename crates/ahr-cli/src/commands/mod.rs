//! One function per subcommand.

pub mod analyze;
pub mod bench;
pub mod calibrate;
pub mod eval;
pub mod eval_model;
pub mod generate;
pub mod import_t6;
pub mod logits;
pub mod pretrain;
pub mod quickstart;
pub mod train_policy;

pub use ahr_tpa::checkpoint::write_json;
