//! The command table: arity, flags, routing tips and key positions of every command, learned
//! from the cluster's `COMMAND` reply (with a captured Redis 7.0 reply as the fallback), plus
//! key extraction that follows Redis's own key-spec algorithm.
//!
//! This module answers "what is this command, where are its keys and what kind of route does it
//! take" ([`Route`], data computed once per table); it does not hash keys to slots or send
//! anything (that is `cluster` and `dispatch`).

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod block_timeout;
mod error;
mod keys;
pub mod route;
mod table;

pub use error::CommandError;
pub use route::Route;
pub use table::{
    BeginSearch, CommandFlags, CommandSpec, CommandTable, FindKeys, KeySpec, KeySpecFlags,
};

#[cfg(test)]
mod tests;
