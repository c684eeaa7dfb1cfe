//! Key → hash slot, exactly as Redis Cluster computes it (`keyHashSlot` in cluster.c).

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// A hash slot, always below [`SLOT_COUNT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

/// CRC16-XMODEM (Redis Cluster's key hash), sixteen bytes at a time from sixteen 512-byte
/// tables: 61 instructions for a 16-byte key, where a byte-at-a-time table (the `crc16` crate,
/// kept as the tests' reference) took 105 (callgrind, GET).
static KEY_HASH: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_XMODEM);

impl Slot {
    /// The slot that `key` hashes to, honouring `{hash tags}`.
    pub fn of(key: &[u8]) -> Slot {
        Slot(KEY_HASH.checksum(hash_tag(key)) & (SLOT_COUNT as u16 - 1))
    }

    /// A slot from a number, if it is in range.
    pub fn new(n: u64) -> Option<Slot> {
        (n < SLOT_COUNT as u64).then_some(Slot(n as u16))
    }

    /// A slot picked at random (spreading one choice per process over the cluster).
    pub fn random() -> Slot {
        Slot(fastrand::u16(..SLOT_COUNT as u16))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The part of `key` that is hashed: the bytes between the first `{` and the first `}` after it,
/// when that part is non-empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find_byte(key, b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = find_byte(rest, b'}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The position of the first `needle` in `haystack`, eight bytes at a time.
///
/// Keys are short (a dozen to a few dozen bytes). For them, `memchr` spent more on getting to
/// its vector code (a call through a function pointer, then a short-input path) than on the
/// search: a 16-byte key's slot took 135 instructions with it, 103 with this (callgrind).
fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut words = haystack.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        // A zero byte where `needle` is; the lowest flagged byte is always a true one (a false
        // flag can only follow a true one, through the borrow), hence little-endian.
        let zeroed = u64::from_le_bytes(bytes) ^ pattern;
        let flagged = zeroed.wrapping_sub(ONES) & !zeroed & HIGHS;
        if flagged != 0 {
            return Some(offset + (flagged.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| offset + i)
}

/// The slot that every key matching a glob `pattern` must hash to, when the pattern fixes it: a
/// hash tag that comes before any wildcard (`{user1}:*`). Redis 8 uses the same shortcut for
/// KEYS and SCAN; it lets the proxy ask one shard instead of all of them.
pub fn pattern_slot(pattern: &[u8]) -> Option<Slot> {
    let open = pattern.iter().position(|&b| b == b'{')?;
    let rest = &pattern[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    if close == 0 {
        return None;
    }
    let fixed = &pattern[..open + 1 + close];
    if fixed
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
    {
        return None;
    }
    Some(Slot::of(&rest[..close]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_xmodem_check_value() {
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
    }

    #[test]
    fn the_key_hash_agrees_with_the_reference_crc16_at_every_length_and_alignment() {
        // Every length from 0 to 300 (the sixteen-byte steps and every remainder), each at
        // several starting offsets, over bytes that are not all alike.
        let bytes: Vec<u8> = (0..320u32).map(|i| (i * 167 + 13) as u8).collect();
        for start in 0..4 {
            for len in 0..=300 {
                let key = &bytes[start..start + len];
                assert_eq!(
                    KEY_HASH.checksum(key),
                    crc16::State::<crc16::XMODEM>::calculate(key),
                    "start {start} len {len}"
                );
            }
        }
    }

    #[test]
    fn find_byte_agrees_with_a_plain_search() {
        // Every position of the needle (and none) in every length up to 40, with the bytes
        // around it one above and one below it (the borrow of the eight-byte test).
        for len in 0..=40usize {
            for at in (0..len).map(Some).chain([None]) {
                for filler in [b'{' - 1, b'{' + 1, 0, 0xff, 0x80] {
                    let mut hay = vec![filler; len];
                    if let Some(at) = at {
                        hay[at] = b'{';
                        // A second one later must not be reported first.
                        if at + 3 < len {
                            hay[at + 3] = b'{';
                        }
                    }
                    assert_eq!(
                        find_byte(&hay, b'{'),
                        at,
                        "len {len} at {at:?} filler {filler}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_slots() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(Slot::of(b"foo").get(), 12182);
        assert_eq!(Slot::of(b"bar").get(), 5061);
        assert_eq!(Slot::of(b"hello").get(), 866);
        assert_eq!(Slot::of(b"{user1000}.following").get(), 3443);
        assert_eq!(Slot::of(b"{user1000}.followers").get(), 3443);
        assert_eq!(Slot::of(b"").get(), 0);
        assert_eq!(Slot::of(b"{user1000}.following"), Slot::of(b"user1000"));
    }

    #[test]
    fn hash_tag_rules_from_the_spec() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"{user1000}.followers"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{}foo"), b"{}foo");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"plain"), b"plain");
    }

    #[test]
    fn pattern_slots() {
        assert_eq!(pattern_slot(b"{tag}*"), Some(Slot::of(b"tag")));
        assert_eq!(pattern_slot(b"x{tag}:?"), Some(Slot::of(b"tag")));
        assert_eq!(pattern_slot(b"*{tag}"), None);
        assert_eq!(pattern_slot(b"{t*g}"), None);
        assert_eq!(pattern_slot(b"{}*"), None);
        assert_eq!(pattern_slot(b"abc*"), None);
    }
}
