//! Client authentication to the proxy: a `requirepass`-style password for the `default` user,
//! and ACL-style users from a file.
//!
//! Users file format (a subset of Redis's ACL file, one user per line, `#` comments):
//! ```text
//! user alice on >first-password >second-password ~* +@all
//! user bob on #<sha256 of the password, 64 hex digits>
//! user carol off >password
//! user default on nopass
//! ```
//! slotproxy authenticates; it does not enforce per-command or per-key permissions, so only
//! the all-allowing rules (`~*`, `&*`, `+@all`, `allkeys`, `allchannels`, `allcommands`) are
//! accepted: a narrower rule is refused at start-up rather than silently granted.
//!
//! Passwords are kept as SHA-256 digests and compared digest to digest, so a comparison's
//! time says nothing about the password, and no clear-text secret stays in memory longer
//! than parsing takes.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

type PasswordDigest = [u8; 32];

fn digest(password: &[u8]) -> PasswordDigest {
    Sha256::digest(password).into()
}

/// One user: enabled or not, and the passwords it accepts (any, with `nopass`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct User {
    enabled: bool,
    nopass: bool,
    passwords: Vec<PasswordDigest>,
}

impl User {
    fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let given = digest(password);
        // Every digest is compared, whichever matches.
        self.passwords
            .iter()
            .fold(false, |found, p| found | constant_time_eq(p, &given))
    }
}

fn constant_time_eq(a: &PasswordDigest, b: &PasswordDigest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who may connect. Without a password and a users file, every client is authenticated from
/// the start, as on a Redis without `requirepass`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    users: HashMap<String, User>,
}

/// The outcome of an `AUTH` or `HELLO ... AUTH`.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// Redis's `WRONGPASS`: wrong password, unknown or disabled user (not told apart).
    WrongPass,
    /// `AUTH password` while the default user needs no password (Redis's error).
    NoPasswordConfigured,
}

impl Users {
    /// Builds the users from `requirepass` and the text of a users file.
    pub fn new(requirepass: Option<&str>, users_file: Option<&str>) -> Result<Users, Vec<String>> {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        if let Some(text) = users_file {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match parse_user_line(line) {
                    Ok((name, user)) => {
                        if users.insert(name.clone(), user).is_some() {
                            problems
                                .push(format!("users_file line {}: user '{name}' again", n + 1));
                        }
                    }
                    Err(e) => problems.push(format!("users_file line {}: {e}", n + 1)),
                }
            }
        }
        if let Some(password) = requirepass {
            if users.contains_key("default") {
                problems.push(
                    "requirepass and a 'default' user in users_file: set the default user's password in one place".into(),
                );
            }
            users.insert(
                "default".to_string(),
                User {
                    enabled: true,
                    nopass: false,
                    passwords: vec![digest(password.as_bytes())],
                },
            );
        }
        if problems.is_empty() {
            Ok(Users { users })
        } else {
            Err(problems)
        }
    }

    /// Whether a new client must authenticate first: the default user needs a password (or
    /// is off), as Redis decides it.
    pub fn required(&self) -> bool {
        match self.users.get("default") {
            None => false,
            Some(default) => !(default.enabled && default.nopass),
        }
    }

    /// Whether a user of this name exists (`default` always does, as in Redis).
    pub fn exists(&self, name: &[u8]) -> bool {
        name == b"default" || std::str::from_utf8(name).is_ok_and(|n| self.users.contains_key(n))
    }

    /// Checks `AUTH [user] password`; no user means `default`.
    pub fn check(&self, user: Option<&[u8]>, password: &[u8]) -> AuthResult {
        let name = user.unwrap_or(b"default");
        let Some(found) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.users.get(n))
        else {
            if user.is_none() {
                // No `default` entry at all: it is the implicit nopass default user.
                return AuthResult::NoPasswordConfigured;
            }
            return AuthResult::WrongPass;
        };
        if user.is_none() && found.enabled && found.nopass {
            return AuthResult::NoPasswordConfigured;
        }
        if found.accepts(password) {
            AuthResult::Ok
        } else {
            AuthResult::WrongPass
        }
    }
}

/// Parses `user <name> [rules...]`.
fn parse_user_line(line: &str) -> Result<(String, User), String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("user") {
        return Err("expected 'user <name> <rules...>'".into());
    }
    let name = words.next().ok_or("a user needs a name")?.to_string();
    let mut user = User::default();
    for rule in words {
        match rule {
            "on" => user.enabled = true,
            "off" => user.enabled = false,
            "nopass" => {
                user.nopass = true;
                user.passwords.clear();
            }
            "resetpass" => {
                user.nopass = false;
                user.passwords.clear();
            }
            "~*" | "&*" | "+@all" | "allkeys" | "allchannels" | "allcommands" | "reset" => {}
            _ if rule.starts_with('>') => user.passwords.push(digest(&rule.as_bytes()[1..])),
            _ if rule.starts_with('#') => {
                let hex = &rule[1..];
                user.passwords.push(parse_digest(hex).ok_or_else(|| {
                    format!("user '{name}': '#' must be followed by 64 hex digits (a SHA-256)")
                })?);
            }
            _ => {
                // Never echo the rule: it may be a mistyped password.
                return Err(format!(
                    "user '{name}': unsupported rule (slotproxy authenticates but does not restrict commands, keys or channels; allowed: on, off, >password, #sha256, nopass, resetpass, ~*, &*, +@all, allkeys, allchannels, allcommands)"
                ));
            }
        }
    }
    Ok((name, user))
}

fn parse_digest(hex: &str) -> Option<PasswordDigest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_configuration_means_no_authentication() {
        let users = Users::new(None, None).unwrap();
        assert!(!users.required());
        assert_eq!(users.check(None, b"x"), AuthResult::NoPasswordConfigured);
        assert_eq!(users.check(Some(b"alice"), b"x"), AuthResult::WrongPass);
    }

    #[test]
    fn requirepass_protects_the_default_user() {
        let users = Users::new(Some("s3cret"), None).unwrap();
        assert!(users.required());
        assert_eq!(users.check(None, b"s3cret"), AuthResult::Ok);
        assert_eq!(users.check(Some(b"default"), b"s3cret"), AuthResult::Ok);
        assert_eq!(users.check(None, b"nope"), AuthResult::WrongPass);
    }

    #[test]
    fn users_file_rules() {
        let hash = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"
        let file = format!(
            "# comment\nuser alice on >pw1 >pw2 ~* +@all\nuser bob on #{hash}\nuser carol off >pw\nuser default on nopass\n"
        );
        let users = Users::new(None, Some(&file)).unwrap();
        assert!(!users.required());
        assert_eq!(users.check(Some(b"alice"), b"pw2"), AuthResult::Ok);
        assert_eq!(users.check(Some(b"alice"), b"pw3"), AuthResult::WrongPass);
        assert_eq!(users.check(Some(b"bob"), b"secret"), AuthResult::Ok);
        assert_eq!(users.check(Some(b"carol"), b"pw"), AuthResult::WrongPass);
        assert_eq!(users.check(None, b"x"), AuthResult::NoPasswordConfigured);
        let problems = Users::new(
            Some("p"),
            Some("user default on >x\nuser dave on +get\nuser eve on #abc\nnonsense"),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("+get")), "{problems:?}");
    }
}
