//! Connections to cluster nodes: opening them, and multiplexing many clients' requests over a few.

pub mod addr;
pub mod connect;
pub mod dedicated;
pub mod error;
pub mod pipe;
pub mod pool;
pub mod reply_slot;
pub mod stream;
pub mod tls;

pub use addr::NodeAddr;
pub use error::BackendError;
pub use pool::Pool;
