//! Running commands: `ip`, `bridge`, `ping`, `vxtap`. A failure panics with the full command
//! line, its exit status and its stderr, so a broken setup step says exactly what broke.
//! [`output`] is the variant for commands that are expected to fail.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The command line of `cmd`, environment overrides first, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| {
            value.map(|v| format!("{}={}", key.to_string_lossy(), v.to_string_lossy()))
        })
        .collect();
    words.push(cmd.get_program().to_string_lossy().into_owned());
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `cmd` to completion and returns its output, whatever its exit status.
///
/// # Panics
///
/// If the program cannot be started at all.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("cannot run `{}`: {err}", describe(cmd)))
}

/// Runs `cmd` and returns its stdout.
///
/// # Panics
///
/// If it cannot be started or exits unsuccessfully; the message holds the command line, the
/// status and stderr.
pub fn checked(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `program args...`, panicking on failure; returns stdout.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    checked(Command::new(program).args(args))
}

/// `program args...`, returning the output whatever the exit status.
pub fn try_run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    output(Command::new(program).args(args))
}

/// `ip args...`, panicking on failure; returns stdout.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> String {
    run("ip", args)
}
