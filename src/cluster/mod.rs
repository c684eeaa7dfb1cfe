//! What the proxy knows about the cluster: slots, the slot → node map, and how it is kept fresh.

pub mod node_zones;
pub mod redirect;
pub mod settings;
pub mod shards_reply;
pub mod slot;
pub mod slot_map;
pub mod topology;
pub mod watch;
pub mod zones;

pub use slot::{Slot, SLOT_COUNT};
pub use slot_map::SlotMap;
