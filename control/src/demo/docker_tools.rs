//! What the Docker demo needs on the machine, found before anything is made: dockerd and
//! the `docker` CLI (Debian's docker.io), `unshare`, `tar`, and a statically linked busybox
//! (Debian's busybox-static); and the `busybox` image built from that busybox for
//! `docker import`, as the Docker test harness builds its own.
//!
//! This module reads the machine and writes only under the directory it is given.

use super::cmd::{self, Limits};
use super::error::DemoError;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

/// The tag of the image the demo's containers run, as in the commands.
pub(crate) const IMAGE: &str = "busybox";

/// Absolute paths of what the Docker demo needs beyond the plain demo's tools.
#[derive(Debug, Clone)]
pub(crate) struct DockerTools {
    /// Docker's daemon.
    pub(crate) dockerd: PathBuf,
    /// Docker's CLI.
    pub(crate) docker: PathBuf,
    /// util-linux's `unshare`, for the private mount namespace.
    pub(crate) unshare: PathBuf,
    /// `tar`, to pack the image's root file system for `docker import`.
    tar: PathBuf,
    /// A statically linked busybox, the whole of the image.
    pub(crate) busybox: PathBuf,
}

/// Finds what the engines need, or names the first thing missing and its Debian package.
///
/// # Errors
///
/// `Prerequisite` for a missing program or a busybox that is not statically linked.
pub(crate) fn prerequisites() -> Result<DockerTools, DemoError> {
    let find = |name: &str, hint: &'static str| {
        cmd::find_program(name).ok_or_else(|| DemoError::Prerequisite {
            what: format!("the `{name}` command is not installed"),
            hint,
        })
    };
    const DOCKER_IO: &str = "apt-get install docker.io (dockerd, docker, containerd, runc)";
    let dockerd = find("dockerd", DOCKER_IO)?;
    let docker = find("docker", DOCKER_IO)?;
    // dockerd starts these by name; they come with docker.io.
    find("containerd", DOCKER_IO)?;
    find("runc", DOCKER_IO)?;
    let unshare = find("unshare", "apt-get install util-linux")?;
    let tar = find("tar", "apt-get install tar")?;
    let busybox = find(
        "busybox",
        "apt-get install busybox-static (the containers' image is built from it)",
    )?;
    let elf = std::fs::read(&busybox).map_err(DemoError::io("reading", &busybox))?;
    if needs_interpreter(&elf) {
        return Err(DemoError::Prerequisite {
            what: format!("{} is dynamically linked", busybox.display()),
            hint: "the image holds no libc: apt-get install busybox-static (it replaces busybox)",
        });
    }
    Ok(DockerTools {
        dockerd,
        docker,
        unshare,
        tar,
        busybox,
    })
}

/// Whether `elf` is a 64-bit little-endian ELF file with a `PT_INTERP` program header,
/// i.e. a dynamically linked program. Anything else (another format, a truncated file)
/// counts as not needing one: only a clear yes stops the demo.
fn needs_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(offset), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).any(|i| {
        let at = offset.saturating_add(i.saturating_mul(size));
        elf.get(at..at.saturating_add(4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .is_some_and(|b| u32::from_le_bytes(b) == PT_INTERP)
    })
}

/// Builds the image's root file system under `dir` (busybox, a link in `/bin` for each of
/// its applets, `/etc/passwd` and `/etc/group` for root) and packs it for `docker import`;
/// returns the tar file. Its default command, `sh`, is set at import, as in Docker Hub's
/// busybox.
///
/// # Errors
///
/// A file cannot be written, `busybox --list` or `tar` fails, or an interrupt.
pub(crate) fn busybox_tar(
    dir: &Path,
    tools: &DockerTools,
    interrupt: &AtomicBool,
) -> Result<PathBuf, DemoError> {
    let rootfs = dir.join("rootfs");
    for sub in ["bin", "etc", "root", "tmp", "var", "proc", "sys", "dev"] {
        let path = rootfs.join(sub);
        std::fs::create_dir_all(&path).map_err(DemoError::io("creating", &path))?;
    }
    let binary = rootfs.join("bin/busybox");
    std::fs::copy(&tools.busybox, &binary).map_err(DemoError::io("copying", &tools.busybox))?;
    let limits = Limits::interruptible(interrupt, 10);
    let applets = cmd::checked(Command::new(&tools.busybox).arg("--list"), limits)?;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = rootfs.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(DemoError::io("linking", &link))?;
    }
    for (name, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
    ] {
        let path = rootfs.join(name);
        std::fs::write(&path, text).map_err(DemoError::io("writing", &path))?;
    }
    let tar = dir.join("rootfs.tar");
    cmd::checked(
        Command::new(&tools.tar)
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        limits,
    )?;
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header with `types` as its program headers' types.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56 * types.len()];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        let count = u16::try_from(types.len()).unwrap();
        bytes[0x38..0x3a].copy_from_slice(&count.to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            bytes[64 + 56 * i..68 + 56 * i].copy_from_slice(&t.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn tells_dynamic_programs_from_static_ones() {
        // PT_PHDR, PT_INTERP, PT_LOAD: dynamic.
        assert!(needs_interpreter(&elf(&[6, 3, 1])));
        // PT_LOAD, PT_NOTE, PT_GNU_STACK: static.
        assert!(!needs_interpreter(&elf(&[1, 4, 0x6474_e551])));
        // Not ELF, 32-bit, truncated headers: not a clear yes.
        assert!(!needs_interpreter(b"#!/bin/sh\n"));
        let mut class32 = elf(&[3]);
        class32[4] = 1;
        assert!(!needs_interpreter(&class32));
        let truncated = elf(&[1, 3]);
        assert!(!needs_interpreter(&truncated[..64 + 56]));
        assert!(!needs_interpreter(&[]));
    }

    #[test]
    #[cfg(all(
        target_env = "gnu",
        target_pointer_width = "64",
        target_endian = "little"
    ))]
    fn this_machine_agrees_where_it_can() {
        // The test binary itself is dynamically linked on every target the demo runs on.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(needs_interpreter(&me));
    }
}
