//! A multi-key command whose keys share one slot reaches its node as one command, as the
//! client sent it (`INFO commandstats` on the node counts one call); keys in several slots of
//! one node go as one command per slot.

mod common;

use common::raw::{RawClient, Reply};
use common::{command_calls, local_keyslot, query, start_proxy, unique_prefix, Cluster};

#[test]
fn same_slot_commands_stay_whole_and_others_go_one_per_slot() {
    let cluster = Cluster::start(3, 0);
    let proxy = start_proxy(&cluster);
    let mut client = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("whole");
    let tagged: Vec<String> = (0..5).map(|i| format!("{{{p}}}:{i}")).collect();
    let node = cluster.primary_for_slot(local_keyslot(tagged[0].as_bytes()));
    let ok = Reply::Simple("OK".into());
    let _: String = query(node, &["CONFIG", "RESETSTAT"]);
    let mut mset = vec!["MSET"];
    for key in &tagged {
        mset.extend([key.as_str(), "v"]);
    }
    assert_eq!(client.call(&mset), ok);
    let mut mget = vec!["MGET"];
    mget.extend(tagged.iter().map(String::as_str));
    assert!(matches!(client.call(&mget), Reply::Array(Some(v)) if v.len() == 5));
    let mut del = vec!["DEL"];
    del.extend(tagged.iter().map(String::as_str));
    assert_eq!(client.call(&del), Reply::Int(5));
    for command in ["mset", "mget", "del"] {
        assert_eq!(
            command_calls(node, command),
            1,
            "{command} reached {node} as one command"
        );
    }

    // Three keys in three different slots of that same node: one MGET per slot.
    let own: Vec<String> = (0..)
        .map(|i| format!("{p}:spread:{i}"))
        .filter(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())) == node)
        .take(3)
        .collect();
    let slots: std::collections::BTreeSet<u16> =
        own.iter().map(|k| local_keyslot(k.as_bytes())).collect();
    let _: String = query(node, &["CONFIG", "RESETSTAT"]);
    let mut mget = vec!["MGET"];
    mget.extend(own.iter().map(String::as_str));
    assert!(matches!(client.call(&mget), Reply::Array(Some(v)) if v.len() == 3));
    assert_eq!(command_calls(node, "mget"), slots.len() as u64);
}
