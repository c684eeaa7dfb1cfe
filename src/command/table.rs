//! [`CommandTable`] and [`CommandSpec`]: built once from a `COMMAND` reply, then shared
//! read-only by every session (`Send + Sync`, no interior mutability).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use super::route::Route;
use crate::resp::{Command, Value};

use super::keys;
use super::CommandError;

/// Longest `container|subcommand` name [`CommandTable::lookup`] can form in its stack buffer.
/// The longest Redis 7 name is `cluster|count-failure-reports` (29 bytes); anything longer
/// than this cannot be a known command, so it is simply not found.
const MAX_LOOKUP_NAME: usize = 64;

/// The raw RESP2 reply of `COMMAND` from redis-server 7.0.15: the table used when no backend
/// can be asked.
static REDIS7_COMMAND_REPLY: &[u8] = include_bytes!("redis7_commands.resp");

macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$fmeta:meta])* $flag:ident = $bit:expr, $text:literal;)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(u32);

        impl $name {
            $($(#[$fmeta])* pub const $flag: $name = $name(1 << $bit);)*

            /// No flags.
            pub const fn empty() -> Self {
                $name(0)
            }

            /// Whether every flag in `other` is set.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// The raw bits, stable only within one build.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// The flag Redis names `name` (case-insensitive), if we know it.
            pub fn from_name(name: &[u8]) -> Option<Self> {
                $(if name.eq_ignore_ascii_case($text.as_bytes()) {
                    return Some($name::$flag);
                })*
                None
            }

            fn names(self) -> impl Iterator<Item = &'static str> {
                [$(($name::$flag, $text)),*]
                    .into_iter()
                    .filter(move |(flag, _)| self.contains(*flag))
                    .map(|(_, text)| text)
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: $name) {
                self.0 |= rhs.0;
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_set().entries(self.names()).finish()
            }
        }
    };
}

flag_set! {
    /// Command flags from the third element of a `COMMAND` entry. Unknown flag names (from a
    /// newer server) are ignored.
    CommandFlags {
        /// May modify the dataset.
        WRITE = 0, "write";
        /// Never modifies the dataset; may be served by a replica.
        READONLY = 1, "readonly";
        /// May grow memory; refused when over `maxmemory`.
        DENYOOM = 2, "denyoom";
        /// Implemented by a module.
        MODULE = 3, "module";
        /// Administrative.
        ADMIN = 4, "admin";
        /// Pub/sub related.
        PUBSUB = 5, "pubsub";
        /// Not allowed in scripts.
        NOSCRIPT = 6, "noscript";
        /// May block the connection.
        BLOCKING = 7, "blocking";
        /// Allowed while the dataset is loading.
        LOADING = 8, "loading";
        /// Allowed on a stale replica.
        STALE = 9, "stale";
        /// Not shown in MONITOR.
        SKIP_MONITOR = 10, "skip_monitor";
        /// Not shown in SLOWLOG.
        SKIP_SLOWLOG = 11, "skip_slowlog";
        /// Allowed on an importing slot after ASKING.
        ASKING = 12, "asking";
        /// O(1) or O(log N).
        FAST = 13, "fast";
        /// Allowed before authentication.
        NO_AUTH = 14, "no_auth";
        /// May replicate even if it does not write.
        MAY_REPLICATE = 15, "may_replicate";
        /// Keys are optional.
        NO_MANDATORY_KEYS = 16, "no_mandatory_keys";
        /// Blocked unless enabled by configuration.
        PROTECTED = 17, "protected";
        /// Key positions depend on the arguments.
        MOVABLEKEYS = 18, "movablekeys";
        /// Refused during async loading.
        NO_ASYNC_LOADING = 19, "no_async_loading";
        /// Not allowed inside MULTI.
        NO_MULTI = 20, "no_multi";
        /// Allowed while a script or module is busy.
        ALLOW_BUSY = 21, "allow_busy";
        /// Module command that cannot run in cluster mode.
        MODULE_NO_CLUSTER = 22, "module_no_cluster";
    }
}

flag_set! {
    /// Key-spec flags: how a command uses the keys one spec finds.
    KeySpecFlags {
        /// Read-write.
        RW = 0, "RW";
        /// Read-only.
        RO = 1, "RO";
        /// Overwrite.
        OW = 2, "OW";
        /// Remove.
        RM = 3, "RM";
        /// Reads or returns user data.
        ACCESS = 4, "access";
        /// Updates data.
        UPDATE = 5, "update";
        /// Adds data.
        INSERT = 6, "insert";
        /// Deletes data.
        DELETE = 7, "delete";
        /// Not a key but routed like one (shard channels of SPUBLISH/SSUBSCRIBE).
        NOT_KEY = 8, "not_key";
        /// May miss some keys; a native rule is needed for exact results.
        INCOMPLETE = 9, "incomplete";
        /// Flags depend on the arguments.
        VARIABLE_FLAGS = 10, "variable_flags";
    }
}

/// Where a key spec starts looking for keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At a fixed argument index.
    Index {
        /// Argument index (1 is the first argument after the name).
        pos: i64,
    },
    /// After a keyword, searched from `start_from` (negative: from the end, backwards).
    Keyword {
        /// The keyword, compared case-insensitively.
        keyword: Box<[u8]>,
        /// Search start; negative counts from the end and searches towards the front.
        start_from: i64,
    },
    /// Not describable; the command needs a native rule.
    Unknown,
}

/// How a key spec finds keys once it has a starting point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// A range of arguments.
    Range {
        /// Last key relative to the start; negative counts from the end of argv.
        last_key: i64,
        /// Distance between keys.
        key_step: i64,
        /// With `last_key == -1`: only `1/limit` of the remaining arguments are keys (0: all).
        limit: i64,
    },
    /// An argument holds the number of keys that follow.
    Keynum {
        /// Index of the count, relative to the start.
        keynum_idx: i64,
        /// Index of the first key, relative to the start.
        first_key: i64,
        /// Distance between keys.
        key_step: i64,
    },
    /// Not describable; the command needs a native rule.
    Unknown,
}

/// One key specification of a command (Redis 7 key-specs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// How the keys are used.
    pub flags: KeySpecFlags,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// Which arguments are keys.
    pub find_keys: FindKeys,
}

impl KeySpec {
    /// Whether the spec may not give exact keys on its own, so the command needs a native rule.
    fn is_incomplete(&self) -> bool {
        self.flags.contains(KeySpecFlags::INCOMPLETE)
            || self.begin_search == BeginSearch::Unknown
            || self.find_keys == FindKeys::Unknown
    }
}

/// How a command's keys are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRule {
    /// Follow the key specs (`getKeysUsingKeySpecs`).
    Specs,
    /// `sortGetKeys`: argv\[1\] plus the last `STORE` destination.
    Sort,
    /// `sortROGetKeys`: argv\[1\].
    SortRo,
    /// `migrateGetKeys`: argv\[3\], or the arguments after `KEYS`.
    Migrate,
}

/// Everything the proxy knows about one command or subcommand.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Dense index in `0..table.len()`, unique across commands and subcommands, so callers
    /// can keep per-command arrays (for example metric handles) indexed by it.
    pub id: u16,
    /// Lowercase name; subcommands are `container|subcommand` (`object|encoding`).
    pub name: String,
    /// Redis arity: positive = exactly that many arguments including the name; negative = at
    /// least `-arity`.
    pub arity: i32,
    /// Command flags.
    pub flags: CommandFlags,
    /// The `request_policy:` tip (`all_shards`, `all_nodes`, `multi_shard`, `special`), if any.
    pub request_policy: Option<String>,
    /// The `response_policy:` tip (`agg_sum`, `all_succeeded`, `one_succeeded`, ...), if any.
    pub response_policy: Option<String>,
    /// Where the proxy sends it: derived once from the tips, flags and the proxy's overrides.
    pub route: Route,
    pub(crate) key_specs: Vec<KeySpec>,
    pub(crate) key_rule: KeyRule,
    /// Ids of this command's subcommands; empty for ordinary commands.
    subcommands: Vec<u16>,
}

impl CommandSpec {
    /// Whether `argc` arguments (name included) satisfy the arity, as Redis's
    /// `processCommand` checks it.
    pub fn check_arity(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity > 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// Appends the argv indices of `cmd`'s keys to `out`, in argument order with duplicates
    /// kept, as Redis Cluster routes the command (`getKeysFromCommandWithSpecs`, db.c).
    ///
    /// Shard channels (`not_key` specs of SPUBLISH/SSUBSCRIBE/SUNSUBSCRIBE) are included, since
    /// they are routed to a slot like keys. If any spec does not fit the arguments (bad key
    /// count, range out of bounds) no keys are appended at all: Redis finds none either, and the
    /// backend answers with the syntax error. SORT and SORT_RO (whose STORE spec is unknown)
    /// and MIGRATE with `KEYS` (an incomplete spec) use Redis's native rules instead.
    pub fn key_indices(&self, cmd: &Command, out: &mut Vec<usize>) {
        keys::key_indices(self, cmd, out);
    }

    /// The argv index of the command's only key, for commands whose specs say it always has
    /// exactly one, at a fixed place (GET, SET, HGET...): what [`CommandSpec::key_indices`]
    /// gives whenever the command has that many arguments, without building a list.
    pub fn single_key_index(&self) -> Option<usize> {
        match self.key_specs.as_slice() {
            [KeySpec {
                begin_search: BeginSearch::Index { pos },
                find_keys:
                    FindKeys::Range {
                        last_key: 0,
                        key_step,
                        ..
                    },
                flags,
            }] if !flags.contains(KeySpecFlags::INCOMPLETE) && *pos >= 1 && *key_step >= 1 => {
                usize::try_from(*pos).ok()
            }
            _ => None,
        }
    }

    /// The key specs as the server described them.
    pub fn key_specs(&self) -> &[KeySpec] {
        &self.key_specs
    }

    /// Whether this is a container command (OBJECT, CLIENT, CONFIG, ...).
    pub fn has_subcommands(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// Ids of the subcommands of a container command.
    pub fn subcommand_ids(&self) -> &[u16] {
        &self.subcommands
    }

    /// May modify the dataset: must go to a primary.
    pub fn is_write(&self) -> bool {
        self.flags.contains(CommandFlags::WRITE)
    }

    /// Does not write but may replicate (PUBLISH, EVAL, PFCOUNT): `CLIENT PAUSE WRITE`
    /// holds it like a write.
    pub fn may_replicate(&self) -> bool {
        self.flags.contains(CommandFlags::MAY_REPLICATE)
    }

    /// Never modifies the dataset.
    pub fn is_readonly(&self) -> bool {
        self.flags.contains(CommandFlags::READONLY)
    }

    /// May park the connection (BLPOP, XREAD BLOCK, WAIT, ...): needs a dedicated connection.
    pub fn is_blocking(&self) -> bool {
        self.flags.contains(CommandFlags::BLOCKING)
    }

    /// Pub/sub command.
    pub fn is_pubsub(&self) -> bool {
        self.flags.contains(CommandFlags::PUBSUB)
    }

    /// Administrative command.
    pub fn is_admin(&self) -> bool {
        self.flags.contains(CommandFlags::ADMIN)
    }

    /// Key positions depend on the arguments.
    pub fn has_movable_keys(&self) -> bool {
        self.flags.contains(CommandFlags::MOVABLEKEYS)
    }

    /// Refused inside MULTI.
    pub fn is_no_multi(&self) -> bool {
        self.flags.contains(CommandFlags::NO_MULTI)
    }
}

/// FNV-1a: command names are short and the table's keys are fixed server-provided names, so
/// a fast non-keyed hash is safe (client input only probes; it cannot shape the buckets).
#[derive(Default)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type NameMap = HashMap<Box<[u8]>, u16, BuildHasherDefault<NameHasher>>;

/// Every command and subcommand the cluster supports, by lowercase name.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    /// Indexed by `CommandSpec::id`.
    specs: Vec<CommandSpec>,
    by_name: NameMap,
}

impl CommandTable {
    /// Builds the table from the reply to `COMMAND` (RESP2 or RESP3).
    ///
    /// Entries from servers before Redis 7 (no key specs) get a spec from their legacy
    /// first/last/step triple, so simple commands still route.
    ///
    /// # Errors
    ///
    /// [`CommandError::MalformedReply`] when the reply is not an array of command entries
    /// with a name and arity; [`CommandError::TooManyCommands`] past `u16` ids.
    pub fn from_command_reply(reply: &Value) -> Result<CommandTable, CommandError> {
        let entries = reply
            .as_array()
            .ok_or_else(|| malformed("reply is not an array"))?;
        let mut table = CommandTable::default();
        for entry in entries {
            let Some(id) = table.add(entry)? else {
                continue;
            };
            let Some(subs) = entry.as_array().and_then(|e| e.get(9)) else {
                continue;
            };
            let subs = subs
                .as_array()
                .ok_or_else(|| malformed("subcommands is not an array"))?;
            for sub in subs {
                let sub_id = table.add(sub)?;
                if let (Some(sub_id), Some(parent)) = (sub_id, table.specs.get_mut(usize::from(id)))
                {
                    parent.subcommands.push(sub_id);
                }
            }
        }
        // Once per table: dispatch then reads a command's route by its spec, no name matching.
        for spec in &mut table.specs {
            spec.route = Route::of(spec);
        }
        Ok(table)
    }

    /// The table captured from redis-server 7.0.15, parsed on first use. The fallback when no
    /// backend answers `COMMAND`.
    pub fn builtin() -> &'static CommandTable {
        static BUILTIN: OnceLock<CommandTable> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            let parsed = Value::parse(REDIS7_COMMAND_REPLY)
                .map_err(|err| malformed(&err.to_string()))
                .and_then(|v| v.ok_or_else(|| malformed("truncated")))
                .and_then(|(reply, _)| CommandTable::from_command_reply(&reply));
            parsed.unwrap_or_else(|err| {
                // Guarded by a unit test; an empty table still lets the proxy start and ask
                // the cluster, it just cannot route before that.
                tracing::error!(error = %err, "built-in command table is unusable");
                CommandTable::default()
            })
        })
    }

    /// Number of commands plus subcommands; ids are `0..len()`.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The spec with id `id`.
    pub fn by_id(&self, id: u16) -> Option<&CommandSpec> {
        self.specs.get(usize::from(id))
    }

    /// All specs in id order.
    pub fn iter(&self) -> impl Iterator<Item = &CommandSpec> + '_ {
        self.specs.iter()
    }

    /// The spec named `name` exactly (lowercase; subcommands as `object|encoding`).
    pub fn get(&self, name: &str) -> Option<&CommandSpec> {
        self.get_bytes(name.as_bytes())
    }

    fn get_bytes(&self, name: &[u8]) -> Option<&CommandSpec> {
        let &id = self.by_name.get(name)?;
        self.specs.get(usize::from(id))
    }

    /// The spec for `cmd`, matching its name case-insensitively without allocating.
    ///
    /// For a container command whose `argv[1]` names a subcommand, the subcommand's spec;
    /// when `argv[1]` is missing or unknown, the container's own spec (check
    /// [`CommandSpec::has_subcommands`] to answer "unknown subcommand" like Redis).
    pub fn lookup(&self, cmd: &Command) -> Option<&CommandSpec> {
        let mut buf = [0u8; MAX_LOOKUP_NAME];
        let name_len = lower_into(&mut buf, 0, cmd.name())?;
        let spec = self.get_bytes(buf.get(..name_len)?)?;
        if spec.subcommands.is_empty() {
            return Some(spec);
        }
        let sub = cmd.arg(1).and_then(|sub| {
            let bar = buf.get_mut(name_len)?;
            *bar = b'|';
            let full_len = lower_into(&mut buf, name_len + 1, sub)?;
            self.get_bytes(buf.get(..full_len)?)
        });
        Some(sub.unwrap_or(spec))
    }

    /// Parses one `COMMAND` entry and adds it. Returns its id, or `None` for a duplicate name
    /// (ignored: the first definition wins).
    fn add(&mut self, entry: &Value) -> Result<Option<u16>, CommandError> {
        let mut spec = parse_entry(entry)?;
        if self.by_name.contains_key(spec.name.as_bytes()) {
            return Ok(None);
        }
        let id = u16::try_from(self.specs.len())
            .map_err(|_| CommandError::TooManyCommands(self.specs.len() + 1))?;
        spec.id = id;
        self.by_name
            .insert(spec.name.as_bytes().to_vec().into_boxed_slice(), id);
        self.specs.push(spec);
        Ok(Some(id))
    }
}

/// Lowercases `src` into `buf[at..]`, returning the end offset, or `None` if it does not fit.
fn lower_into(buf: &mut [u8], at: usize, src: &[u8]) -> Option<usize> {
    let end = at.checked_add(src.len())?;
    let dst = buf.get_mut(at..end)?;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_ascii_lowercase();
    }
    Some(end)
}

fn malformed(what: &str) -> CommandError {
    CommandError::MalformedReply(what.to_owned())
}

fn parse_entry(entry: &Value) -> Result<CommandSpec, CommandError> {
    let fields = entry
        .as_array()
        .ok_or_else(|| malformed("command entry is not an array"))?;
    let name = fields
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("command entry without a name"))?
        .to_ascii_lowercase();
    let arity = fields
        .get(1)
        .and_then(Value::as_int)
        .and_then(|a| i32::try_from(a).ok())
        .ok_or_else(|| CommandError::MalformedReply(format!("command {name} has no arity")))?;
    let mut flags = CommandFlags::empty();
    for flag in fields.get(2).and_then(Value::as_array).unwrap_or_default() {
        if let Some(flag) = flag.as_bytes().and_then(CommandFlags::from_name) {
            flags |= flag;
        }
    }
    let mut request_policy = None;
    let mut response_policy = None;
    for tip in fields.get(7).and_then(Value::as_array).unwrap_or_default() {
        let Some(tip) = tip.as_str() else { continue };
        if let Some(policy) = tip.strip_prefix("request_policy:") {
            request_policy = Some(policy.to_owned());
        } else if let Some(policy) = tip.strip_prefix("response_policy:") {
            response_policy = Some(policy.to_owned());
        }
    }
    let key_specs: Vec<KeySpec> = match fields.get(8) {
        Some(specs) => specs
            .as_array()
            .ok_or_else(|| CommandError::MalformedReply(format!("command {name}: key specs")))?
            .iter()
            .map(parse_key_spec)
            .collect(),
        None => legacy_key_spec(fields).into_iter().collect(),
    };
    let key_rule = native_rule(&name, &key_specs);
    Ok(CommandSpec {
        id: 0,
        name,
        arity,
        flags,
        request_policy,
        response_policy,
        route: Route::Keyed,
        key_specs,
        key_rule,
        subcommands: Vec::new(),
    })
}

/// Commands whose specs cannot give exact keys use the same native rules Redis falls back to.
fn native_rule(name: &str, specs: &[KeySpec]) -> KeyRule {
    if !specs.iter().any(KeySpec::is_incomplete) {
        return KeyRule::Specs;
    }
    match name {
        "sort" => KeyRule::Sort,
        "sort_ro" => KeyRule::SortRo,
        "migrate" => KeyRule::Migrate,
        _ => KeyRule::Specs,
    }
}

/// A range spec equivalent to a pre-7 entry's (first_key, last_key, step) triple.
fn legacy_key_spec(fields: &[Value]) -> Option<KeySpec> {
    let first = fields.get(3).and_then(Value::as_int)?;
    let last = fields.get(4).and_then(Value::as_int)?;
    let step = fields.get(5).and_then(Value::as_int)?;
    if first <= 0 {
        return None;
    }
    Some(KeySpec {
        flags: KeySpecFlags::empty(),
        begin_search: BeginSearch::Index { pos: first },
        find_keys: FindKeys::Range {
            last_key: if last < 0 { last } else { last - first },
            key_step: step,
            limit: 0,
        },
    })
}

/// Parses one key spec (a RESP3 map or its RESP2 flat-array form). Parts we cannot read
/// become `Unknown` rather than failing the whole table: one odd spec from a newer server
/// should not stop the proxy from learning every other command.
fn parse_key_spec(spec: &Value) -> KeySpec {
    let mut flags = KeySpecFlags::empty();
    let flag_values = spec
        .field("flags")
        .and_then(Value::as_array)
        .unwrap_or_default();
    for flag in flag_values {
        if let Some(flag) = flag.as_bytes().and_then(KeySpecFlags::from_name) {
            flags |= flag;
        }
    }
    KeySpec {
        flags,
        begin_search: spec
            .field("begin_search")
            .and_then(parse_begin_search)
            .unwrap_or(BeginSearch::Unknown),
        find_keys: spec
            .field("find_keys")
            .and_then(parse_find_keys)
            .unwrap_or(FindKeys::Unknown),
    }
}

fn parse_begin_search(v: &Value) -> Option<BeginSearch> {
    let spec = v.field("spec");
    let int = |name: &str| spec.and_then(|s| s.field(name)).and_then(Value::as_int);
    match v.field("type")?.as_str()? {
        "index" => Some(BeginSearch::Index { pos: int("index")? }),
        "keyword" => Some(BeginSearch::Keyword {
            keyword: spec?
                .field("keyword")?
                .as_bytes()?
                .to_vec()
                .into_boxed_slice(),
            start_from: int("startfrom")?,
        }),
        _ => Some(BeginSearch::Unknown),
    }
}

fn parse_find_keys(v: &Value) -> Option<FindKeys> {
    let spec = v.field("spec");
    let int = |name: &str| spec.and_then(|s| s.field(name)).and_then(Value::as_int);
    match v.field("type")?.as_str()? {
        "range" => Some(FindKeys::Range {
            last_key: int("lastkey")?,
            key_step: int("keystep")?,
            limit: int("limit")?,
        }),
        "keynum" => Some(FindKeys::Keynum {
            keynum_idx: int("keynumidx")?,
            first_key: int("firstkey")?,
            key_step: int("keystep")?,
        }),
        _ => Some(FindKeys::Unknown),
    }
}
