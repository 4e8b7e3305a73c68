//! The SQLite engine's one setting a store spec names
//! (`sqlite:PATH?synchronous=normal`). Outside the engine's module, so the
//! spec parses it also in builds without the `sqlite` feature.

/// When the SQLite engine's commits reach the disk (SQLite's
/// `PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// `FULL`, the default: the WAL is synced at every commit, so an
    /// acknowledged claim or outcome survives power loss, as the contract
    /// requires.
    #[default]
    Full,
    /// `NORMAL`: the WAL is synced only at checkpoints. A crash of the
    /// process loses nothing, but power loss or an OS crash can lose the
    /// last acknowledged commits, and with them claims: a retry after that
    /// may execute again. Weaker than the contract; for measuring what
    /// `FULL` costs, or for data that may be lost.
    Normal,
}
