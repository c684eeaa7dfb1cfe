//! Client socket I/O, the same through epoll and through io_uring (`io`): pipelines answered
//! in order, values larger than every buffer of the io_uring path (its inbox, its outbox, a
//! provided buffer) both ways, a client that writes without reading held back and then served
//! whole, QUIT answered before the close, a client hanging up mid-pipeline hurting no other,
//! one pipelining without pause holding back no other on its worker, and sockets (and their
//! driver slots) reused many times over.
//!
//! Where the kernel refuses io_uring, the `uring` half is skipped with a note: `auto` then
//! runs on epoll, as `entrypoint.rs` checks with a seccomp filter.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::raw::{encode, RawClient, Reply};
use common::{shared, start_proxy_configured};
use slotproxy::config::IoMode;

fn modes() -> Vec<IoMode> {
    let mut modes = vec![IoMode::Epoll];
    match slotproxy::client::uring::probe() {
        Ok(()) => modes.push(IoMode::Uring),
        Err(error) => eprintln!("io_uring is not available here ({error}): epoll only"),
    }
    modes
}

fn proxy(mode: IoMode) -> slotproxy::Proxy {
    start_proxy_configured(vec![shared().seed_url()], |c| c.listener.io = mode)
}

#[test]
fn a_long_pipeline_is_answered_in_order() {
    for mode in modes() {
        let proxy = proxy(mode);
        let mut client = RawClient::connect(proxy.local_addr());
        let mut batch = Vec::new();
        for i in 0..2_000 {
            let key = format!("io:order:{i}");
            let value = format!("v{i}");
            batch.extend(encode(&[b"SET", key.as_bytes(), value.as_bytes()]));
            batch.extend(encode(&[b"GET", key.as_bytes()]));
        }
        client.send_raw(&batch);
        for i in 0..2_000 {
            assert_eq!(
                client.read_reply(),
                Reply::Simple("OK".into()),
                "{mode:?} SET {i}"
            );
            assert_eq!(
                client.read_reply().text(),
                format!("v{i}"),
                "{mode:?} GET {i}"
            );
        }
    }
}

#[test]
fn values_larger_than_every_buffer_go_both_ways() {
    for mode in modes() {
        let proxy = proxy(mode);
        let mut client = RawClient::connect(proxy.local_addr());
        for size in [1, 2_047, 2_049, 70_000, 3 * 1024 * 1024] {
            let value: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            let key = format!("io:big:{size}");
            client.send(&[b"SET", key.as_bytes(), &value]);
            assert_eq!(
                client.read_reply(),
                Reply::Simple("OK".into()),
                "{mode:?} {size}"
            );
            client.send(&[b"GET", key.as_bytes()]);
            match client.read_reply() {
                Reply::Bulk(Some(got)) => {
                    assert!(got == value, "{mode:?}: {size} bytes came back changed")
                }
                other => panic!("{mode:?} GET of {size} bytes: {other:?}"),
            }
        }
    }
}

/// 20,000 GETs written before a single reply is read: the proxy stops reading at its
/// pipeline limit (the client's writes then wait in the kernel), and every reply arrives, in
/// order, once the client reads.
#[test]
fn a_client_that_writes_without_reading_is_held_back_then_served() {
    for mode in modes() {
        let proxy = proxy(mode);
        let mut setup = RawClient::connect(proxy.local_addr());
        setup.send(&[b"SET", b"io:held", b"x"]);
        assert_eq!(setup.read_reply(), Reply::Simple("OK".into()));
        let stream = TcpStream::connect(proxy.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let count = 20_000;
        let sender = std::thread::spawn(move || {
            let one = encode(&[b"GET", b"io:held"]);
            let all: Vec<u8> = one
                .iter()
                .copied()
                .cycle()
                .take(one.len() * count)
                .collect();
            writer.write_all(&all).map(|()| writer)
        });
        std::thread::sleep(Duration::from_millis(300));
        let expected = b"$1\r\nx\r\n";
        let mut reader = stream;
        let mut got = vec![0u8; expected.len() * count];
        reader
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("{mode:?}: reading the replies: {e}"));
        assert!(
            got.chunks(expected.len()).all(|c| c == expected),
            "{mode:?}: a reply out of place"
        );
        sender.join().unwrap().unwrap();
    }
}

#[test]
fn quit_is_answered_before_the_close() {
    for mode in modes() {
        let proxy = proxy(mode);
        for _ in 0..20 {
            let mut client = RawClient::connect(proxy.local_addr());
            client.send_raw(&[encode(&[b"PING"]), encode(&[b"QUIT"])].concat());
            assert_eq!(
                client.read_reply(),
                Reply::Simple("PONG".into()),
                "{mode:?}"
            );
            assert_eq!(client.read_reply(), Reply::Simple("OK".into()), "{mode:?}");
            client
                .is_closed_by_server()
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        }
    }
}

/// Clients that hang up with commands in flight, hundreds of times over: their sockets and
/// driver slots are reused, and a client that stays is answered throughout.
#[test]
fn clients_hanging_up_mid_pipeline_hurt_no_one() {
    for mode in modes() {
        let proxy = proxy(mode);
        let mut steady = RawClient::connect(proxy.local_addr());
        let pipeline: Vec<u8> = (0..50)
            .flat_map(|i| encode(&[b"SET", format!("io:gone:{i}").as_bytes(), &[b'v'; 3000]]))
            .collect();
        for round in 0..300 {
            let mut leaving = TcpStream::connect(proxy.local_addr()).unwrap();
            leaving.write_all(&pipeline).unwrap();
            drop(leaving);
            if round % 25 == 0 {
                steady.send(&[b"PING", format!("{round}").as_bytes()]);
                assert_eq!(steady.read_reply().text(), format!("{round}"), "{mode:?}");
            }
        }
        for _ in 0..100 {
            let mut fresh = RawClient::connect(proxy.local_addr());
            assert_eq!(
                fresh.call(&["PING"]),
                Reply::Simple("PONG".into()),
                "{mode:?}"
            );
        }
    }
}

/// The proxy's socket for the client whose address is `client`: its inode, from
/// `/proc/net/tcp` (the proxy runs in this process, listening on `proxy_port`).
fn proxy_socket_inode(proxy_port: u16, client: std::net::SocketAddr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| {
            field
                .split(':')
                .nth(1)
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        (port(fields.get(1)?) == Some(proxy_port) && port(fields.get(2)?) == Some(client.port()))
            .then(|| fields.get(9).map(|s| s.to_string()))
            .flatten()
    })
}

/// Whether the proxy still holds its socket for `client`: once closed, the kernel keeps the
/// connection (with its unsent data) as an orphan without an inode, or drops it.
fn proxy_socket_open(proxy_port: u16, client: std::net::SocketAddr) -> bool {
    proxy_socket_inode(proxy_port, client).is_some_and(|inode| inode != "0")
}

/// A client killed while replies wait for it to read (its socket full): the proxy closes its
/// socket even though the client never reads: at once with epoll, after the replies already
/// handed to the kernel had 10 s to go with io_uring.
#[test]
fn a_killed_client_that_never_reads_is_closed() {
    for mode in modes() {
        // Far above what is sent: the client is closed by the kill, not by the limit.
        let proxy = start_proxy_configured(vec![shared().seed_url()], |c| {
            c.listener.io = mode;
            c.clients.output_buffer_limit = 1 << 30;
        });
        let mut admin = RawClient::connect(proxy.local_addr());
        let value = vec![b'v'; 3 * 1024 * 1024];
        admin.send(&[b"SET", b"io:kill:big", &value]);
        assert_eq!(admin.read_reply(), Reply::Simple("OK".into()));
        let mut stuck = TcpStream::connect(proxy.local_addr()).unwrap();
        let gets: Vec<u8> = (0..40)
            .flat_map(|_| encode(&[b"GET", b"io:kill:big"]))
            .collect();
        stuck.write_all(&gets).unwrap();
        let client = stuck.local_addr().unwrap();
        let port = proxy.local_addr().port();
        common::wait_until("the proxy's socket", common::CLUSTER_DEADLINE, || {
            match proxy_socket_open(port, client) {
                true => Ok(()),
                false => Err("not accepted yet".to_string()),
            }
        });
        // Let the replies fill both socket buffers.
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            proxy_socket_open(port, client),
            "{mode:?}: closed before the kill"
        );
        let killed = admin.call(&["CLIENT", "KILL", "ADDR", &client.to_string()]);
        assert_eq!(killed, Reply::Int(1), "{mode:?}");
        common::wait_until(
            "the proxy to close the killed client's socket",
            Duration::from_secs(20),
            || match proxy_socket_open(port, client) {
                true => Err("open".to_string()),
                false => Ok(()),
            },
        );
        drop(stuck);
    }
}

/// One worker serves both clients: while one keeps the proxy busy with long pipelines, the
/// other's single commands are still answered, each within the harness's I/O timeout (a
/// session that never gave the worker back would leave them unanswered).
#[test]
fn a_client_pipelining_without_pause_holds_back_no_other_client() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const BATCH: usize = 1_000;
    const MAX_BATCHES: usize = 2_000;
    for mode in modes() {
        let proxy = start_proxy_configured(vec![shared().seed_url()], |c| {
            c.listener.io = mode;
            c.listener.workers = 1;
        });
        let mut other = RawClient::connect(proxy.local_addr());
        assert_eq!(
            other.call(&["SET", "io:busy", "x"]),
            Reply::Simple("OK".into())
        );
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            let addr = proxy.local_addr();
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                let batch: Vec<u8> = (0..BATCH)
                    .flat_map(|_| encode(&[b"GET", b"io:busy"]))
                    .collect();
                let mut batches = 0;
                // Bounded in count as well as by the flag.
                while batches < MAX_BATCHES && !stop.load(Ordering::Relaxed) {
                    client.send_raw(&batch);
                    for i in 0..BATCH {
                        let reply = client.read_reply();
                        assert_eq!(reply.text(), "x", "batch {batches}, reply {i}");
                    }
                    batches += 1;
                }
                batches
            })
        };
        // The busy client is under way before the other starts.
        std::thread::sleep(Duration::from_millis(200));
        for i in 0..200 {
            let key = format!("io:other:{i}");
            other.send(&[b"SET", key.as_bytes(), b"1"]);
            let reply = other
                .try_read_reply()
                .unwrap_or_else(|e| panic!("{mode:?}: SET {i} while another client is busy: {e}"));
            assert_eq!(reply, Reply::Simple("OK".into()), "{mode:?}");
        }
        stop.store(true, Ordering::Relaxed);
        let batches = busy.join().expect("the busy client");
        // Still busy when the other was done: the two were served side by side (about one
        // busy batch per single command here, as the worker takes turns).
        assert!(
            (1..MAX_BATCHES).contains(&batches),
            "{mode:?}: {batches} batches of the busy client, not during the other's commands"
        );
    }
}
