//! Hot-path micro-benchmarks for the codec, the command table and planning: request decoding,
//! reply framing, command lookup plus key extraction, and the plan of a command. Sizes follow STYLE.md §12 (short keys,
//! ~100-byte values). Compare numbers only across runs on the same machine.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use slotproxy::backend::NodeAddr;
use slotproxy::cluster::slot_map::Shard;
use slotproxy::cluster::{Slot, SlotMap};
use slotproxy::command::CommandTable;
use slotproxy::dispatch::plan::{plan, Allowed};
use slotproxy::dispatch::{merge, split::split_by_slot};
use slotproxy::resp::{Command, ReplyScanner, RequestDecoder, RequestLimits};

/// Sixteen pipelined `GET key:NNNN` requests, as one client read.
fn get_pipeline() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..16 {
        let key = format!("key:{i:04}");
        out.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    out
}

/// Sixteen 100-byte bulk replies, as one backend read.
fn bulk_replies() -> Vec<u8> {
    let value = [b'v'; 100];
    let mut out = Vec::new();
    for _ in 0..16 {
        out.extend_from_slice(b"$100\r\n");
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn decode_pipeline(c: &mut Criterion) {
    let input = get_pipeline();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("pipeline_16_get", |b| {
        let mut decoder = RequestDecoder::new(RequestLimits::default());
        b.iter(|| {
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Ok(Some(cmd)) = decoder.decode(&mut buf) {
                black_box(&cmd);
                n += 1;
            }
            assert_eq!(n, 16);
        });
    });
    group.finish();
}

fn scan_replies(c: &mut Criterion) {
    let input = bulk_replies();
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("bulk_16x100", |b| {
        let mut scanner = ReplyScanner::default();
        b.iter(|| {
            let mut rest = black_box(&input[..]);
            while let Ok(Some(len)) = scanner.scan(rest) {
                rest = rest.get(len..).unwrap_or_default();
            }
            assert!(rest.is_empty());
        });
    });
    group.finish();
}

fn lookup_and_keys(c: &mut Criterion) {
    let table = CommandTable::builtin();
    let get = Command::from_args(&["GET", "user:1000:profile"]);
    let mut mget_args = vec!["MGET".to_string()];
    mget_args.extend((0..10).map(|i| format!("user:{i}:profile")));
    let mget = Command::from_args(&mget_args);
    let mut group = c.benchmark_group("command");
    for (name, cmd) in [("get", &get), ("mget_10", &mget)] {
        group.bench_function(format!("lookup_keys_{name}"), |b| {
            let mut keys = Vec::with_capacity(16);
            b.iter(|| {
                keys.clear();
                if let Some(spec) = table.lookup(black_box(cmd)) {
                    spec.key_indices(cmd, &mut keys);
                }
                black_box(&keys);
            });
        });
    }
    group.finish();
}

fn slot_hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("slot");
    for key in [
        "user:1000:profile",
        "{user1000}.following",
        "a-64-byte-key-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        group.bench_function(format!("slot_of_{}b", key.len()), |b| {
            b.iter(|| Slot::of(black_box(key.as_bytes())))
        });
    }
    group.finish();
}

/// MGET of 10 keys in 10 slots: the per-slot split, then merging the 10 replies back.
fn mget_split_and_merge(c: &mut Criterion) {
    let mut args = vec!["MGET".to_string()];
    args.extend((0..10).map(|i| format!("user:{i}:profile")));
    let cmd = Command::from_args(&args);
    let parts = split_by_slot(&cmd, 1);
    assert_eq!(parts.len(), 10, "the bench keys must hash to 10 slots");
    let value = Bytes::from(format!("*1\r\n$100\r\n{}\r\n", "v".repeat(100)));
    let mut group = c.benchmark_group("mget_10_slots");
    group.bench_function("split", |b| b.iter(|| split_by_slot(black_box(&cmd), 1)));
    let positions: Vec<_> = parts.iter().map(|p| p.positions.clone()).collect();
    let replies = vec![value; parts.len()];
    group.bench_function("merge", |b| {
        b.iter(|| merge::by_position(black_box(&positions), black_box(&replies), 10))
    });
    group.finish();
}

/// Lookup, then the plan (route, keys, slot, CROSSSLOT check) against a three-shard map: the
/// whole decision dispatch makes per command before anything is sent.
fn planning(c: &mut Criterion) {
    let table = CommandTable::builtin();
    let shard = |port: u16| Shard {
        primary: NodeAddr::from(format!("127.0.0.1:{port}")),
        primary_id: None,
        replicas: vec![],
    };
    let map = SlotMap::from_ranges(vec![
        (0, 5460, shard(7000)),
        (5461, 10922, shard(7001)),
        (10923, 16383, shard(7002)),
    ]);
    let allowed = Allowed {
        admin_commands: false,
        cross_slot: slotproxy::config::CrossSlot::Refuse,
    };
    let value = "v".repeat(64);
    let mut mget_args = vec!["MGET".to_string()];
    mget_args.extend((0..10).map(|i| format!("user:{i}:profile")));
    let commands = [
        ("get", Command::from_args(&["GET", "user:1000:profile"])),
        (
            "set",
            Command::from_args(&["SET", "user:1000:profile", value.as_str()]),
        ),
        ("ping", Command::from_args(&["PING"])),
        ("mget_10_slots", Command::from_args(&mget_args)),
    ];
    let mut group = c.benchmark_group("plan");
    for (name, cmd) in &commands {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let spec = table.lookup(black_box(cmd)).expect("in the table");
                black_box(plan(spec, cmd, allowed, &map))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    planning,
    decode_pipeline,
    scan_replies,
    lookup_and_keys,
    slot_hashing,
    mget_split_and_merge
);
criterion_main!(benches);
