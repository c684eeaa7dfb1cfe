//! Where each command goes, as data: a [`Route`] per command, computed once when the command
//! table is built, from the cluster's own request/response policy tips and key specs, plus one
//! small override table ([`OVERRIDES`]) for the proxy's own policy (what it answers itself,
//! what needs a connection of its own, what it refuses).
//!
//! A route says what kind of command this is; `dispatch::plan` turns it into a plan for one
//! concrete command (its slot, its parts) against one slot-map snapshot.

use super::table::CommandSpec;

/// How the replies of several nodes become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Integer replies added up (DBSIZE, PUBSUB NUMPAT).
    Sum,
    /// `+OK` when every node said OK, else the first error (FLUSHALL).
    AllOk,
    /// Every node's reply is the same; that reply (SCRIPT LOAD's SHA).
    Same,
    /// Arrays concatenated (SLOWLOG GET).
    Concat,
    /// Arrays of 0/1 combined element-wise with AND.
    LogicalAnd,
    /// Arrays of 0/1 combined element-wise with OR (SCRIPT EXISTS: a script any primary
    /// holds runs through the proxy on every node, since EVALSHA answered NOSCRIPT is repaired
    /// with the body the proxy saw; an EVAL without keys is cached on one node only).
    LogicalOr,
    /// Arrays merged without duplicates (PUBSUB CHANNELS).
    Union,
    /// Flat name/count arrays with the counts of equal names added (PUBSUB NUMSUB).
    SumPairs,
    /// The first node that succeeded, else the first error (SCRIPT KILL: only the node running
    /// the script can kill it; the others answer NOTBUSY).
    OneSucceeded,
    /// The reply of the node running a script, else any (FUNCTION STATS).
    RunningScript,
}

/// How a multi-key command is split per slot and its parts merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    /// MGET: one key per argument, values merged back in key order.
    Values,
    /// MSET: key/value pairs, OK when every part is OK.
    Pairs,
    /// DEL, UNLINK, EXISTS, TOUCH: one key per argument, integer replies summed.
    Count,
}

/// Commands the proxy answers itself, without a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Select,
    Auth,
    Hello,
    /// READONLY / READWRITE: the proxy chooses replicas by its own policy.
    Ok,
    Reset,
    /// CLIENT and its subcommands, by argv\[1\] (the cluster may not know a newer one).
    Client,
    /// CLUSTER KEYSLOT.
    KeySlot,
    /// PUBSUB CHANNELS/NUMSUB/NUMPAT and the shard variants: from the proxy's own count of
    /// its clients' subscriptions, as one server answers for its clients.
    PubSub,
}

/// Commands that act on the client's own session: transactions, subscriptions, WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe(Subscription),
    Unsubscribe(Subscription),
    Wait,
}

/// The three kinds of Pub/Sub subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    Channel,
    Pattern,
    Shard,
}

/// Commands that walk the whole key space shard by shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    Keys,
    Scan,
    RandomKey,
}

/// Scripts, whose bodies the proxy remembers to repair NOSCRIPT after a failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// SCRIPT LOAD: remembered, loaded on every primary.
    Load,
    /// SCRIPT FLUSH: forgotten by the proxy too (no NOSCRIPT repair after it), flushed on
    /// every primary.
    Flush,
    /// EVAL/EVAL_RO: remembered, then routed by its keys.
    Eval,
    /// EVALSHA/EVALSHA_RO: routed by its keys, repaired on NOSCRIPT.
    EvalSha,
    /// FCALL/FCALL_RO: routed by its keys (functions are loaded on every primary).
    Function,
}

/// Where a command goes: one per command table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered by the proxy.
    Local(Local),
    /// To the owner of its keys' slot (all keys in one slot); any primary when it has none.
    Keyed,
    /// To any primary: the answer does not depend on the node (COMMAND, TIME, CLUSTER INFO).
    AnyPrimary,
    /// To the first primary in address order, so that repeated reads of per-node state agree
    /// (CONFIG GET: the settings the proxy applies are the same on every node, the rest, like
    /// `port` or `dir`, are the first primary's).
    FirstPrimary,
    /// To the owner of the slot given as argv\[2\] (CLUSTER COUNTKEYSINSLOT/GETKEYSINSLOT).
    SlotArgument,
    /// Split per slot, the parts run concurrently and merged.
    Split(SplitKind),
    /// To every primary, the replies merged.
    Broadcast(Merge),
    /// To every primary on connections of their own, the replies merged: for commands that
    /// must reach a node busy with a script another connection runs (SCRIPT KILL, FUNCTION
    /// KILL), which the shared pipe to that node would hold back behind the script itself.
    BroadcastAside(Merge),
    /// Server configuration of every node, replicas included, when the operator allowed it
    /// (`--admin-commands`); otherwise refused with an error naming the flag.
    EveryNode,
    /// As [`Route::EveryNode`], on each node once no background AOF rewrite runs there
    /// (`BGREWRITEAOF`, which would answer "already in progress" right after `CONFIG SET
    /// appendonly yes`).
    EveryNodeSettled,
    /// DEBUG: `DEBUG OBJECT key` goes to the key's slot; the rest is [`Route::EveryNode`].
    Debug,
    /// CONFIG SET: every node or none, remembered and applied to nodes that join later
    /// (allowed by `--admin-commands`, as [`Route::EveryNode`]).
    ConfigSet,
    /// PUBLISH (to any node: the cluster spreads it) and SPUBLISH (to its channel's slot),
    /// answered with the count of the proxy's own subscribers that receive it.
    Publish(Subscription),
    /// The whole key space, shard by shard.
    Walk(Walk),
    /// INFO: the primaries' sections merged, plus the proxy's own.
    Info,
    /// Parks its connection until data arrives: a connection of its own.
    Blocking,
    /// XREAD/XREADGROUP: blocking with a `BLOCK` option, keyed otherwise.
    MaybeBlocking,
    /// Acts on the client's own session.
    Session(SessionCommand),
    Script(Script),
    /// Refused, with the reason shown to the client.
    Refuse(&'static str),
}

const ONE_NODE: &str = "it acts on one node of the cluster";
const CHANGES_CLUSTER: &str = "it would change the cluster behind the proxy";
const ADMIN_ONE_NODE: &str = "it is an administrative command for one node";

/// The proxy's own policy, where the cluster's tips don't say or say something else.
pub const OVERRIDES: &[(&str, Route)] = &[
    ("ping", Route::Local(Local::Ping)),
    ("echo", Route::Local(Local::Echo)),
    ("quit", Route::Local(Local::Quit)),
    ("select", Route::Local(Local::Select)),
    ("auth", Route::Local(Local::Auth)),
    ("hello", Route::Local(Local::Hello)),
    ("readonly", Route::Local(Local::Ok)),
    ("readwrite", Route::Local(Local::Ok)),
    ("reset", Route::Local(Local::Reset)),
    ("client", Route::Local(Local::Client)),
    ("cluster|keyslot", Route::Local(Local::KeySlot)),
    ("cluster|info", Route::AnyPrimary),
    ("cluster|nodes", Route::AnyPrimary),
    ("cluster|slots", Route::AnyPrimary),
    ("cluster|shards", Route::AnyPrimary),
    ("cluster|myid", Route::AnyPrimary),
    ("cluster|links", Route::AnyPrimary),
    ("cluster|help", Route::AnyPrimary),
    ("cluster|countkeysinslot", Route::SlotArgument),
    ("cluster|getkeysinslot", Route::SlotArgument),
    ("info", Route::Info),
    ("command", Route::AnyPrimary),
    ("command|count", Route::AnyPrimary),
    ("command|info", Route::AnyPrimary),
    ("command|docs", Route::AnyPrimary),
    ("command|list", Route::AnyPrimary),
    ("command|getkeys", Route::AnyPrimary),
    ("command|getkeysandflags", Route::AnyPrimary),
    ("command|help", Route::AnyPrimary),
    ("keys", Route::Walk(Walk::Keys)),
    ("scan", Route::Walk(Walk::Scan)),
    ("randomkey", Route::Walk(Walk::RandomKey)),
    // One server counts its own clients' subscriptions: the proxy counts its clients'.
    ("pubsub|channels", Route::Local(Local::PubSub)),
    ("pubsub|shardchannels", Route::Local(Local::PubSub)),
    ("pubsub|numsub", Route::Local(Local::PubSub)),
    ("pubsub|shardnumsub", Route::Local(Local::PubSub)),
    ("pubsub|numpat", Route::Local(Local::PubSub)),
    ("publish", Route::Publish(Subscription::Channel)),
    ("spublish", Route::Publish(Subscription::Shard)),
    ("script|load", Route::Script(Script::Load)),
    ("script|flush", Route::Script(Script::Flush)),
    ("script|exists", Route::Broadcast(Merge::LogicalOr)),
    ("eval", Route::Script(Script::Eval)),
    ("eval_ro", Route::Script(Script::Eval)),
    ("evalsha", Route::Script(Script::EvalSha)),
    ("evalsha_ro", Route::Script(Script::EvalSha)),
    ("fcall", Route::Script(Script::Function)),
    ("fcall_ro", Route::Script(Script::Function)),
    ("function|load", Route::Broadcast(Merge::Same)),
    ("function|restore", Route::Broadcast(Merge::Same)),
    ("multi", Route::Session(SessionCommand::Multi)),
    ("exec", Route::Session(SessionCommand::Exec)),
    ("discard", Route::Session(SessionCommand::Discard)),
    ("watch", Route::Session(SessionCommand::Watch)),
    ("unwatch", Route::Session(SessionCommand::Unwatch)),
    (
        "subscribe",
        Route::Session(SessionCommand::Subscribe(Subscription::Channel)),
    ),
    (
        "psubscribe",
        Route::Session(SessionCommand::Subscribe(Subscription::Pattern)),
    ),
    (
        "ssubscribe",
        Route::Session(SessionCommand::Subscribe(Subscription::Shard)),
    ),
    (
        "unsubscribe",
        Route::Session(SessionCommand::Unsubscribe(Subscription::Channel)),
    ),
    (
        "punsubscribe",
        Route::Session(SessionCommand::Unsubscribe(Subscription::Pattern)),
    ),
    (
        "sunsubscribe",
        Route::Session(SessionCommand::Unsubscribe(Subscription::Shard)),
    ),
    ("wait", Route::Session(SessionCommand::Wait)),
    (
        "waitaof",
        Route::Refuse("it needs the connection of the client's last write"),
    ),
    ("debug", Route::Debug),
    ("config|set", Route::ConfigSet),
    ("config|resetstat", Route::EveryNode),
    ("acl|setuser", Route::EveryNode),
    ("acl|deluser", Route::EveryNode),
    ("slowlog|get", Route::Broadcast(Merge::Concat)),
    ("latency|latest", Route::Broadcast(Merge::Concat)),
    ("latency|history", Route::Broadcast(Merge::Concat)),
    ("slowlog|len", Route::Broadcast(Merge::Sum)),
    ("latency|reset", Route::Broadcast(Merge::Sum)),
    ("slowlog|reset", Route::Broadcast(Merge::AllOk)),
    ("monitor", Route::Refuse(ONE_NODE)),
    ("sync", Route::Refuse(ONE_NODE)),
    ("psync", Route::Refuse(ONE_NODE)),
    ("shutdown", Route::Refuse(ONE_NODE)),
    ("replicaof", Route::Refuse(ONE_NODE)),
    ("slaveof", Route::Refuse(ONE_NODE)),
    ("failover", Route::Refuse(ONE_NODE)),
    ("save", Route::Refuse(ONE_NODE)),
    ("bgsave", Route::Refuse(ONE_NODE)),
    ("bgrewriteaof", Route::EveryNodeSettled),
    ("swapdb", Route::Refuse(ONE_NODE)),
    ("move", Route::Refuse(ONE_NODE)),
    ("xread", Route::MaybeBlocking),
    ("xreadgroup", Route::MaybeBlocking),
    // HyperLogLog diagnostics: by key, and a self-test that touches no data.
    ("pfdebug", Route::Keyed),
    ("pfselftest", Route::AnyPrimary),
    ("config|get", Route::FirstPrimary),
    ("time", Route::AnyPrimary),
    ("lastsave", Route::AnyPrimary),
    ("role", Route::AnyPrimary),
    ("lolwut", Route::AnyPrimary),
    ("memory|stats", Route::AnyPrimary),
    ("latency|doctor", Route::AnyPrimary),
    ("latency|graph", Route::AnyPrimary),
    ("latency|histogram", Route::AnyPrimary),
    ("slowlog|help", Route::AnyPrimary),
    ("latency|help", Route::AnyPrimary),
    ("memory|doctor", Route::AnyPrimary),
    ("function|list", Route::AnyPrimary),
    ("function|dump", Route::AnyPrimary),
    // Asked of every primary aside the shared pipes (allowed while a node is busy): one
    // server's stats show the script it runs, wherever the cluster runs it.
    (
        "function|stats",
        Route::BroadcastAside(Merge::RunningScript),
    ),
    // The tips say all_shards/all_succeeded; the proxy has sent these to one primary so far
    // (issue 10 decides how they reach every node).
    ("memory|purge", Route::Keyed),
];

impl Route {
    /// The route of `spec`: the override table first, then the cluster's tips, then its flags.
    pub fn of(spec: &CommandSpec) -> Route {
        let name = spec.name.as_str();
        if let Some((_, route)) = OVERRIDES.iter().find(|(n, _)| *n == name) {
            return *route;
        }
        if name.starts_with("client|") {
            return Route::Local(Local::Client);
        }
        if name == "cluster" || name.starts_with("cluster|") {
            return Route::Refuse(CHANGES_CLUSTER);
        }
        if let Some(route) = from_tips(
            spec.request_policy.as_deref(),
            spec.response_policy.as_deref(),
        ) {
            return route;
        }
        if spec.is_blocking() {
            Route::Blocking
        } else if spec.is_admin() {
            Route::Refuse(ADMIN_ONE_NODE)
        } else {
            Route::Keyed
        }
    }
}

/// The route the cluster's request/response policy tips imply, where the proxy follows them.
pub fn from_tips(request: Option<&str>, response: Option<&str>) -> Option<Route> {
    match (request?, response) {
        ("multi_shard", None) => Some(Route::Split(SplitKind::Values)),
        ("multi_shard", Some("all_succeeded")) => Some(Route::Split(SplitKind::Pairs)),
        ("multi_shard", Some("agg_sum")) => Some(Route::Split(SplitKind::Count)),
        // MSETNX (agg_min) is all or nothing: it can't be split, its keys must share a slot.
        ("multi_shard", Some(_)) => Some(Route::Keyed),
        ("all_shards", Some("agg_sum")) => Some(Route::Broadcast(Merge::Sum)),
        ("all_shards", Some("all_succeeded")) => Some(Route::Broadcast(Merge::AllOk)),
        ("all_shards", Some("agg_logical_and")) => Some(Route::Broadcast(Merge::LogicalAnd)),
        // SCRIPT KILL, FUNCTION KILL: one node runs the script, and its shared pipe may be the
        // very connection the script blocks.
        ("all_shards", Some("one_succeeded")) => Some(Route::BroadcastAside(Merge::OneSucceeded)),
        _ => None,
    }
}
