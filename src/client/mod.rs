//! Client connections: reading commands, keeping replies in order, writing them back in batches.

pub mod flush;
pub mod io;
pub mod replies;
pub mod session;
pub mod spares;
pub mod tls;
#[cfg(target_os = "linux")]
pub mod uring;
