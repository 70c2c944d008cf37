//! The conventions every teredo-lab command line follows, checked in one place.

/// Panics unless `command` is consistent (clap's [`clap::Command::debug_assert`]) and every
/// flag has a doc comment (its `--help`) and an environment fallback. Meant for a binary's
/// unit tests, like `debug_assert` itself.
pub fn assert_conventions(command: clap::Command) {
    command.clone().debug_assert();
    for arg in command.get_arguments() {
        if arg.get_id() == "help" || arg.get_id() == "version" {
            continue;
        }
        assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        assert!(
            arg.get_env().is_some(),
            "--{} has no env fallback",
            arg.get_id()
        );
    }
}

/// Parses `args` as `bin`'s command line (the binary's name first, as the shell passes it).
pub fn try_parse<P: clap::Parser>(bin: &str, args: &[&str]) -> Result<P, clap::Error> {
    P::try_parse_from(std::iter::once(bin).chain(args.iter().copied()))
}

/// Serialises the tests that parse a command line: one of them sets the environment
/// variables a parse reads ([`parse_with_env`]). Every such test holds this while it parses.
pub fn env_lock() -> std::sync::MutexGuard<'static, ()> {
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ENV.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses each of `command_lines` as `bin`'s with the environment variables `vars` set, and
/// removes them again before returning (or failing). Hold [`env_lock`] around it.
pub fn parse_with_env<P: clap::Parser>(
    bin: &str,
    vars: &[(&str, &str)],
    command_lines: &[&[&str]],
) -> Vec<Result<P, clap::Error>> {
    // SAFETY (edition 2024 wording): the callers hold `env_lock`, and no other test reads
    // these variables.
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let parsed = command_lines.iter().map(|a| try_parse(bin, a)).collect();
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    parsed
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::assert_conventions;

    #[test]
    fn documented_flags_with_env_pass() {
        assert_conventions(
            Command::new("t").arg(Arg::new("port").long("port").help("Port.").env("T_PORT")),
        );
    }

    #[test]
    #[should_panic(expected = "--port has no env fallback")]
    fn a_flag_without_env_fails() {
        assert_conventions(Command::new("t").arg(Arg::new("port").long("port").help("Port.")));
    }

    #[test]
    #[should_panic(expected = "--port has no help")]
    fn a_flag_without_help_fails() {
        assert_conventions(Command::new("t").arg(Arg::new("port").long("port").env("T_PORT")));
    }
}
