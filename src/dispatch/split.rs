//! Splitting a multi-key command into one command per slot (Redis's `multi_shard` tip: split
//! per slot even when one node owns several of them, so each part stays valid on its own
//! during a slot migration).

use std::collections::HashMap;

use bytes::Bytes;

use crate::cluster::Slot;

/// Up to this many slots, groups are found by scanning instead of through the hash map.
const LINEAR_GROUPS: usize = 16;
use crate::resp::Command;

/// The keys of one slot.
#[derive(Debug, PartialEq, Eq)]
pub struct SlotPart {
    pub slot: Slot,
    /// Where each of this part's keys stood among all the command's keys (for MGET's merge).
    pub positions: Vec<usize>,
    /// The sub-command: the original name with this slot's keys (and their values).
    pub payload: Bytes,
}

/// Groups the keys of `cmd` (arguments 1.., `step` arguments per key: 1 for MGET/DEL, 2 for
/// MSET) by slot, in the order slots first appear. One group means no split is needed.
pub fn split_by_slot(cmd: &Command, step: usize) -> Vec<SlotPart> {
    let step = step.max(1);
    // Slot → (argument indices of its keys, positions of those keys among all keys).
    let mut groups: Vec<(Slot, Vec<usize>, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<Slot, usize> = HashMap::new();
    let mut position = 0;
    let mut i = 1;
    while i < cmd.argc() {
        let slot = Slot::of(cmd.arg(i).unwrap_or_default());
        // A short scan beats hashing for the few slots of a typical MGET.
        let found = if groups.len() <= LINEAR_GROUPS {
            groups.iter().position(|g| g.0 == slot)
        } else {
            group_of.get(&slot).copied()
        };
        let g = match found {
            Some(g) => g,
            None => {
                groups.push((slot, Vec::new(), Vec::new()));
                if groups.len() > LINEAR_GROUPS {
                    if group_of.is_empty() {
                        group_of.extend(groups.iter().enumerate().map(|(i, g)| (g.0, i)));
                    } else {
                        group_of.insert(slot, groups.len() - 1);
                    }
                }
                groups.len() - 1
            }
        };
        if let Some(group) = groups.get_mut(g) {
            group.1.push(i);
            group.2.push(position);
        }
        position += 1;
        i += step;
    }
    if groups.len() == 1 {
        return groups
            .into_iter()
            .map(|(slot, _, positions)| SlotPart {
                slot,
                positions,
                payload: cmd.raw().clone(),
            })
            .collect();
    }
    let name = cmd.name();
    groups
        .into_iter()
        .map(|(slot, arg_indices, positions)| {
            let mut args: Vec<&[u8]> = Vec::with_capacity(1 + arg_indices.len() * step);
            args.push(name);
            for a in arg_indices {
                for j in a..a + step {
                    args.push(cmd.arg(j).unwrap_or_default());
                }
            }
            SlotPart {
                slot,
                positions,
                payload: Command::from_args(&args).into_raw(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mget_groups_keys_by_slot_in_first_seen_order() {
        let cmd = Command::from_args(&["MGET", "{a}1", "{b}1", "{a}2", "{c}1", "{b}2"]);
        let parts = split_by_slot(&cmd, 1);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].slot, Slot::of(b"a"));
        assert_eq!(parts[0].positions, vec![0, 2]);
        assert_eq!(
            parts[0].payload,
            Command::from_args(&["MGET", "{a}1", "{a}2"]).into_raw()
        );
        assert_eq!(parts[1].positions, vec![1, 4]);
        assert_eq!(parts[2].positions, vec![3]);
    }

    #[test]
    fn mset_keeps_values_with_their_keys() {
        let cmd = Command::from_args(&["MSET", "{a}1", "x", "{b}1", "y", "{a}2", "z"]);
        let parts = split_by_slot(&cmd, 2);
        assert_eq!(
            parts[0].payload,
            Command::from_args(&["MSET", "{a}1", "x", "{a}2", "z"]).into_raw()
        );
        assert_eq!(
            parts[1].payload,
            Command::from_args(&["MSET", "{b}1", "y"]).into_raw()
        );
    }

    #[test]
    fn one_slot_forwards_the_original_bytes() {
        let cmd = Command::from_args(&["DEL", "{t}1", "{t}2"]);
        let parts = split_by_slot(&cmd, 1);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].payload, cmd.raw().clone());
    }
}
