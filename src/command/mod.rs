//! The command table: arity, flags, routing tips and key positions of every command, learned
//! from the cluster's `COMMAND` reply (with a captured Redis 7.0 reply as the fallback), plus
//! key extraction that follows Redis's own key-spec algorithm.
//!
//! This module answers "what is this command and where are its keys"; it does not hash keys
//! to slots or decide where a command goes (that is `cluster` and `dispatch`).

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod error;
mod keys;
mod table;

pub use error::CommandError;
pub use table::{
    BeginSearch, CommandFlags, CommandSpec, CommandTable, FindKeys, KeySpec, KeySpecFlags,
};

#[cfg(test)]
mod tests;
