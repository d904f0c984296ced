//! Listening unix sockets whose file gets its owner and mode before `listen`, so no one can
//! connect while the file is wider than meant. Shared by the admin socket and the Docker
//! plugin socket.

use rustix::io::Errno;
use std::os::unix::net::UnixListener;
use std::path::Path;

/// The step that failed (`binding`, `chmod of`, ...) and why.
pub type StepError = (&'static str, std::io::Error);

/// `socket` and `bind` at `path`, then `configure(path)` (chown, chmod), then `listen` with
/// `backlog`. If anything after `bind` fails, the socket file is removed again.
///
/// # Errors
///
/// The step that failed, for the caller to name with the path.
pub fn listen(
    path: &Path,
    backlog: i32,
    configure: impl FnOnce(&Path) -> Result<(), (&'static str, Errno)>,
) -> Result<UnixListener, StepError> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fail = |step, e: Errno| (step, std::io::Error::from(e));
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| fail("creating a socket for", e))?;
    let address = SocketAddrUnix::new(path).map_err(|e| fail("naming", e))?;
    rustix::net::bind(&socket, &address).map_err(|e| fail("binding", e))?;
    let listening = configure(path)
        .and_then(|()| rustix::net::listen(&socket, backlog).map_err(|e| ("listening on", e)));
    if let Err((step, e)) = listening {
        if let Err(removing) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %removing, "removing a half-made socket");
        }
        return Err(fail(step, e));
    }
    Ok(UnixListener::from(socket))
}
