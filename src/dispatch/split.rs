//! Splitting a multi-key command into one command per slot (Redis's `multi_shard` tip: split
//! per slot even when one node owns several of them, so each part stays valid on its own
//! during a slot migration).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::cluster::Slot;
use crate::resp::{encode, Command};

/// Up to this many slots, groups are found by scanning instead of through the hash map.
const LINEAR_GROUPS: usize = 16;

/// Where a part's keys stood among all the command's keys. A typical part has one or two
/// keys, kept in place rather than in an allocation of their own.
pub type Positions = SmallVec<[usize; 4]>;

/// The keys of one slot.
#[derive(Debug, PartialEq, Eq)]
pub struct SlotPart {
    pub slot: Slot,
    /// Where each of this part's keys stood among all the command's keys (for MGET's merge).
    pub positions: Positions,
    /// The sub-command: the original name with this slot's keys (and their values).
    pub payload: Bytes,
}

/// Groups the keys of `cmd` (arguments 1.., `step` arguments per key: 1 for MGET/DEL, 2 for
/// MSET) by slot, in the order slots first appear. One group means no split is needed.
pub fn split_by_slot(cmd: &Command, step: usize) -> Vec<SlotPart> {
    let step = step.max(1);
    let keys = cmd.argc().saturating_sub(1).div_ceil(step);
    let mut groups: Vec<(Slot, Positions)> = Vec::with_capacity(keys.min(LINEAR_GROUPS));
    let mut group_of: HashMap<Slot, usize> = HashMap::new();
    for position in 0..keys {
        let slot = Slot::of(cmd.arg(1 + position * step).unwrap_or_default());
        // A short scan beats hashing for the few slots of a typical MGET.
        let found = if groups.len() <= LINEAR_GROUPS {
            groups.iter().position(|g| g.0 == slot)
        } else {
            group_of.get(&slot).copied()
        };
        let g = match found {
            Some(g) => g,
            None => {
                groups.push((slot, Positions::new()));
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
            group.1.push(position);
        }
    }
    if groups.len() == 1 {
        return groups
            .into_iter()
            .map(|(slot, positions)| SlotPart {
                slot,
                positions,
                payload: cmd.raw().clone(),
            })
            .collect();
    }
    // Every sub-command is written into one buffer and split off it: one allocation for all
    // parts instead of one each. Arguments are copied as the request encoded them.
    let mut out = BytesMut::with_capacity(cmd.raw().len() + groups.len() * 32);
    let name = cmd.arg_encoded(0).unwrap_or_default();
    groups
        .into_iter()
        .map(|(slot, positions)| {
            encode::array_header(&mut out, 1 + positions.len() * step);
            out.put_slice(name);
            for &position in &positions {
                for i in 1 + position * step..1 + (position + 1) * step {
                    match cmd.arg_encoded(i) {
                        Some(encoded) => out.put_slice(encoded),
                        // MSET's last key without a value: an empty one, as before.
                        None => encode::bulk(&mut out, b""),
                    }
                }
            }
            SlotPart {
                slot,
                positions,
                payload: out.split().freeze(),
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
        assert_eq!(parts[0].positions.as_slice(), [0, 2]);
        assert_eq!(
            parts[0].payload,
            Command::from_args(&["MGET", "{a}1", "{a}2"]).into_raw()
        );
        assert_eq!(parts[1].positions.as_slice(), [1, 4]);
        assert_eq!(parts[2].positions.as_slice(), [3]);
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

    /// Decoded requests (whose arguments are copied as received) of 1 to 40 keys, past the
    /// linear search's 16 slots: the parts are what grouping by hand gives, in first-seen
    /// order, each payload the plain encoding of its name, keys and values.
    #[test]
    fn decoded_requests_split_as_grouping_by_hand_does() {
        for (name, step) in [("MGET", 1), ("MSET", 2), ("del", 1)] {
            for keys in 1..=40usize {
                let mut args: Vec<Vec<u8>> = vec![name.as_bytes().to_vec()];
                for k in 0..keys {
                    // Every third key shares a hash tag with an earlier one.
                    let key = format!("{{t{}}}:{k}", if k % 3 == 2 { k / 3 } else { k });
                    args.push(key.into_bytes());
                    if step == 2 {
                        args.push(format!("value\r\n{k}").into_bytes());
                    }
                }
                let mut wire = BytesMut::new();
                encode::array_header(&mut wire, args.len());
                for arg in &args {
                    encode::bulk(&mut wire, arg);
                }
                let cmd = crate::resp::decode_command(&mut wire, &Default::default())
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| Command::from_args(&[b"unreadable"]));
                let mut want: Vec<(Slot, Vec<usize>)> = Vec::new();
                for k in 0..keys {
                    let slot = Slot::of(&args[1 + k * step]);
                    match want.iter_mut().find(|(s, _)| *s == slot) {
                        Some((_, positions)) => positions.push(k),
                        None => want.push((slot, vec![k])),
                    }
                }
                let parts = split_by_slot(&cmd, step);
                assert_eq!(parts.len(), want.len(), "{name} of {keys} keys");
                for (part, (slot, positions)) in parts.iter().zip(&want) {
                    assert_eq!(part.slot, *slot);
                    assert_eq!(part.positions.as_slice(), positions.as_slice());
                    let payload = if want.len() == 1 {
                        cmd.raw().clone()
                    } else {
                        let mut sub = vec![&args[0]];
                        for &k in positions {
                            sub.extend(&args[1 + k * step..1 + (k + 1) * step]);
                        }
                        Command::from_args(&sub).into_raw()
                    };
                    assert_eq!(part.payload, payload, "{name} of {keys} keys");
                }
            }
        }
    }

    #[test]
    fn one_slot_forwards_the_original_bytes() {
        let cmd = Command::from_args(&["DEL", "{t}1", "{t}2"]);
        let parts = split_by_slot(&cmd, 1);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].payload, cmd.raw().clone());
    }
}
