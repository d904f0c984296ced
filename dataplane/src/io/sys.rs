//! The only place in vxtap with `unsafe`: thin, safe wrappers over the Linux syscalls the
//! I/O shell needs (setns, namespace checks, TAP and interface ioctls, read/writev,
//! recvmmsg/sendmmsg, setsockopt and peer credentials, loading the TAP's queue-steering eBPF
//! program).
//!
//! Every wrapper is safe to call with any arguments: each `unsafe` block states what the
//! kernel reads or writes through the pointers it is given and why they are valid for the
//! call. Requests that take a pointer are not passed around as raw numbers but as a closed
//! enum ([`IfreqRequest`]), so no safe caller can pair an ioctl with the wrong argument.
//! `recvmmsg`/`sendmmsg` scratch ([`RecvScratch`], [`SendQueue`]) owns its header arrays and
//! rebuilds every internal pointer right before each call from `Vec::as_mut_ptr`, so the
//! pointers the kernel sees are always fresh and derived from live allocations.
//!
//! This module never decides policy (which errors are fatal, what to retry beyond EINTR):
//! that belongs to `tap`, `udp` and `netns`. Errors come back as `std::io::Error`.

use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

/// Retries `f` while it fails with `EINTR`. The one place vxtap handles `EINTR`.
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Turns a `-1`-on-error return value into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like `cvt`, for calls that return a byte count.
fn cvt_len(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Moves the calling thread into the network namespace `fd` refers to.
pub(crate) fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    retry_eintr(|| {
        // SAFETY: setns takes two integers and reads no memory of ours; `fd` is open for
        // the duration of the call because we hold a borrow of it.
        cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })
    })?;
    Ok(())
}

/// Whether the file `fd` refers to lies on nsfs (`fstatfs(2)`; an `O_PATH` descriptor will
/// do, so the file need not be opened for reading to be checked).
pub(crate) fn fd_is_nsfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: `struct statfs` is plain C data (integers and arrays of them), for which
    // all-zero bytes are a valid value.
    let mut buf: libc::statfs = unsafe { mem::zeroed() };
    retry_eintr(|| {
        // SAFETY: `fd` is open for the call (we hold a borrow of it); `buf` is a live,
        // exclusively borrowed `struct statfs` the kernel fills and nothing else.
        cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut buf) })
    })?;
    Ok(buf.f_type == libc::NSFS_MAGIC)
}

/// The `CLONE_NEW*` type of the namespace the nsfs file `fd` refers to (`NS_GET_NSTYPE`).
pub(crate) fn namespace_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    retry_eintr(|| {
        // SAFETY: NS_GET_NSTYPE takes no argument and touches no memory of ours: the type
        // comes back as the return value. `fd` is open for the call because we borrow it.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) })
    })
}

/// `SO_PEERGROUPS` (Linux 4.13+): the supplementary groups the peer of the connected Unix
/// socket `socket` had when it connected.
const SO_PEERGROUPS: libc::c_int = libc::SO_PEERGROUPS;

/// The pid, uid and gid of the peer of the connected Unix socket `socket`, as the kernel
/// recorded them at `connect` (`SO_PEERCRED`). The pid is 0 when the peer lives in a pid
/// namespace ours cannot see, which is why this reads the raw `struct ucred` rather than a
/// type that forbids a zero pid.
pub(crate) fn peer_cred(socket: BorrowedFd<'_>) -> io::Result<(i32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let size = mem::size_of::<libc::ucred>();
    let len = get_socket_option(socket, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred)?;
    if len != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SO_PEERCRED returned {len} bytes, not {size}"),
        ));
    }
    Ok((cred.pid, cred.uid, cred.gid))
}

/// The supplementary groups of the peer of the connected Unix socket `socket`, as the kernel
/// recorded them at `connect` (`SO_PEERGROUPS`): unlike `/proc/PID/status`, they cannot
/// belong to another process that reused the peer's pid.
pub(crate) fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<libc::gid_t>> {
    const GID: usize = mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    // Twice at most: the first ERANGE says how much room the list needs.
    for _ in 0..2 {
        let mut len = libc::socklen_t::try_from(groups.len() * GID)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let ret = retry_eintr(|| {
            // SAFETY: `groups` is a live allocation of exactly `len` bytes the kernel may
            // write (gid_t is plain integer data); `len` is a live socklen_t it reads and
            // updates. `socket` is open for the call because we borrow it.
            cvt(unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            })
        });
        let len = len as usize;
        match ret {
            Ok(_) => {
                groups.truncate(len / GID);
                return Ok(groups);
            }
            Err(err) if err.raw_os_error() == Some(libc::ERANGE) && len > groups.len() * GID => {
                groups.resize(len.div_ceil(GID), 0);
            }
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

/// The ioctls that take a `struct ifreq *`, and only those.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IfreqRequest {
    /// Create or attach a TUN/TAP queue (`ifr_flags` in; the name may be rewritten).
    TunSetIff,
    /// Read the interface index (`ifr_ifindex` out).
    GetIndex,
    /// Set the MTU (`ifr_mtu` in).
    SetMtu,
    /// Set the transmit queue length (`ifr_qlen` in).
    SetTxQueueLen,
    /// Read the hardware address (`ifr_hwaddr` out).
    GetHwAddr,
}

impl IfreqRequest {
    fn code(self) -> libc::Ioctl {
        // The casts only matter on libcs whose `Ioctl` is `c_int`; the codes fit either way.
        #[allow(clippy::unnecessary_cast)]
        match self {
            IfreqRequest::TunSetIff => libc::TUNSETIFF as libc::Ioctl,
            IfreqRequest::GetIndex => libc::SIOCGIFINDEX as libc::Ioctl,
            IfreqRequest::SetMtu => libc::SIOCSIFMTU as libc::Ioctl,
            IfreqRequest::SetTxQueueLen => libc::SIOCSIFTXQLEN as libc::Ioctl,
            IfreqRequest::GetHwAddr => libc::SIOCGIFHWADDR as libc::Ioctl,
        }
    }
}

/// A zeroed `ifreq` carrying `name`, which must fit in `IFNAMSIZ` with its NUL.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name does not fit in IFNAMSIZ",
        ));
    }
    // SAFETY: `ifreq` is plain data: a `c_char` array and a union of integers, byte arrays,
    // `sockaddr`s and one pointer, for all of which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(request)
}

/// Issues one of the `ifreq` ioctls on `fd`.
fn ioctl_ifreq(
    fd: BorrowedFd<'_>,
    request: IfreqRequest,
    ifreq: &mut libc::ifreq,
) -> io::Result<()> {
    let code = request.code();
    let ifreq: *mut libc::ifreq = ifreq;
    retry_eintr(|| {
        // SAFETY: every `IfreqRequest` takes a `struct ifreq *` and reads or writes at most
        // `sizeof(struct ifreq)` bytes through it; `ifreq` comes from an exclusive reference
        // that outlives the call, and `fd` is borrowed, hence open.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), code, ifreq) })
    })?;
    Ok(())
}

/// `TUNSETIFF`: creates the TAP `name` or attaches another queue to it.
pub(crate) fn tun_set_iff(fd: BorrowedFd<'_>, name: &str, flags: libc::c_int) -> io::Result<()> {
    let mut request = ifreq(name)?;
    // `ifr_flags` is a short; every IFF_* flag the TUN driver knows fits in 16 bits.
    request.ifr_ifru.ifru_flags = flags as libc::c_short;
    ioctl_ifreq(fd, IfreqRequest::TunSetIff, &mut request)
}

/// An ioctl whose argument is a pointer to one `int` the kernel reads.
fn ioctl_int_in(fd: BorrowedFd<'_>, code: libc::Ioctl, value: libc::c_int) -> io::Result<()> {
    let value: *const libc::c_int = &value;
    retry_eintr(|| {
        // SAFETY: the callers below only pass requests that read one `int` through the
        // pointer (TUNSETVNETHDRSZ, TUNSETVNETLE, TUNSETSTEERINGEBPF); `value` lives on our
        // stack for the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), code, value) })
    })?;
    Ok(())
}

/// `TUNSETVNETHDRSZ`: the size of the virtio-net header in front of every frame.
pub(crate) fn tun_set_vnet_hdr_size(fd: BorrowedFd<'_>, size: libc::c_int) -> io::Result<()> {
    ioctl_int_in(fd, libc::TUNSETVNETHDRSZ, size)
}

/// `TUNSETVNETLE`: little-endian virtio-net header fields (a no-op on little-endian hosts).
pub(crate) fn tun_set_vnet_le(fd: BorrowedFd<'_>, little_endian: bool) -> io::Result<()> {
    ioctl_int_in(fd, libc::TUNSETVNETLE, libc::c_int::from(little_endian))
}

/// `TUNSETOFFLOAD`: the `TUN_F_*` offloads the reader of the TAP can handle.
pub(crate) fn tun_set_offload(fd: BorrowedFd<'_>, flags: libc::c_uint) -> io::Result<()> {
    let flags = libc::c_ulong::from(flags);
    retry_eintr(|| {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long), so no memory
        // of ours is read or written; `fd` is borrowed, hence open.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags) })
    })?;
    Ok(())
}

/// `TUNSETSTEERINGEBPF`: the eBPF program that picks the queue of every frame the TAP
/// transmits, in place of the kernel's flow table (`prog` -1 detaches it).
pub(crate) fn tun_set_steering_ebpf(fd: BorrowedFd<'_>, prog: libc::c_int) -> io::Result<()> {
    ioctl_int_in(fd, libc::TUNSETSTEERINGEBPF, prog)
}

/// `BPF_PROG_LOAD` command number of the `bpf` syscall.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_SOCKET_FILTER`: the program type tun runs for queue steering.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// The leading fields of `union bpf_attr` that `BPF_PROG_LOAD` reads (linux/bpf.h). The
/// kernel takes a shorter attribute and treats the fields it does not get as zero.
#[repr(C)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// Loads a socket-filter eBPF program made of `insns` (8-byte `struct bpf_insn`s). With
/// `log`, the verifier writes its report there (NUL-terminated), which is how a refusal can
/// be explained.
pub(crate) fn bpf_load_socket_filter(
    insns: &[[u8; 8]],
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"GPL\0";
    let insn_cnt =
        u32::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let (log_level, log_size, log_buf) = match log {
        Some(buf) if !buf.is_empty() => (
            1,
            u32::try_from(buf.len()).unwrap_or(u32::MAX),
            buf.as_mut_ptr() as u64,
        ),
        _ => (0, 0, 0),
    };
    let attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
    };
    let fd = retry_eintr(|| {
        // SAFETY: BPF_PROG_LOAD reads `size_of::<BpfProgLoadAttr>()` bytes of `attr`, which
        // lives on our stack for the call; through it, `insn_cnt` 8-byte instructions from
        // `insns` (a live slice of exactly that many), the NUL-terminated `LICENSE`, and it
        // writes at most `log_size` bytes to `log_buf`, a live exclusive slice of that length
        // (or nothing when `log_level` is 0). The result is a new fd or -1.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const BpfProgLoadAttr,
                mem::size_of::<BpfProgLoadAttr>(),
            )
        };
        cvt(libc::c_int::try_from(ret).unwrap_or(-1))
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bpf` syscall commands (linux/bpf.h) for maps.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
/// `BPF_F_NO_PREALLOC`: a hash map allocates entries as they come, not all up front.
pub(crate) const BPF_F_NO_PREALLOC: u32 = 1;

/// The fields of `union bpf_attr` that `BPF_MAP_CREATE` reads first; the rest are zero.
#[repr(C)]
struct BpfMapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// The fields of `union bpf_attr` that the `BPF_MAP_*_ELEM` commands read.
#[repr(C)]
struct BpfMapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Issues `bpf(cmd, attr, size_of::<A>())`.
///
/// # Safety
///
/// Every pointer carried in `attr` must be valid for what `cmd` reads or writes through it
/// for the duration of the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_int> {
    retry_eintr(|| {
        // SAFETY: the kernel reads `size_of::<A>()` bytes of `attr`, which lives for the
        // call; what it does through the pointers inside is the caller's promise.
        let ret =
            unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const A, mem::size_of::<A>()) };
        cvt(libc::c_int::try_from(ret).unwrap_or(-1))
    })
}

/// `BPF_MAP_CREATE`: a new map of `map_type` (`BPF_MAP_TYPE_*`).
pub(crate) fn bpf_map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> io::Result<OwnedFd> {
    let attr = BpfMapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    // SAFETY: BPF_MAP_CREATE reads only the integers in `attr`; no pointers.
    let fd = unsafe { bpf(BPF_MAP_CREATE, &attr) }?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_fd_u32(map: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(map.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// `BPF_MAP_UPDATE_ELEM`: sets `key` to `value` (`flags` 0: insert or replace). The slices
/// must be exactly the map's key and value sizes, which the caller knows from creating it.
pub(crate) fn bpf_map_update(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> io::Result<()> {
    let attr = BpfMapElemAttr {
        map_fd: map_fd_u32(map)?,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
    };
    // SAFETY: the kernel reads key_size bytes at `key` and value_size bytes at `value`; the
    // callers (the `filter` module) pass slices of exactly the sizes the map was created
    // with, live for the call. `map` is borrowed, hence open.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &attr) }?;
    Ok(())
}

/// `BPF_MAP_DELETE_ELEM`: removes `key`; `Ok(false)` if it was not there.
pub(crate) fn bpf_map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let attr = BpfMapElemAttr {
        map_fd: map_fd_u32(map)?,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: the kernel reads key_size bytes at `key`, a live slice of exactly that size
    // (see `bpf_map_update`). `map` is borrowed, hence open.
    match unsafe { bpf(BPF_MAP_DELETE_ELEM, &attr) } {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// `BPF_MAP_LOOKUP_ELEM`: copies the value of `key` into `value`; `Ok(false)` if absent.
pub(crate) fn bpf_map_lookup(
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
) -> io::Result<bool> {
    let attr = BpfMapElemAttr {
        map_fd: map_fd_u32(map)?,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the kernel reads key_size bytes at `key` and writes value_size bytes at
    // `value`, live slices of exactly those sizes (an exclusive one for `value`) for a map
    // that is not per-CPU (see `bpf_map_update`). `map` is borrowed, hence open.
    match unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &attr) } {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// `SO_ATTACH_BPF`: runs the socket-filter program `prog` on every packet `socket` receives,
/// which keeps the packet only if the program returns non-zero.
pub(crate) fn attach_socket_filter(socket: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    set_socket_option_int(
        socket,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_BPF,
        prog.as_raw_fd(),
    )
}

/// `SO_MEMINFO`'s `SK_MEMINFO_DROPS` (Linux 4.6+): every packet the socket dropped, for a
/// full receive buffer or its filter, the count `SO_RXQ_OVFL` reports with each datagram.
pub(crate) fn socket_drops(socket: BorrowedFd<'_>) -> io::Result<u32> {
    // SK_MEMINFO_VARS: the kernel writes at most this many, fewer if we ask for fewer.
    let mut meminfo = [0u32; 9];
    let len = get_socket_option(socket, libc::SOL_SOCKET, libc::SO_MEMINFO, &mut meminfo)?;
    let at = libc::SK_MEMINFO_DROPS as usize;
    if len < (at + 1) * mem::size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SO_MEMINFO returned {len} bytes, too few for SK_MEMINFO_DROPS"),
        ));
    }
    Ok(meminfo[at])
}

/// `SO_DETACH_BPF`: removes the socket's filter.
pub(crate) fn detach_socket_filter(socket: BorrowedFd<'_>) -> io::Result<()> {
    set_socket_option_int(socket, libc::SOL_SOCKET, libc::SO_DETACH_BPF, 0)
}

/// `SIOCGIFINDEX` on a socket: the index of `name` in the socket's namespace, `None` if
/// there is no such interface.
pub(crate) fn interface_index(socket: BorrowedFd<'_>, name: &str) -> io::Result<Option<u32>> {
    let mut request = ifreq(name)?;
    match ioctl_ifreq(socket, IfreqRequest::GetIndex, &mut request) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        Err(err) => return Err(err),
    }
    // SAFETY: SIOCGIFINDEX succeeded, so the kernel wrote `ifr_ifindex`; every bit pattern
    // is a valid `c_int` anyway, since the union started zeroed.
    let index = unsafe { request.ifr_ifru.ifru_ifindex };
    u32::try_from(index)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative interface index"))
}

/// `SIOCSIFMTU` on a socket.
pub(crate) fn set_mtu(socket: BorrowedFd<'_>, name: &str, mtu: u32) -> io::Result<()> {
    let mut request = ifreq(name)?;
    request.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU does not fit in an int"))?;
    ioctl_ifreq(socket, IfreqRequest::SetMtu, &mut request)
}

/// `SIOCSIFTXQLEN` on a socket.
pub(crate) fn set_tx_queue_len(socket: BorrowedFd<'_>, name: &str, len: u32) -> io::Result<()> {
    let mut request = ifreq(name)?;
    // `ifr_qlen` is the same `int` member as `ifr_ifindex` in the C union.
    request.ifr_ifru.ifru_ifindex = libc::c_int::try_from(len).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "queue length does not fit in an int",
        )
    })?;
    ioctl_ifreq(socket, IfreqRequest::SetTxQueueLen, &mut request)
}

/// `SIOCGIFHWADDR` on a socket: the interface's Ethernet address.
pub(crate) fn hardware_address(socket: BorrowedFd<'_>, name: &str) -> io::Result<[u8; 6]> {
    let mut request = ifreq(name)?;
    ioctl_ifreq(socket, IfreqRequest::GetHwAddr, &mut request)?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the kernel wrote `ifr_hwaddr`; a `sockaddr` is
    // integers and bytes, valid for any bit pattern, and the union started zeroed.
    let hwaddr = unsafe { request.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(hwaddr.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// One `read(2)`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: the kernel writes at most `buf.len()` bytes to `buf`, which is exclusively
        // borrowed for the call; `fd` is borrowed, hence open.
        cvt_len(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
    })
}

/// One `writev(2)`.
pub(crate) fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let count = libc::c_int::try_from(bufs.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many iovecs"))?;
    retry_eintr(|| {
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix, and each
        // one borrows its bytes for at least as long as `bufs`; the kernel only reads them.
        cvt_len(unsafe { libc::writev(fd.as_raw_fd(), bufs.as_ptr().cast(), count) })
    })
}

/// `setsockopt` with an `int` value.
pub(crate) fn set_socket_option_int(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let value_ptr: *const libc::c_int = &value;
    retry_eintr(|| {
        // SAFETY: the kernel reads `sizeof(int)` bytes from `value_ptr`, which points to a
        // live `c_int` on our stack; `socket` is borrowed, hence open.
        cvt(unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                value_ptr.cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
    })?;
    Ok(())
}

/// Option values any bytes of which are valid: plain integers and structs and arrays of them.
///
/// # Safety
///
/// Implementors must be plain old data: every bit pattern of `size_of::<Self>()` bytes is a
/// valid value.
unsafe trait PlainOption: Copy {}
// SAFETY: an integer.
unsafe impl PlainOption for libc::c_int {}
// SAFETY: three integers.
unsafe impl PlainOption for libc::ucred {}
// SAFETY: integers.
unsafe impl<const N: usize> PlainOption for [u32; N] {}

/// `getsockopt(level, name)` into `value`; returns the length the kernel reports, which may be
/// less than `value`'s size (the kernel writes at most that much).
fn get_socket_option<T: PlainOption>(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &mut T,
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let (value_ptr, len_ptr): (*mut T, *mut libc::socklen_t) = (value, &mut len);
    retry_eintr(|| {
        // SAFETY: the kernel writes at most `*len_ptr` (`size_of::<T>()`) bytes to
        // `value_ptr`, an exclusively borrowed `T` of which any bytes are valid
        // (`PlainOption`), and the length back to `len_ptr`, a live local; `socket` is
        // borrowed, hence open.
        cvt(unsafe { libc::getsockopt(socket.as_raw_fd(), level, name, value_ptr.cast(), len_ptr) })
    })?;
    Ok(len as usize)
}

/// `getsockopt` of an `int` option.
pub(crate) fn socket_option_int(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    get_socket_option(socket, level, name, &mut value)?;
    Ok(value)
}

/// Waits up to `timeout_ms` for `fd` to become readable (tests only: the runtime uses mio).
#[cfg(test)]
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ready = retry_eintr(|| {
        // SAFETY: `pollfd` is one live, exclusively borrowed `struct pollfd`, matching the
        // count of 1; the kernel writes only its `revents`.
        cvt(unsafe { libc::poll(&mut pollfd, 1, timeout_ms) })
    })?;
    Ok(ready > 0)
}

// ---- batched UDP -----------------------------------------------------------------------

/// Room for the control messages of one datagram, aligned for `cmsghdr`: on receive a
/// UDP_GRO and an SO_RXQ_OVFL (`CMSG_SPACE(4)` each) plus an IP_PKTINFO, with room for an
/// unexpected extra message; on send an IP_PKTINFO and a UDP_SEGMENT (`CMSG_SPACE(2)`).
/// A message that does not fit is cut by the kernel (`MSG_CTRUNC`) and lost.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct ControlBuf([u8; CONTROL_LEN]);

const CONTROL_LEN: usize = 128;

const _: () = assert!(mem::align_of::<ControlBuf>() >= mem::align_of::<libc::cmsghdr>());

/// `CMSG_SPACE(sizeof(u16))`: the control length of a UDP_SEGMENT message.
// SAFETY: CMSG_SPACE is pure arithmetic on its argument; it is `unsafe` only by libc's
// convention for the CMSG_* family.
const SEGMENT_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
/// `CMSG_LEN(sizeof(u16))`: the `cmsg_len` of a UDP_SEGMENT message.
// SAFETY: as above, pure arithmetic.
const SEGMENT_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as u32) } as usize;

/// `CMSG_SPACE(sizeof(in_pktinfo))`: the control length of an IP_PKTINFO message.
// SAFETY: as above, pure arithmetic.
const PKTINFO_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) } as usize;
/// `CMSG_LEN(sizeof(in_pktinfo))`: the `cmsg_len` of an IP_PKTINFO message.
// SAFETY: as above, pure arithmetic.
const PKTINFO_CMSG_LEN: usize =
    unsafe { libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) } as usize;

// A datagram may carry both a source address and a segment size.
const _: () = assert!(SEGMENT_CMSG_SPACE + PKTINFO_CMSG_SPACE <= mem::size_of::<ControlBuf>());

/// `CMSG_SPACE(sizeof(u32))`: the control length of a UDP_GRO or SO_RXQ_OVFL message.
// SAFETY: as above, pure arithmetic.
const U32_CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(mem::size_of::<u32>() as u32) } as usize;
/// `CMSG_LEN(sizeof(u32))`: the `cmsg_len` of a UDP_GRO or SO_RXQ_OVFL message.
// SAFETY: as above, pure arithmetic.
const U32_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(mem::size_of::<u32>() as u32) } as usize;

// A received datagram may carry a GRO segment size, the socket's drop count and (should
// IP_PKTINFO ever be turned on for receiving) its destination address.
const _: () = assert!(
    2 * U32_CMSG_SPACE + PKTINFO_CMSG_SPACE + U32_CMSG_SPACE <= mem::size_of::<ControlBuf>()
);

/// An all-zero `mmsghdr`: null pointers and zero lengths.
fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is plain data (integers and raw pointers, plus padding on some libcs)
    // for which all-zero bytes are valid: null pointers and zero lengths.
    unsafe { mem::zeroed() }
}

/// An all-zero `iovec`.
fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }
}

/// An all-zero `sockaddr_in`.
fn zeroed_sockaddr_in() -> libc::sockaddr_in {
    // SAFETY: `sockaddr_in` is integers and a byte array; all-zero is valid.
    unsafe { mem::zeroed() }
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    let mut raw = zeroed_sockaddr_in();
    raw.sin_family = libc::AF_INET as libc::sa_family_t;
    raw.sin_port = addr.port().to_be();
    raw.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    raw
}

fn socket_addr_v4(raw: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
        u16::from_be(raw.sin_port),
    )
}

/// What the kernel said about one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes written to the buffer (never more than the buffer).
    pub len: usize,
    /// The datagram was longer than the buffer (`MSG_TRUNC`); the tail is lost.
    pub truncated: bool,
    /// The sender, or `0.0.0.0:0` if the kernel gave no IPv4 address.
    pub source: SocketAddrV4,
    /// The UDP_GRO segment size, if the kernel coalesced several datagrams into this one.
    pub segment_size: Option<u16>,
    /// With SO_RXQ_OVFL on: the socket's running count of dropped datagrams (mostly a full
    /// receive buffer) when this one was queued, a `u32` that wraps. The kernel sends it
    /// only once the count is non-zero.
    pub drops: Option<u32>,
}

impl Received {
    /// A slot that received nothing.
    pub const EMPTY: Received = Received {
        len: 0,
        truncated: false,
        source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        segment_size: None,
        drops: None,
    };
}

/// The header arrays for `recvmmsg`, allocated once for `count` messages.
pub(crate) struct RecvScratch {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    controls: Vec<ControlBuf>,
}

// SAFETY: the raw pointers inside `headers` and `iovecs` are scratch: `recv` rewrites every
// one of them from buffers it borrows before the kernel sees them, and nothing dereferences
// them between calls, so moving the scratch to another thread shares nothing.
unsafe impl Send for RecvScratch {}

impl RecvScratch {
    /// Scratch for up to `count` datagrams per call.
    pub fn new(count: usize) -> RecvScratch {
        RecvScratch {
            headers: vec![zeroed_mmsghdr(); count],
            iovecs: vec![empty_iovec(); count],
            names: vec![zeroed_sockaddr_in(); count],
            controls: vec![ControlBuf([0; CONTROL_LEN]); count],
        }
    }

    /// One `recvmmsg(MSG_DONTWAIT)` into `buffers`, cut into `buf_size`-byte slots; fills
    /// `out[..n]` and returns `n`. At most `min(count, buffers.len() / buf_size, out.len())`
    /// datagrams are received. Allocates nothing.
    pub fn recv(
        &mut self,
        socket: BorrowedFd<'_>,
        buffers: &mut [u8],
        buf_size: usize,
        out: &mut [Received],
    ) -> io::Result<usize> {
        let slots = buffers.len().checked_div(buf_size).unwrap_or(0);
        let count = self.headers.len().min(slots).min(out.len());
        if count == 0 {
            return Ok(0);
        }
        // Each pointer is taken once from its allocation and offset from there, so the
        // pointers handed to the kernel are never invalidated by a later reborrow.
        let buffer_base = buffers.as_mut_ptr();
        for (i, iovec) in self.iovecs[..count].iter_mut().enumerate() {
            *iovec = libc::iovec {
                iov_base: buffer_base.wrapping_add(i * buf_size).cast(),
                iov_len: buf_size,
            };
        }
        let iovec_base = self.iovecs.as_mut_ptr();
        let name_base = self.names.as_mut_ptr();
        let control_base = self.controls.as_mut_ptr();
        for (i, header) in self.headers[..count].iter_mut().enumerate() {
            header.msg_len = 0;
            let msg = &mut header.msg_hdr;
            msg.msg_name = name_base.wrapping_add(i).cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = iovec_base.wrapping_add(i);
            msg.msg_iovlen = 1;
            msg.msg_control = control_base.wrapping_add(i).cast();
            msg.msg_controllen = mem::size_of::<ControlBuf>() as _;
            msg.msg_flags = 0;
        }
        let header_base = self.headers.as_mut_ptr();
        let received = retry_eintr(|| {
            // SAFETY: `header_base` points to `count` initialised `mmsghdr`s that we own
            // exclusively. Each names one `sockaddr_in` of ours (namelen = its size), one
            // iovec of ours covering `buf_size` bytes of `buffers` (slot `i`, in bounds
            // because `count <= buffers.len() / buf_size`), and one `ControlBuf` of ours
            // (controllen = its size). All of them are borrowed (`&mut self`, `buffers`) for
            // the whole call and the kernel writes only within those lengths. A null timeout
            // is allowed.
            cvt(unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    header_base,
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            })
        })?;
        let received = usize::try_from(received).unwrap_or(0).min(count);
        for (i, slot) in out[..received].iter_mut().enumerate() {
            let header = &self.headers[i];
            let msg = &header.msg_hdr;
            let source = if msg.msg_namelen as usize >= mem::size_of::<libc::sockaddr_in>()
                && i32::from(self.names[i].sin_family) == libc::AF_INET
            {
                socket_addr_v4(&self.names[i])
            } else {
                Received::EMPTY.source
            };
            let control = received_control(msg);
            *slot = Received {
                len: (header.msg_len as usize).min(buf_size),
                truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
                source,
                segment_size: control.segment_size,
                drops: control.drops,
            };
        }
        Ok(received)
    }
}

/// What the control messages of one received datagram said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReceivedControl {
    /// UDP_GRO: the size of the coalesced datagrams.
    segment_size: Option<u16>,
    /// SO_RXQ_OVFL: the socket's running drop count.
    drops: Option<u32>,
}

/// Reads the UDP_GRO and SO_RXQ_OVFL control messages of a `msghdr` that `recvmmsg` just
/// filled (or a test crafted), ignoring any other message.
fn received_control(msg: &libc::msghdr) -> ReceivedControl {
    let mut control = ReceivedControl::default();
    // SAFETY: `msg.msg_control` points to a `ControlBuf` of the scratch that is still
    // borrowed by our caller, and the kernel set `msg_controllen` to the bytes it wrote
    // there (never more than we offered). CMSG_FIRSTHDR/CMSG_NXTHDR stay within
    // `msg_controllen`, so every `cmsghdr` they return is readable; the data of each message
    // we read is one 4-byte integer, checked against `cmsg_len` before it is read.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = ptr::read_unaligned(cmsg);
            if header.cmsg_len as usize >= U32_CMSG_LEN {
                let data = libc::CMSG_DATA(cmsg);
                match (header.cmsg_level, header.cmsg_type) {
                    (libc::SOL_UDP, libc::UDP_GRO) => {
                        let size = ptr::read_unaligned(data.cast::<libc::c_int>());
                        control.segment_size = u16::try_from(size).ok();
                    }
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                        control.drops = Some(ptr::read_unaligned(data.cast::<u32>()));
                    }
                    _ => {}
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    control
}

/// IP_PKTINFO with its source address, a UDP_SEGMENT with its segment size, both, or none
/// (then `msg_control` is null).
fn set_send_control(
    msg: &mut libc::msghdr,
    control: *mut ControlBuf,
    source: Option<Ipv4Addr>,
    gso_size: Option<u16>,
) {
    let space =
        source.map_or(0, |_| PKTINFO_CMSG_SPACE) + gso_size.map_or(0, |_| SEGMENT_CMSG_SPACE);
    if space == 0 {
        msg.msg_control = ptr::null_mut();
        msg.msg_controllen = 0;
        return;
    }
    msg.msg_control = control.cast();
    msg.msg_controllen = space as _;
    // SAFETY: every caller passes a `control` that points to a live `ControlBuf` it owns
    // exclusively (`CONTROL_LEN` bytes, aligned for `cmsghdr`), and `msg_controllen` is the
    // sum of the CMSG_SPACE of the messages written, at most `CONTROL_LEN` (asserted at
    // compile time).
    // CMSG_FIRSTHDR/CMSG_NXTHDR therefore return headers inside that buffer with room for
    // their data, since each message is written within its own CMSG_SPACE and NXTHDR is taken
    // only after a header's `cmsg_len` is set.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        if let Some(source) = source {
            (*cmsg).cmsg_len = PKTINFO_CMSG_LEN as _;
            (*cmsg).cmsg_level = libc::IPPROTO_IP;
            (*cmsg).cmsg_type = libc::IP_PKTINFO;
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(source).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>(), info);
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        if let Some(size) = gso_size {
            (*cmsg).cmsg_len = SEGMENT_CMSG_LEN as _;
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
        }
    }
}

/// One `sendmsg(MSG_DONTWAIT)` of the concatenation of `parts` to `dst`, from `source` if
/// given, cut into `gso_size`-byte datagrams by the kernel if given (UDP_SEGMENT). Returns
/// the bytes sent. Allocates nothing.
pub(crate) fn send_to(
    socket: BorrowedFd<'_>,
    dst: SocketAddrV4,
    source: Option<Ipv4Addr>,
    parts: &[IoSlice<'_>],
    gso_size: Option<u16>,
) -> io::Result<usize> {
    let mut name = sockaddr_in(dst);
    let mut control = ControlBuf([0; CONTROL_LEN]);
    // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::addr_of_mut!(name).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std guarantees it); the kernel only
    // reads through a send iovec, `*mut` is what the C type says.
    msg.msg_iov = parts.as_ptr().cast_mut().cast();
    msg.msg_iovlen = parts.len() as _;
    set_send_control(&mut msg, ptr::addr_of_mut!(control), source, gso_size);
    retry_eintr(|| {
        // SAFETY: `msg` points to `name`, `control` and the iovecs of `parts`, all alive for
        // this call and sized as declared; the kernel only reads them.
        cvt_len(unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_DONTWAIT) })
    })
}

/// The most parts (iovecs) one queued datagram may have.
pub(crate) const MAX_PARTS: usize = 3;

/// One queued datagram: how many of its slot's iovecs are used, its GSO size, and the
/// local address to send from (IP_PKTINFO) if not the routing table's choice.
#[derive(Debug, Clone, Copy)]
struct Pending {
    parts: usize,
    gso_size: Option<u16>,
    source: Option<Ipv4Addr>,
}

/// A queue of datagrams for `sendmmsg`, allocated once for `capacity` messages.
///
/// Slot `i` owns `iovecs[i * MAX_PARTS..][..MAX_PARTS]`, `names[i]`, `controls[i]` and
/// `headers[i]`; slots `head..tail` are queued. The iovecs are filled by `push` from
/// `&'a [u8]` slices, so the queue cannot outlive the bytes it points to; the other
/// pointers are rebuilt by `send`.
pub(crate) struct SendQueue<'a> {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    controls: Vec<ControlBuf>,
    pending: Vec<Pending>,
    head: usize,
    tail: usize,
    _parts: PhantomData<&'a [u8]>,
}

// SAFETY: the iovecs of queued slots point into `&'a [u8]` slices, and `&[u8]` is `Send`
// (`[u8]` is `Sync`), so the queue is as sendable as the slices it stands for; iovecs of
// free slots are never read, and the pointers in `headers` are rebuilt by every `send`.
unsafe impl Send for SendQueue<'_> {}

impl<'a> SendQueue<'a> {
    /// An empty queue for up to `capacity` datagrams.
    pub fn new(capacity: usize) -> SendQueue<'a> {
        SendQueue {
            headers: vec![zeroed_mmsghdr(); capacity],
            iovecs: vec![empty_iovec(); capacity * MAX_PARTS],
            names: vec![zeroed_sockaddr_in(); capacity],
            controls: vec![ControlBuf([0; CONTROL_LEN]); capacity],
            pending: vec![
                Pending {
                    parts: 0,
                    gso_size: None,
                    source: None,
                };
                capacity
            ],
            head: 0,
            tail: 0,
            _parts: PhantomData,
        }
    }

    /// How many datagrams fit.
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Queues a datagram; `false` if the queue is full.
    ///
    /// # Panics
    ///
    /// If `parts` has more than `MAX_PARTS` slices.
    pub fn push(
        &mut self,
        source: Option<Ipv4Addr>,
        dst: SocketAddrV4,
        parts: &[&'a [u8]],
        gso_size: Option<u16>,
    ) -> bool {
        assert!(
            parts.len() <= MAX_PARTS,
            "a datagram has at most {MAX_PARTS} parts"
        );
        if self.tail == self.capacity() {
            if self.head == 0 {
                return false;
            }
            self.compact();
        }
        let slot = self.tail;
        let iovecs = &mut self.iovecs[slot * MAX_PARTS..][..MAX_PARTS];
        for (iovec, part) in iovecs.iter_mut().zip(parts) {
            // The kernel only reads through a send iovec; `*mut` is what the C type says.
            *iovec = libc::iovec {
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            };
        }
        self.names[slot] = sockaddr_in(dst);
        self.pending[slot] = Pending {
            parts: parts.len(),
            gso_size,
            source,
        };
        self.tail += 1;
        true
    }

    /// Moves the queued slots to the front.
    fn compact(&mut self) {
        let (head, tail) = (self.head, self.tail);
        self.iovecs
            .copy_within(head * MAX_PARTS..tail * MAX_PARTS, 0);
        self.names.copy_within(head..tail, 0);
        self.pending.copy_within(head..tail, 0);
        self.tail = tail - head;
        self.head = 0;
    }

    /// Forgets the first `n` queued datagrams (sent, or dropped after an error).
    pub fn advance(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.tail {
            self.clear();
        }
    }

    /// Bytes the kernel took (`msg_len`) for the first `n` queued datagrams, right after a
    /// `send` that reported them sent.
    pub fn sent_bytes(&self, n: usize) -> usize {
        let end = self.head + n.min(self.len());
        self.headers[self.head..end]
            .iter()
            .map(|h| h.msg_len as usize)
            .sum()
    }

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// The same allocations, empty, for slices of another lifetime.
    pub fn recycle<'b>(self) -> SendQueue<'b> {
        SendQueue {
            headers: self.headers,
            iovecs: self.iovecs,
            names: self.names,
            controls: self.controls,
            pending: self.pending,
            head: 0,
            tail: 0,
            _parts: PhantomData,
        }
    }

    /// One `sendmmsg(MSG_DONTWAIT)` of the queued datagrams, from the first. Returns how many
    /// the kernel took (it stops at the first that fails; that error is returned only when it
    /// is the very first datagram). Does not advance the queue. Allocates nothing.
    pub fn send(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        let (head, tail) = (self.head, self.tail);
        if head == tail {
            return Ok(0);
        }
        let iovec_base = self.iovecs.as_mut_ptr();
        let name_base = self.names.as_mut_ptr();
        let control_base = self.controls.as_mut_ptr();
        for slot in head..tail {
            let pending = self.pending[slot];
            let header = &mut self.headers[slot];
            header.msg_len = 0;
            let msg = &mut header.msg_hdr;
            msg.msg_name = name_base.wrapping_add(slot).cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = iovec_base.wrapping_add(slot * MAX_PARTS);
            msg.msg_iovlen = pending.parts as _;
            msg.msg_flags = 0;
            // SAFETY of the pointer: `control_base + slot` is this slot's `ControlBuf`, which
            // lives in `self.controls` and is not moved before `sendmmsg` below.
            let control = control_base.wrapping_add(slot);
            set_send_control(msg, control, pending.source, pending.gso_size);
        }
        let header_base = self.headers.as_mut_ptr().wrapping_add(head);
        let count = (tail - head) as libc::c_uint;
        let sent = retry_eintr(|| {
            // SAFETY: `header_base` points to the `tail - head` initialised `mmsghdr`s of the
            // queued slots, exclusively ours through `&mut self`; the kernel writes only their
            // `msg_len`. Each names its slot's `sockaddr_in` and (if any) control buffer, both
            // ours and sized as declared, and `parts` of its slot's iovecs; those point into
            // `&'a [u8]` slices that are alive because `self` cannot outlive `'a`, and the
            // kernel only reads them.
            cvt(unsafe {
                libc::sendmmsg(socket.as_raw_fd(), header_base, count, libc::MSG_DONTWAIT)
            })
        })?;
        Ok(usize::try_from(sent).unwrap_or(0).min(tail - head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_eintr_retries_only_eintr() {
        let mut calls = 0;
        let result = retry_eintr(|| {
            calls += 1;
            if calls < 3 {
                Err(io::Error::from_raw_os_error(libc::EINTR))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.unwrap(), 3);

        let mut calls = 0;
        let result: io::Result<()> = retry_eintr(|| {
            calls += 1;
            Err(io::Error::from(io::ErrorKind::WouldBlock))
        });
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(calls, 1);
    }

    #[test]
    fn ifreq_refuses_names_that_do_not_fit() {
        assert!(ifreq("").is_err());
        assert!(ifreq("0123456789abcdef").is_err());
        assert!(ifreq("a\0b").is_err());
        let request = ifreq("0123456789abcde").unwrap();
        assert_eq!(request.ifr_name[14], b'e' as libc::c_char);
        assert_eq!(request.ifr_name[15], 0);
    }

    #[test]
    fn segment_cmsg_fits_and_sockaddr_round_trips() {
        assert!(SEGMENT_CMSG_SPACE <= mem::size_of::<ControlBuf>());
        let addr = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 4789);
        assert_eq!(socket_addr_v4(&sockaddr_in(addr)), addr);
    }

    #[test]
    fn send_queue_compacts_and_recycles() {
        let data = [1u8, 2, 3];
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
        let mut queue = SendQueue::new(2);
        assert!(queue.push(None, dst, &[&data[..1]], None));
        assert!(queue.push(None, dst, &[&data[..2], &data[2..]], Some(1)));
        assert!(!queue.push(None, dst, &[], None));
        queue.advance(1);
        assert_eq!(queue.len(), 1);
        // Room again: the remaining slot moves to the front.
        assert!(queue.push(None, dst, &[&data[..]], None));
        assert_eq!(queue.len(), 2);
        assert_eq!((queue.head, queue.tail), (0, 2));
        assert_eq!(queue.pending[0].parts, 2);
        assert_eq!(queue.iovecs[0].iov_len, 2);
        assert_eq!(queue.iovecs[1].iov_len, 1);
        assert_eq!(queue.iovecs[MAX_PARTS].iov_len, 3);
        let queue: SendQueue<'static> = queue.recycle();
        assert_eq!((queue.len(), queue.capacity()), (0, 2));
    }

    /// A `msghdr` over `control` holding the messages `(level, type, data)`, written the way
    /// the kernel does (each at its CMSG_SPACE), as `recvmmsg` would leave it.
    fn crafted(
        control: &mut ControlBuf,
        messages: &[(libc::c_int, libc::c_int, &[u8])],
    ) -> libc::msghdr {
        let mut msg = zeroed_mmsghdr().msg_hdr;
        msg.msg_control = (control as *mut ControlBuf).cast();
        msg.msg_controllen = mem::size_of::<ControlBuf>() as _;
        let mut used = 0;
        // SAFETY: `control` is a live, exclusively borrowed `ControlBuf` (aligned for
        // `cmsghdr`) and `msg_controllen` is its size. Each message is written within its
        // own CMSG_SPACE, checked against the buffer before it is written, and NXTHDR is
        // taken only after the previous header's `cmsg_len` is set.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            for &(level, kind, data) in messages {
                let space = libc::CMSG_SPACE(data.len() as u32) as usize;
                assert!(
                    !cmsg.is_null() && used + space <= CONTROL_LEN,
                    "messages overflow"
                );
                (*cmsg).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
                (*cmsg).cmsg_level = level;
                (*cmsg).cmsg_type = kind;
                ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(cmsg), data.len());
                used += space;
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        msg.msg_controllen = used as _;
        msg
    }

    #[test]
    fn the_drop_count_is_read_beside_gro_and_pktinfo() {
        let mut control = ControlBuf([0; CONTROL_LEN]);
        let pktinfo = [0xaa; mem::size_of::<libc::in_pktinfo>()];
        let msg = crafted(
            &mut control,
            &[
                (libc::IPPROTO_IP, libc::IP_PKTINFO, &pktinfo),
                (libc::SOL_UDP, libc::UDP_GRO, &1400i32.to_ne_bytes()),
                (
                    libc::SOL_SOCKET,
                    libc::SO_RXQ_OVFL,
                    &0xfffe_0001u32.to_ne_bytes(),
                ),
            ],
        );
        assert_eq!(
            received_control(&msg),
            ReceivedControl {
                segment_size: Some(1400),
                drops: Some(0xfffe_0001),
            }
        );
        // In the other order, and alone.
        let msg = crafted(
            &mut control,
            &[
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes()),
                (libc::SOL_UDP, libc::UDP_GRO, &1000i32.to_ne_bytes()),
            ],
        );
        assert_eq!(received_control(&msg).drops, Some(7));
        assert_eq!(received_control(&msg).segment_size, Some(1000));
        let msg = crafted(
            &mut control,
            &[(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &3u32.to_ne_bytes())],
        );
        assert_eq!(
            received_control(&msg),
            ReceivedControl {
                segment_size: None,
                drops: Some(3),
            }
        );
    }

    #[test]
    fn no_or_short_or_foreign_messages_say_nothing() {
        let mut control = ControlBuf([0; CONTROL_LEN]);
        let msg = crafted(&mut control, &[]);
        assert_eq!(received_control(&msg), ReceivedControl::default());
        // Too short to hold the count, and the same type at another level.
        let msg = crafted(
            &mut control,
            &[
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &[1, 2]),
                (libc::SOL_UDP, libc::SO_RXQ_OVFL, &9u32.to_ne_bytes()),
                (libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[0; 16]),
            ],
        );
        assert_eq!(received_control(&msg), ReceivedControl::default());
    }
}
