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
