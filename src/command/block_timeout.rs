//! The timeout of a blocking command, and the same command with only the time it has left.
//!
//! A blocking command re-issued on another node (its primary failed over while it waited, or
//! its slot moved) must not wait its whole timeout again: a client that asked for `BLPOP k 5`
//! gets its answer within 5 s of sending it, wherever it ended up waiting.

use std::time::Duration;

use crate::resp::Command;

/// Where a blocking command carries its timeout, and in which unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeoutArg {
    /// Seconds, a decimal number (`BLPOP`, `BLMOVE`, `BZMPOP`, ...).
    Seconds(usize),
    /// Milliseconds, an integer (`XREAD BLOCK`, `XREADGROUP BLOCK`).
    Millis(usize),
}

/// The position and unit of `cmd`'s timeout argument; `None` for commands without one (or
/// `XREAD` without `BLOCK`, which does not block).
fn timeout_arg(cmd: &Command) -> Option<TimeoutArg> {
    let name = cmd.name().to_ascii_uppercase();
    let last = cmd.argc().checked_sub(1).filter(|&i| i > 0)?;
    match name.as_slice() {
        b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BZPOPMIN" | b"BZPOPMAX" => {
            Some(TimeoutArg::Seconds(last))
        }
        b"BLMPOP" | b"BZMPOP" if cmd.argc() > 1 => Some(TimeoutArg::Seconds(1)),
        b"XREAD" | b"XREADGROUP" => {
            // Options come before STREAMS; after it, every argument is a key or an id (a
            // stream may be named BLOCK).
            let block = (1..cmd.argc())
                .map_while(|i| cmd.arg(i).map(|a| (i, a)))
                .take_while(|(_, a)| !a.eq_ignore_ascii_case(b"STREAMS"))
                .find(|(_, a)| a.eq_ignore_ascii_case(b"BLOCK"))?;
            Some(TimeoutArg::Millis(block.0 + 1)).filter(|_| block.0 < last)
        }
        _ => None,
    }
}

/// A timeout argument in milliseconds (`0`: wait for ever), `None` if it does not parse (the
/// node answers its own error then).
fn parse_ms(arg: &[u8], unit: TimeoutArg) -> Option<u64> {
    let text = std::str::from_utf8(arg).ok()?;
    match unit {
        TimeoutArg::Millis(_) => text.parse::<u64>().ok(),
        TimeoutArg::Seconds(_) => {
            let seconds: f64 = text.parse().ok()?;
            (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1000.0).ceil() as u64)
        }
    }
}

/// `cmd` with its timeout lowered by `waited`, for sending it again elsewhere. A command that
/// waits for ever (timeout 0) or whose timeout does not parse is sent as it was; one whose
/// time is up waits 1 ms, so the node gives its own timeout reply (0 would mean for ever).
pub fn with_time_left(cmd: &Command, waited: Duration) -> Command {
    let Some(unit) = timeout_arg(cmd) else {
        return cmd.clone();
    };
    let (TimeoutArg::Seconds(i) | TimeoutArg::Millis(i)) = unit;
    let Some(timeout_ms) = cmd.arg(i).and_then(|a| parse_ms(a, unit)) else {
        return cmd.clone();
    };
    if timeout_ms == 0 {
        return cmd.clone();
    }
    let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    let left_ms = timeout_ms.saturating_sub(waited_ms).max(1);
    let left = match unit {
        TimeoutArg::Millis(_) => left_ms.to_string(),
        TimeoutArg::Seconds(_) => format!("{}.{:03}", left_ms / 1000, left_ms % 1000),
    };
    let args: Vec<&[u8]> = cmd
        .args()
        .enumerate()
        .map(|(n, a)| if n == i { left.as_bytes() } else { a })
        .collect();
    Command::from_args(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        let args: Vec<&str> = line.split(' ').collect();
        Command::from_args(&args)
    }

    fn text(cmd: &Command) -> String {
        cmd.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn time_left_replaces_only_the_timeout() {
        let cases = [
            ("BLPOP a b 5", 1200, "BLPOP a b 3.800"),
            ("brpop a 0.5", 100, "brpop a 0.400"),
            ("BRPOPLPUSH a b 10", 0, "BRPOPLPUSH a b 10.000"),
            (
                "BLMOVE a b LEFT RIGHT 2",
                2500,
                "BLMOVE a b LEFT RIGHT 0.001",
            ),
            ("BZPOPMIN z 3", 1000, "BZPOPMIN z 2.000"),
            (
                "BLMPOP 4 2 a b LEFT COUNT 2",
                1000,
                "BLMPOP 3.000 2 a b LEFT COUNT 2",
            ),
            ("BZMPOP 1.5 1 z MIN", 400, "BZMPOP 1.100 1 z MIN"),
            (
                "XREAD BLOCK 3000 STREAMS s $",
                1000,
                "XREAD BLOCK 2000 STREAMS s $",
            ),
            (
                "XREADGROUP GROUP g c COUNT 1 BLOCK 500 STREAMS s >",
                600,
                "XREADGROUP GROUP g c COUNT 1 BLOCK 1 STREAMS s >",
            ),
            // Waits for ever: unchanged.
            ("BLPOP a 0", 5000, "BLPOP a 0"),
            (
                "XREAD BLOCK 0 STREAMS s $",
                5000,
                "XREAD BLOCK 0 STREAMS s $",
            ),
            // No BLOCK before STREAMS: a stream named BLOCK is a key, not the option.
            (
                "XREAD STREAMS BLOCK 5 0 0",
                1000,
                "XREAD STREAMS BLOCK 5 0 0",
            ),
            // The node's own error for a bad timeout.
            ("BLPOP a soon", 1000, "BLPOP a soon"),
            ("BLPOP a -1", 1000, "BLPOP a -1"),
            ("XREAD BLOCK", 1000, "XREAD BLOCK"),
            // Not a blocking command.
            ("GET a", 1000, "GET a"),
        ];
        for (before, waited_ms, after) in cases {
            let got = with_time_left(&cmd(before), Duration::from_millis(waited_ms));
            assert_eq!(text(&got), after, "{before} after {waited_ms} ms");
        }
    }
}
