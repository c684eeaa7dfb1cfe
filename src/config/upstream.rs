//! Seed node URLs, parsed once when the configuration is read.

use serde::Serialize;

use super::Secret;

/// A seed node parsed from a `redis://` or `rediss://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// `host:port` as written (IPv6 hosts keep their brackets).
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `rediss://`: TLS to the cluster.
    pub tls: bool,
}

/// Parses every seed in `urls`, where an entry may also be a comma-separated list; the first
/// bad one is the error.
pub fn parse_upstreams(urls: &[String]) -> Result<Vec<Upstream>, String> {
    urls.iter()
        .flat_map(|u| u.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(parse_upstream)
        .collect()
}

/// Parses `redis://[user[:password]@]host:port` or `rediss://...` (TLS); a bare `host:port`
/// is accepted too. The user and password are percent-decoded, as in any URL, so a password
/// may hold `@`, `:` or `/` written as `%40`, `%3A`, `%2F`.
pub fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let (rest, tls) = split_scheme(url)?;
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let Some((host, port)) = hostport.rsplit_once(':') else {
        // Named by host and port only: the rest of the URL may hold a password.
        return Err(format!("'{hostport}': expected host:port"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "'{hostport}': expected host:port with a port from 1 to 65535"
        ));
    }
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => split_userinfo(userinfo, hostport)?,
    };
    Ok(Upstream {
        addr: hostport.to_string(),
        username,
        password,
        tls,
    })
}

/// The part after the scheme, and whether the scheme asks for TLS.
fn split_scheme(url: &str) -> Result<(&str, bool), String> {
    if let Some(rest) = url.strip_prefix("redis://") {
        Ok((rest, false))
    } else if let Some(rest) = url.strip_prefix("rediss://") {
        Ok((rest, true))
    } else if url.contains("://") {
        // Everything after the scheme may hold a password: name the scheme only.
        let scheme = url.split("://").next().unwrap_or_default();
        Err(format!(
            "'{scheme}://...': the scheme must be redis:// or rediss://"
        ))
    } else {
        Ok((url, false))
    }
}

/// `user`, `user:password` or `:password`, percent-decoded.
fn split_userinfo(
    userinfo: &str,
    hostport: &str,
) -> Result<(Option<String>, Option<Secret>), String> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    // The error names the node only: the undecodable part may be the password.
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| format!("'{hostport}': the user or password is not valid UTF-8"))
    };
    let username = match user {
        "" if password.is_some() => None,
        user => Some(decode(user)?),
    };
    let password = password.map(decode).transpose()?.map(Secret);
    Ok((username, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed<'a> = (&'a str, Option<&'a str>, Option<&'a str>, bool);

    #[test]
    fn urls() {
        let cases: &[(&str, Result<Parsed, &str>)] = &[
            (
                "redis://127.0.0.1:7000",
                Ok(("127.0.0.1:7000", None, None, false)),
            ),
            ("127.0.0.1:7000", Ok(("127.0.0.1:7000", None, None, false))),
            ("redis://h:1/", Ok(("h:1", None, None, false))),
            (
                "redis://alice:s3cret@host:7001",
                Ok(("host:7001", Some("alice"), Some("s3cret"), false)),
            ),
            (
                "redis://:pw@[::1]:7001",
                Ok(("[::1]:7001", None, Some("pw"), false)),
            ),
            ("redis://alice@h:1", Ok(("h:1", Some("alice"), None, false))),
            (
                "rediss://alice:pw@cache.example:6380",
                Ok(("cache.example:6380", Some("alice"), Some("pw"), true)),
            ),
            // Percent-encoded user and password, as any URL may carry them.
            (
                "redis://al%69ce:p%40ss%3Aw%2Fd@h:1",
                Ok(("h:1", Some("alice"), Some("p@ss:w/d"), false)),
            ),
            // A literal '@' in the password still works: the last '@' ends the user info.
            ("redis://:a@b@h:1", Ok(("h:1", None, Some("a@b"), false))),
            ("redis://host", Err("'host': expected host:port")),
            ("redis://:s3cret@host", Err("'host': expected host:port")),
            (
                "redis://h:0",
                Err("'h:0': expected host:port with a port from 1 to 65535"),
            ),
            (
                "redis://:7",
                Err("':7': expected host:port with a port from 1 to 65535"),
            ),
            (
                "redis://h:99999",
                Err("'h:99999': expected host:port with a port from 1 to 65535"),
            ),
            (
                "http://:s3cret@host:1",
                Err("'http://...': the scheme must be redis:// or rediss://"),
            ),
            (
                "redis://:%FF@h:1",
                Err("'h:1': the user or password is not valid UTF-8"),
            ),
        ];
        for (url, want) in cases {
            let got =
                parse_upstream(url).map(|u| (u.addr, u.username, u.password.map(|p| p.0), u.tls));
            let want = want
                .map(|(a, u, p, t)| (a.to_string(), u.map(String::from), p.map(String::from), t))
                .map_err(String::from);
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn lists_and_secrets() {
        let urls = vec!["redis://a:1, redis://b:2".to_string(), "c:3".into()];
        let seeds = parse_upstreams(&urls).unwrap();
        let addrs: Vec<&str> = seeds.iter().map(|s| s.addr.as_str()).collect();
        assert_eq!(addrs, ["a:1", "b:2", "c:3"]);
        assert!(parse_upstreams(&["a:1,nope".into()]).is_err());
        assert_eq!(parse_upstreams(&[" , ".into()]), Ok(vec![]));
        let seed = parse_upstream("redis://u:s3cret@h:1").unwrap();
        assert!(!format!("{seed:?}").contains("s3cret"));
    }
}
