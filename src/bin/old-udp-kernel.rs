//! `old-udp-kernel PROGRAM [ARGS...]`: runs PROGRAM as a kernel before Linux 4.18 would see
//! it, as far as UDP offloads go. A seccomp filter makes `setsockopt` and `getsockopt` of
//! `SOL_UDP` / `UDP_SEGMENT` (103) and `SOL_UDP` / `UDP_GRO` (104) fail with `ENOPROTOOPT`,
//! the answer of a kernel that does not know those options, and allows every other call;
//! then the helper execs PROGRAM, which inherits the filter (and `no_new_privs`), threads
//! included.
//!
//! The filter cannot reproduce the other half of an old kernel, which silently ignores a
//! `UDP_SEGMENT` control message on `sendmsg` (the message is behind a pointer a seccomp
//! filter cannot read), so tests check vxtap's own count of such sends instead.
//!
//! The filter is built in Rust with rust-vmm's `seccompiler`; this file has no unsafe code.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// `SOL_UDP`, the option level of both options.
const SOL_UDP: u64 = libc::SOL_UDP as u64;
/// The options an old kernel does not know: `UDP_SEGMENT` (4.18) and `UDP_GRO` (5.0).
const REFUSED_OPTIONS: [u64; 2] = [libc::UDP_SEGMENT as u64, libc::UDP_GRO as u64];

/// The seccomp program: `{set,get}sockopt(_, SOL_UDP, UDP_SEGMENT | UDP_GRO, ..)` fail
/// with `ENOPROTOOPT`; everything else is allowed.
fn old_kernel_filter() -> Result<BpfProgram, seccompiler::Error> {
    let option_rules = || -> Result<Vec<SeccompRule>, seccompiler::Error> {
        REFUSED_OPTIONS
            .iter()
            .map(|&option| {
                Ok(SeccompRule::new(vec![
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, SOL_UDP)?,
                    SeccompCondition::new(2, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, option)?,
                ])?)
            })
            .collect()
    };
    let rules = BTreeMap::from([
        (libc::SYS_setsockopt, option_rules()?),
        (libc::SYS_getsockopt, option_rules()?),
    ]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOPROTOOPT as u32),
        std::env::consts::ARCH.try_into()?,
    )?;
    Ok(filter.try_into()?)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: old-udp-kernel PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let filter = match old_kernel_filter() {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("old-udp-kernel: cannot build the seccomp filter: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = seccompiler::apply_filter(&filter) {
        eprintln!("old-udp-kernel: cannot install the seccomp filter: {e}");
        return ExitCode::FAILURE;
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!(
        "old-udp-kernel: cannot run {}: {err}",
        program.to_string_lossy()
    );
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_for_this_machine() {
        let filter = old_kernel_filter().unwrap();
        assert!(!filter.is_empty());
    }
}
