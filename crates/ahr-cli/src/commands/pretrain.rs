//! `ahr pretrain`.

use ahr_train::pretrain::PretrainArgs;
use anyhow::Result;

use crate::args::Common;
use crate::device::device;

/// Run nested-rank pretraining (see [`crate::stages::pretrain`]).
pub fn pretrain(args: &PretrainArgs, common: &Common, comm: &ahr_dist::Comm) -> Result<()> {
    crate::stages::pretrain(args, &device(&common.device)?, comm)
}
