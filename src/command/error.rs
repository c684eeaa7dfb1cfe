//! Errors of the command layer: a `COMMAND` reply we cannot learn a table from, and the
//! client-facing rejections (unknown command, wrong arity) worded exactly as Redis 7 words them.

use crate::resp::Command;

use super::CommandSpec;

/// Redis truncates names and the argument preview to 128 bytes (`%.128s`).
const PREVIEW_BYTES: usize = 128;

/// Why a command table could not be built, or why a client command is refused before routing.
///
/// The client-facing variants display without the `ERR ` prefix; the caller writes
/// `-ERR {err}\r\n` (via `resp::encode::error`, which also strips CR/LF).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The `COMMAND` reply did not have the documented shape (backend's fault).
    #[error("malformed COMMAND reply: {0}")]
    MalformedReply(String),
    /// More commands than a `u16` id can number (backend's fault; no real server is near it).
    #[error("COMMAND reply lists {0} commands and subcommands, more than the table can index")]
    TooManyCommands(usize),
    /// The client named a command the table does not know (client's fault).
    #[error("unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// `argv[0]` as sent, truncated like Redis does.
        name: String,
        /// Redis's preview of the following arguments: `'a' 'b' `.
        args: String,
    },
    /// The client named a container command (OBJECT, CLIENT, ...) with an unknown subcommand.
    #[error("unknown subcommand '{subcommand}'. Try {container} HELP.")]
    UnknownSubcommand {
        /// `argv[1]` as sent, truncated.
        subcommand: String,
        /// The container's name in upper case.
        container: String,
    },
    /// The argument count does not match the command's arity (client's fault).
    #[error("wrong number of arguments for '{name}' command")]
    WrongArity {
        /// Full command name, `object|encoding` for subcommands (as Redis 7 reports it).
        name: String,
    },
}

impl CommandError {
    /// Redis's "unknown command" rejection for `cmd`.
    pub fn unknown_command(cmd: &Command) -> Self {
        let mut args = String::new();
        for arg in cmd.args().skip(1) {
            if args.len() >= PREVIEW_BYTES {
                break;
            }
            let room = PREVIEW_BYTES - args.len();
            args.push('\'');
            args.push_str(&truncated(arg, room));
            args.push_str("' ");
        }
        CommandError::UnknownCommand {
            name: truncated(cmd.name(), PREVIEW_BYTES),
            args,
        }
    }

    /// Redis's "unknown subcommand" rejection for a container command whose `argv[1]` is not
    /// one of its subcommands.
    pub fn unknown_subcommand(cmd: &Command) -> Self {
        CommandError::UnknownSubcommand {
            subcommand: truncated(cmd.arg(1).unwrap_or_default(), PREVIEW_BYTES),
            container: String::from_utf8_lossy(cmd.name()).to_uppercase(),
        }
    }

    /// Redis's arity rejection for `spec`.
    pub fn wrong_arity(spec: &CommandSpec) -> Self {
        CommandError::WrongArity {
            name: spec.name.clone(),
        }
    }
}

fn truncated(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes.get(..max).unwrap_or(bytes)).into_owned()
}
