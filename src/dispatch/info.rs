//! INFO as one server would answer it: the primaries' sections merged (counters and the
//! keyspace summed), plus the proxy's own `# Proxy` section.
//!
//! Sections that describe one process (`# Server`, `# Replication`, `# Persistence`,
//! `# Cluster`, ...) come from the first primary (but writes since the last save are summed
//! and a "loading"/"in progress" flag is set if any primary's is); in sections that describe
//! load and data (`# Clients`, `# Memory`, `# Stats`, `# CPU`, `# Keyspace`, `# Commandstats`,
//! `# Errorstats`) numeric values are summed over the primaries, including the numbers inside
//! `key=value,...` lists such as `db0:keys=10,expires=0,avg_ttl=0`; values that are not
//! numbers (human-readable sizes, ratios, per-call averages) are taken from the first primary.

const SUMMED_SECTIONS: &[&str] = &[
    "clients",
    "memory",
    "stats",
    "cpu",
    "keyspace",
    "commandstats",
    "errorstats",
];
/// Numbers that are averages or ratios: summing them would be wrong.
const NOT_SUMMED: &[&str] = &[
    "avg_ttl",
    "usec_per_call",
    "mem_fragmentation_ratio",
    "instantaneous_input_kbps",
    "instantaneous_output_kbps",
];

/// Fields of one-process sections (`# Persistence`) that one server would report for all of
/// its keys: writes since the last save add up; "in progress" flags are 1 if any node's is.
const SUMMED_ELSEWHERE: &[&str] = &["rdb_changes_since_last_save"];
const ANY_NODE: &[&str] = &[
    "loading",
    "async_loading",
    "rdb_bgsave_in_progress",
    "aof_rewrite_in_progress",
    "aof_rewrite_scheduled",
];

/// Counts of what the proxy loads on every primary (SCRIPT LOAD, FUNCTION LOAD): one server
/// holds each once, so the largest count is the one server's, not the sum.
const LARGEST: &[&str] = &[
    "number_of_cached_scripts",
    "number_of_functions",
    "number_of_libraries",
];

/// Merges the INFO texts of several nodes (the first one leads the order of sections and fields).
pub fn merge(texts: &[String]) -> String {
    let Some((first, rest)) = texts.split_first() else {
        return String::new();
    };
    let mut out = String::with_capacity(first.len());
    let mut section = String::new();
    let mut seen_keys: Vec<(String, String)> = Vec::new();
    for line in first.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("# ") {
            section = name.to_ascii_lowercase();
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            out.push_str(line);
            out.push_str("\r\n");
            continue;
        };
        seen_keys.push((section.clone(), key.to_string()));
        let merged = if SUMMED_SECTIONS.contains(&section.as_str())
            || SUMMED_ELSEWHERE.contains(&key)
            || ANY_NODE.contains(&key)
        {
            let others: Vec<Option<&str>> = rest.iter().map(|t| field(t, &section, key)).collect();
            sum_value(key, value, &others)
        } else {
            value.to_string()
        };
        out.push_str(key);
        out.push(':');
        out.push_str(&merged);
        out.push_str("\r\n");
    }
    // Lines only other nodes have: a database empty on the first primary, a command or an
    // error only another primary has seen.
    for text in rest {
        for section in SUMMED_SECTIONS {
            for (key, value) in section_fields(text, section) {
                if seen_keys.iter().any(|(s, k)| s == section && k == key) {
                    continue;
                }
                seen_keys.push((section.to_string(), key.to_string()));
                let others: Vec<Option<&str>> = texts
                    .iter()
                    .filter(|t| !std::ptr::eq(*t, text))
                    .map(|t| field(t, section, key))
                    .collect();
                let line = format!("{key}:{}\r\n", sum_value(key, value, &others));
                let at = section_end(&out, section).unwrap_or(out.len());
                out.insert_str(at, &line);
            }
        }
    }
    out
}

/// Where a line added to `section` of `out` goes: after its last field (`None`: no such
/// section in `out`).
fn section_end(out: &str, section: &str) -> Option<usize> {
    let mut offset = 0;
    let mut inside = false;
    for line in out.split_inclusive("\r\n") {
        let bare = line.trim_end_matches("\r\n");
        if let Some(name) = bare.strip_prefix("# ") {
            if inside {
                return Some(offset);
            }
            inside = name.eq_ignore_ascii_case(section);
        } else if inside && bare.is_empty() {
            return Some(offset);
        }
        offset += line.len();
    }
    inside.then_some(out.len())
}

fn section_fields<'a>(text: &'a str, wanted: &str) -> Vec<(&'a str, &'a str)> {
    let mut section = String::new();
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("# ") {
            section = name.to_ascii_lowercase();
        } else if section == wanted {
            if let Some(kv) = line.split_once(':') {
                fields.push(kv);
            }
        }
    }
    fields
}

fn field<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    section_fields(text, section)
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Sums `value` with the other nodes' values of the same field where that makes sense.
fn sum_value(key: &str, value: &str, others: &[Option<&str>]) -> String {
    if NOT_SUMMED.contains(&key) {
        return value.to_string();
    }
    if let Ok(mine) = value.parse::<i64>() {
        if LARGEST.contains(&key) || ANY_NODE.contains(&key) {
            let largest = others
                .iter()
                .flatten()
                .filter_map(|v| v.parse::<i64>().ok())
                .fold(mine, i64::max);
            return largest.to_string();
        }
        let total = others
            .iter()
            .flatten()
            .filter_map(|v| v.parse::<i64>().ok())
            .fold(mine, i64::saturating_add);
        return total.to_string();
    }
    if value.contains('=') {
        // `keys=10,expires=0,avg_ttl=0`: sum each numeric part.
        return value
            .split(',')
            .map(|part| {
                let Some((name, number)) = part.split_once('=') else {
                    return part.to_string();
                };
                match number.parse::<i64>() {
                    Ok(n) if !NOT_SUMMED.contains(&name) => {
                        let total = others
                            .iter()
                            .flatten()
                            .filter_map(|o| {
                                o.split(',')
                                    .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                            })
                            .filter_map(|v| v.parse::<i64>().ok())
                            .fold(n, i64::saturating_add);
                        format!("{name}={total}")
                    }
                    _ => part.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_load_and_data_keeps_identity() {
        let a = "# Server\r\nredis_version:7.0.15\r\ntcp_port:7000\r\n\r\n# Clients\r\nconnected_clients:3\r\n\r\n# Stats\r\ntotal_commands_processed:10\r\ninstantaneous_input_kbps:0.5\r\n\r\n# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=100\r\n";
        let b = "# Server\r\nredis_version:7.0.15\r\ntcp_port:7001\r\n\r\n# Clients\r\nconnected_clients:4\r\n\r\n# Stats\r\ntotal_commands_processed:32\r\ninstantaneous_input_kbps:0.7\r\n\r\n# Keyspace\r\ndb0:keys=7,expires=2,avg_ttl=300\r\n";
        let merged = merge(&[a.to_string(), b.to_string()]);
        assert!(merged.contains("tcp_port:7000\r\n"), "{merged}");
        assert!(merged.contains("connected_clients:7\r\n"), "{merged}");
        assert!(
            merged.contains("total_commands_processed:42\r\n"),
            "{merged}"
        );
        assert!(
            merged.contains("instantaneous_input_kbps:0.5\r\n"),
            "{merged}"
        );
        assert!(
            merged.contains("db0:keys=12,expires=3,avg_ttl=100\r\n"),
            "{merged}"
        );
    }

    #[test]
    fn scripts_loaded_everywhere_count_once() {
        let a = "# Memory\r\nused_memory_scripts:200\r\nnumber_of_cached_scripts:100\r\n";
        let b = "# Memory\r\nused_memory_scripts:300\r\nnumber_of_cached_scripts:101\r\n";
        let merged = merge(&[a.to_string(), b.to_string()]);
        assert!(
            merged.contains("number_of_cached_scripts:101\r\n"),
            "{merged}"
        );
        assert!(merged.contains("used_memory_scripts:500\r\n"), "{merged}");
    }

    #[test]
    fn keyspace_lines_of_other_nodes_are_added() {
        let a = "# Keyspace\r\n";
        let b = "# Keyspace\r\ndb0:keys=7,expires=0,avg_ttl=0\r\n";
        let merged = merge(&[a.to_string(), b.to_string()]);
        assert!(
            merged.contains("db0:keys=7,expires=0,avg_ttl=0\r\n"),
            "{merged}"
        );
    }

    /// An error or a command only another primary has seen still counts, in its section.
    #[test]
    fn stats_lines_only_other_nodes_have_are_added_to_their_section() {
        let a = "# Commandstats\r\ncmdstat_get:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\r\n# Errorstats\r\nerrorstat_ERR:count=1\r\n\r\n# Keyspace\r\n";
        let b = "# Commandstats\r\ncmdstat_xreadgroup:calls=1,usec=9,usec_per_call=9.00,rejected_calls=0,failed_calls=1\r\n\r\n# Errorstats\r\nerrorstat_ERR:count=2\r\nerrorstat_NOGROUP:count=1\r\n\r\n# Keyspace\r\n";
        let merged = merge(&[a.to_string(), b.to_string()]);
        let errorstats = merged
            .split("# Errorstats\r\n")
            .nth(1)
            .and_then(|rest| rest.split("\r\n\r\n").next())
            .unwrap_or_default();
        assert_eq!(
            errorstats, "errorstat_ERR:count=3\r\nerrorstat_NOGROUP:count=1",
            "{merged}"
        );
        assert!(
            merged.contains("# Commandstats\r\ncmdstat_get:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\ncmdstat_xreadgroup:calls=1,"),
            "{merged}"
        );
    }

    #[test]
    fn persistence_counts_writes_of_every_primary() {
        let a = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:5\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:100\r\n";
        let b = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:7\r\nrdb_bgsave_in_progress:1\r\nrdb_last_save_time:200\r\n";
        let merged = merge(&[a.to_string(), b.to_string()]);
        assert!(
            merged.contains("rdb_changes_since_last_save:12\r\n"),
            "{merged}"
        );
        assert!(merged.contains("rdb_bgsave_in_progress:1\r\n"), "{merged}");
        assert!(merged.contains("loading:0\r\n"), "{merged}");
        assert!(merged.contains("rdb_last_save_time:100\r\n"), "{merged}");
    }
}
