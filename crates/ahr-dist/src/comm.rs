//! The communicator: which process this is, how many there are, and the few collectives the
//! trainers need (sum, broadcast, agreement, abort). One process without the `mpi` feature or
//! outside a launcher; `MPI_COMM_WORLD` under `mpirun` / `srun` with it.

use std::fmt;

/// Errors of starting or using the process group.
#[derive(Debug)]
pub enum DistError {
    /// Launched as several processes by a binary that cannot talk between them.
    NoMpi(usize),
    /// MPI refused to start or gave less thread support than the trainers need.
    Init(String),
}

impl fmt::Display for DistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistError::NoMpi(n) => write!(
                f,
                "launched as {n} processes (mpirun/srun), but this binary was built without the `mpi` feature: \
                 rebuild with `cargo build --release -p ahr-cli --features mpi` (README: \"Many machines\")"
            ),
            DistError::Init(m) => write!(f, "MPI: {m}"),
        }
    }
}

impl std::error::Error for DistError {}

/// Processes launched together by `mpirun`, `srun` or a PMI-compatible launcher, as their
/// environment tells (0 when none did).
pub fn launched_size() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// A handle on the process group: its rank and size, and collectives over it. Cheap to copy;
/// only the thread that started the group (the learner) may call collectives ("funneled").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comm {
    rank: usize,
    size: usize,
}

impl Default for Comm {
    fn default() -> Self {
        Self::single()
    }
}

/// The started process group; dropping it ends MPI (`MPI_Finalize`). Keep it alive for the whole
/// command.
pub struct Launch {
    comm: Comm,
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

impl Launch {
    /// Start the process group: MPI when a launcher started this process and the `mpi` feature is
    /// built in, one process otherwise. Fails when launched as several processes without MPI
    /// (they would each run the whole job into the same files).
    pub fn init() -> Result<Self, DistError> {
        let launched = launched_size();
        #[cfg(feature = "mpi")]
        if launched > 0 {
            use mpi::environment::Threading;
            use mpi::topology::Communicator;
            let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
                .ok_or_else(|| DistError::Init("MPI was already initialised in this process".into()))?;
            if threading < Threading::Funneled {
                return Err(DistError::Init(format!(
                    "the MPI library offers {threading:?} threading; funneled is needed"
                )));
            }
            let world = universe.world();
            let comm = Comm { rank: world.rank() as usize, size: world.size() as usize };
            return Ok(Self { comm, _universe: Some(universe) });
        }
        if launched > 1 {
            return Err(DistError::NoMpi(launched));
        }
        Ok(Self {
            comm: Comm::single(),
            #[cfg(feature = "mpi")]
            _universe: None,
        })
    }

    /// The communicator of the group.
    pub fn comm(&self) -> Comm {
        self.comm
    }
}

impl Comm {
    /// One process: every collective is the identity.
    pub fn single() -> Self {
        Self { rank: 0, size: 1 }
    }

    /// This process' rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Processes in the group.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the one that reads checkpoints, writes files and logs.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether there is more than one process.
    pub fn is_distributed(&self) -> bool {
        self.size > 1
    }

    /// The rows `[start, end)` of `n` that this rank owns when `n` rows are split into `size`
    /// contiguous shards as evenly as possible (the first `n mod size` shards one row longer).
    pub fn shard(&self, n: usize) -> std::ops::Range<usize> {
        shard(n, self.rank, self.size)
    }

    /// Element-wise sum over all ranks, in place; every rank gets the same result.
    pub fn sum_f32(&self, buf: &mut [f32]) {
        if self.is_distributed() {
            backend::sum_f32(buf);
        }
    }

    /// Element-wise sum over all ranks, in place (f64).
    pub fn sum_f64(&self, buf: &mut [f64]) {
        if self.is_distributed() {
            backend::sum_f64(buf);
        }
    }

    /// Sum of one value over all ranks.
    pub fn sum(&self, value: f64) -> f64 {
        let mut v = [value];
        self.sum_f64(&mut v);
        v[0]
    }

    /// Rank 0's values into `buf` on every rank (same length everywhere).
    pub fn broadcast_f32(&self, buf: &mut [f32]) {
        if self.is_distributed() {
            backend::broadcast_f32(buf);
        }
    }

    /// Rank 0's bytes on every rank (the other ranks' `bytes` are replaced; any length).
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        if self.is_distributed() {
            backend::broadcast_bytes(bytes);
        }
    }

    /// Whether every rank holds rank 0's `value` (all ranks get the same answer).
    pub fn agree(&self, value: u64) -> bool {
        let mut bytes = value.to_le_bytes().to_vec();
        self.broadcast_bytes(&mut bytes);
        let differs = if bytes == value.to_le_bytes() { 0.0 } else { 1.0 };
        self.sum(differs) == 0.0
    }

    /// End the whole job with `code` (`MPI_Abort`): the way out of an error on one rank, which would
    /// otherwise leave its peers waiting in a collective. One process simply exits.
    pub fn abort(&self, code: i32) -> ! {
        if self.is_distributed() {
            backend::abort(code);
        }
        std::process::exit(code)
    }

    /// Make a panic on this rank (any thread) end the whole job instead of hanging its peers; the
    /// panic message is printed first. Nothing changes for one process.
    pub fn abort_on_panic(&self) {
        if !self.is_distributed() {
            return;
        }
        let comm = *self;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!("rank {} of {}: panicked; aborting the job", comm.rank, comm.size);
            comm.abort(101);
        }));
    }
}

/// The collectives of a group of more than one process: MPI, or nothing without the feature
/// (such a group cannot be started then; see [`Launch::init`]).
#[cfg(feature = "mpi")]
mod backend {
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::traits::Root;

    fn world() -> SimpleCommunicator {
        SimpleCommunicator::world()
    }

    pub fn sum_f32(buf: &mut [f32]) {
        let send = buf.to_vec();
        world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    pub fn sum_f64(buf: &mut [f64]) {
        let send = buf.to_vec();
        world().all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    pub fn broadcast_f32(buf: &mut [f32]) {
        world().process_at_rank(0).broadcast_into(buf);
    }

    pub fn broadcast_bytes(bytes: &mut Vec<u8>) {
        let world = world();
        let root = world.process_at_rank(0);
        let mut len = [bytes.len() as u64];
        root.broadcast_into(&mut len[..]);
        bytes.resize(len[0] as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    pub fn abort(code: i32) -> ! {
        world().abort(code)
    }
}

#[cfg(not(feature = "mpi"))]
mod backend {
    const NO_GROUP: &str = "a group of more than one process needs the `mpi` feature";

    pub fn sum_f32(_: &mut [f32]) {
        unreachable!("{NO_GROUP}")
    }

    pub fn sum_f64(_: &mut [f64]) {
        unreachable!("{NO_GROUP}")
    }

    pub fn broadcast_f32(_: &mut [f32]) {
        unreachable!("{NO_GROUP}")
    }

    pub fn broadcast_bytes(_: &mut Vec<u8>) {
        unreachable!("{NO_GROUP}")
    }

    pub fn abort(_: i32) -> ! {
        unreachable!("{NO_GROUP}")
    }
}

/// The rows `[start, end)` rank `rank` of `size` owns of `n` (see [`Comm::shard`]).
pub fn shard(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: 10 rows over 3 ranks are 4 + 3 + 3, contiguous and covering.
    #[test]
    fn shards_cover_the_rows_evenly() {
        assert_eq!(shard(10, 0, 3), 0..4);
        assert_eq!(shard(10, 1, 3), 4..7);
        assert_eq!(shard(10, 2, 3), 7..10);
        assert_eq!(shard(4, 1, 2), 2..4);
        assert_eq!(shard(5, 0, 1), 0..5);
        for (n, size) in [(7, 4), (3, 3), (100, 7)] {
            let total: usize = (0..size).map(|r| shard(n, r, size).len()).sum();
            assert_eq!(total, n);
        }
    }

    /// One process: every collective leaves the data alone.
    #[test]
    fn a_single_process_is_the_identity() {
        let c = Comm::single();
        assert_eq!((c.rank(), c.size(), c.is_root(), c.is_distributed()), (0, 1, true, false));
        let mut v = [1.5f32, -2.0];
        c.sum_f32(&mut v);
        c.broadcast_f32(&mut v);
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(c.sum(3.25), 3.25);
        let mut b = vec![1u8, 2, 3];
        c.broadcast_bytes(&mut b);
        assert_eq!(b, [1, 2, 3]);
        assert!(c.agree(42));
    }
}
