//! Redis's glob matching (`stringmatchlen` in Redis's `util.c`), byte for byte: `*`, `?`,
//! `[...]` with ranges and `[^...]`, `\` escapes, case-sensitive. Used where the proxy answers
//! for patterns itself (PUBLISH's count of pattern subscribers, `PUBSUB CHANNELS pattern`), so
//! it must agree with the server on every edge: an unterminated `[`, a reversed range `[z-a]`,
//! a trailing `\`. General glob crates follow other rules (path separators, `[!...]`).

/// How deep `*` may recurse before a pattern is declared not to match (Redis's own guard
/// against abusive patterns).
const MAX_NESTING: u32 = 1000;

/// Whether `string` matches the Redis glob `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_at(pattern, string, &mut skip_longer, 0)
}

/// The byte at `i`, or 0 past the end (Redis reads the terminating NUL of its strings in the
/// same places).
fn at(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}

fn match_at(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match at(pattern, p) {
            b'*' => {
                while p < pattern.len() && at(pattern, p + 1) == b'*' {
                    p += 1;
                }
                if pattern.len() - p == 1 {
                    return true;
                }
                while s < string.len() {
                    if match_at(&pattern[p + 1..], &string[s..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                // The rest of the pattern matches nowhere in the rest of the string: an
                // earlier `*` taking more would not help either.
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let c = at(string, s);
                let mut matched = false;
                loop {
                    let left = pattern.len().saturating_sub(p);
                    if at(pattern, p) == b'\\' && left >= 2 {
                        p += 1;
                        if at(pattern, p) == c {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if left == 0 {
                        // Unterminated class: step back so the common advance below ends it.
                        p -= 1;
                        break;
                    } else if left >= 3 && at(pattern, p + 1) == b'-' {
                        let (mut start, mut end) = (at(pattern, p), at(pattern, p + 2));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        if (start..=end).contains(&c) {
                            matched = true;
                        }
                    } else if at(pattern, p) == c {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            b'\\' => {
                if pattern.len() - p >= 2 {
                    p += 1;
                }
                if at(pattern, p) != at(string, s) {
                    return false;
                }
                s += 1;
            }
            literal => {
                if literal != at(string, s) {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pattern, p) == b'*' && p < pattern.len() {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected results are Redis 7.0's (`PUBSUB CHANNELS`/`KEYS` with these patterns).
    #[test]
    fn redis_glob_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", false), // Redis: no byte for `*` to stand on
            ("**", "", false),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("foo", "foo", true),
            ("foo", "Foo", false),
            ("foo", "foox", false),
            ("f?o", "foo", true),
            ("f?o", "fo", false),
            ("?", "", false),
            ("foo*", "foo", true),
            ("foo*", "foobar", true),
            ("*bar", "foobar", true),
            ("*bar", "foobaz", false),
            ("f*o*r", "foobar", true),
            ("f**r", "fr", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYd", false),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h[b-a]llo", "hallo", true), // a reversed range is swapped
            ("[a-]", "-", false),         // the range `]`..`a` (swapped): `-` is outside
            ("[a-]", "]", true),          // `]`..`a`, swapped
            ("[\\]]", "]", true),
            ("[\\-]", "-", true),
            ("[]", "]", false),
            ("[abc", "a", true), // unterminated class: ends with the pattern
            ("[abc", "d", false),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("\\?x", "?x", true),
            ("a\\", "a\\", true), // a trailing backslash is itself
            ("ch*", "ch", true),
            ("ch*", "c", false),
            ("news.*", "news.tech", true),
            ("news.*", "news", false),
            ("*.tech", "news.tech", true),
            ("__key*__:*", "__keyspace@0__:foo", true),
        ];
        for (pattern, string, want) in cases {
            assert_eq!(
                matches(pattern.as_bytes(), string.as_bytes()),
                *want,
                "{pattern:?} against {string:?}"
            );
        }
    }

    #[test]
    fn abusive_patterns_end() {
        let pattern = "a*".repeat(2000) + "b";
        assert!(!matches(pattern.as_bytes(), "a".repeat(4000).as_bytes()));
    }
}
