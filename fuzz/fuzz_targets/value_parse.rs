//! The control path's reply parser, and what consumes its values, on arbitrary bytes.
//!
//! The input is a backend byte stream holding one or more replies (plain RESP, no control
//! prefix). Each value `Value::parse` returns is handed to everything that reads backend
//! replies as values: the `CLUSTER SHARDS` / `CLUSTER SLOTS` parsers (a corrupt or hostile node
//! must not bring the proxy down through its topology) and the `COMMAND` table loader.
//!
//! Checked, beyond "no panic": a parsed value takes at least one byte and no more than given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slotproxy::cluster::shards_reply::{announced_hostnames, parse_shards, parse_slots};
use slotproxy::command::CommandTable;
use slotproxy::resp::Value;

/// An asked address of each shape the topology code distinguishes (name, IPv4, IPv6).
const ASKED: [&str; 3] = ["node-1:7000", "127.0.0.1:7000", "[::1]:7000"];

fn consume(value: &Value) {
    for asked in ASKED {
        for tls in [false, true] {
            let _ = parse_shards(value, asked, tls, 0);
            let _ = announced_hostnames(value, asked, tls);
        }
        let _ = parse_shards(value, asked, false, 1000);
        let _ = parse_slots(value, asked);
    }
    let _ = CommandTable::from_command_reply(value);
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((value, len))) = Value::parse(rest) {
        assert!(
            len > 0 && len <= rest.len(),
            "bad length {len} of {}",
            rest.len()
        );
        consume(&value);
        rest = &rest[len..];
    }
});
