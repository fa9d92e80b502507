//! Rank 0's files on every rank: how the other ranks resume from a checkpoint only rank 0 wrote,
//! without a shared filesystem.

use std::io;
use std::path::{Path, PathBuf};

use crate::Comm;

/// Files rank 0 read from `dir`, available on this rank: `dir` itself on rank 0, a private copy
/// elsewhere (removed when this value is dropped).
#[derive(Debug)]
pub struct SharedFiles {
    dir: PathBuf,
    copy: bool,
}

impl SharedFiles {
    /// The directory holding the files on this rank.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SharedFiles {
    fn drop(&mut self) {
        if self.copy {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn encode(dir: &Path, names: &[&str]) -> io::Result<Vec<u8>> {
    let mut out = vec![1u8];
    for name in names {
        let bytes = std::fs::read(dir.join(name))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(name).display())))?;
        out.extend((bytes.len() as u64).to_le_bytes());
        out.extend(bytes);
    }
    Ok(out)
}

/// Rank 0 reads `names` from `dir` and sends them to every rank, which writes them into a private
/// directory. All ranks return an error if rank 0 could not read a file.
pub fn share_files(comm: &Comm, dir: &Path, names: &[&str]) -> io::Result<SharedFiles> {
    if !comm.is_distributed() {
        return Ok(SharedFiles { dir: dir.to_path_buf(), copy: false });
    }
    let mut payload = Vec::new();
    let mut failure = None;
    if comm.is_root() {
        payload = encode(dir, names).unwrap_or_else(|e| {
            let msg = e.to_string();
            failure = Some(e);
            let mut p = vec![0u8];
            p.extend(msg.into_bytes());
            p
        });
    }
    comm.broadcast_bytes(&mut payload);
    if let Some(e) = failure {
        return Err(e);
    }
    if payload.first() != Some(&1) {
        let msg = String::from_utf8_lossy(payload.get(1..).unwrap_or_default()).to_string();
        return Err(io::Error::other(format!("rank 0 could not read its files: {msg}")));
    }
    if comm.is_root() {
        return Ok(SharedFiles { dir: dir.to_path_buf(), copy: false });
    }
    let copy = std::env::temp_dir().join(format!("ahr-rank{}-{}", comm.rank(), std::process::id()));
    std::fs::create_dir_all(&copy)?;
    let shared = SharedFiles { dir: copy, copy: true };
    let mut rest = &payload[1..];
    for name in names {
        let len = u64::from_le_bytes(rest[..8].try_into().expect("eight bytes")) as usize;
        std::fs::write(shared.dir.join(name), &rest[8..8 + len])?;
        rest = &rest[8 + len..];
    }
    Ok(shared)
}
