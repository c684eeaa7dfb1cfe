//! What no client may change through the proxy, even with `--admin-commands`: the settings
//! and the user that the proxy's own connections to the nodes depend on. A client that set
//! `requirepass`, moved a node's port or changed the proxy's user would cut every other
//! client off (new connections would fail to authenticate or to connect), which one Redis
//! server could never do to the proxy's clients.

use super::error::ProxyError;
use crate::resp::Command;

/// `CONFIG SET` parameters the proxy's connections to the nodes (and the cluster's own links)
/// depend on.
const PROTECTED_SETTINGS: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "port",
    "tls-port",
    "bind",
    "bind-source-addr",
    "unixsocket",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-tls-port",
    "cluster-announce-bus-port",
    "cluster-announce-hostname",
    "cluster-preferred-endpoint-type",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-ca-cert-dir",
    "tls-auth-clients",
];

/// The refusal for `cmd` (table name `name`) when it would change what the proxy's own node
/// connections rely on; `proxy_user` is the user they authenticate as (`default` when none
/// is configured).
pub fn refusal(name: &str, cmd: &Command, proxy_user: &str) -> Option<ProxyError> {
    match name {
        "config|set" => cmd
            .args()
            .skip(2)
            .step_by(2)
            .find(|p| {
                PROTECTED_SETTINGS
                    .iter()
                    .any(|s| p.eq_ignore_ascii_case(s.as_bytes()))
            })
            .map(|p| {
                ProxyError::proxy_policy(format!(
                    "ERR slotproxy: CONFIG SET {} is refused: slotproxy's own connections to the nodes depend on it",
                    String::from_utf8_lossy(p).to_lowercase()
                ))
            }),
        "acl|setuser" | "acl|deluser" => {
            let names = if name == "acl|setuser" {
                cmd.args().skip(2).take(1).collect::<Vec<_>>()
            } else {
                cmd.args().skip(2).collect()
            };
            names
                .into_iter()
                .any(|u| u == proxy_user.as_bytes())
                .then(|| {
                    ProxyError::proxy_policy(format!(
                        "ERR slotproxy: {} {proxy_user} is refused: it is the user slotproxy's own connections to the nodes authenticate as",
                        name.replace('|', " ").to_uppercase()
                    ))
                })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(args: &[&str], user: &str) -> bool {
        let cmd = Command::from_args(args);
        let name = match (args[0].to_lowercase().as_str(), args.get(1)) {
            (first, Some(sub)) => format!("{first}|{}", sub.to_lowercase()),
            (first, None) => first.to_string(),
        };
        refusal(&name, &cmd, user).is_some()
    }

    #[test]
    fn only_what_the_proxys_connections_depend_on_is_refused() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["CONFIG", "SET", "maxmemory", "0"], "default", false),
            (&["CONFIG", "SET", "requirepass", "x"], "default", true),
            (
                &["CONFIG", "SET", "maxmemory", "0", "REQUIREPASS", "x"],
                "default",
                true,
            ),
            // A value that happens to be a protected name is not a parameter.
            (
                &["CONFIG", "SET", "notify-keyspace-events", "port"],
                "default",
                false,
            ),
            (&["CONFIG", "SET", "port", "7001"], "default", true),
            (&["ACL", "SETUSER", "default", "off"], "default", true),
            (&["ACL", "SETUSER", "alice", "on", ">p"], "default", false),
            (&["ACL", "SETUSER", "default", "off"], "proxy", false),
            (&["ACL", "SETUSER", "proxy", "resetpass"], "proxy", true),
            (&["ACL", "DELUSER", "alice", "proxy"], "proxy", true),
            (&["ACL", "DELUSER", "alice"], "proxy", false),
            (&["CONFIG", "RESETSTAT"], "default", false),
        ];
        for (args, user, want) in cases {
            assert_eq!(refused(args, user), *want, "{args:?} as {user}");
        }
    }
}
