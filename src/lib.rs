//! slotproxy: a cluster-aware Redis proxy.
//!
//! Clients speak plain RESP to the proxy as if it were one Redis server; the proxy hashes each
//! command's keys to a slot, forwards it over multiplexed backend connections to the shard that
//! owns the slot, follows redirects, and returns replies in the client's order.

pub mod command;
pub mod resp;
