//! Connected egress sockets the host hands the agent (on the handoff
//! socket, [`ds_proto::Handoff`]), so that a bulk transfer does not pass
//! through the host: the proxy moves the data between the app's connection
//! and that socket with `splice(2)`.

use std::io;
use std::os::fd::AsFd;

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per splice call.
const SPLICE_CHUNK: usize = 1 << 20;

/// Moves bytes between `app` and `upstream` both ways with `splice(2)`
/// through a pipe per direction, passing half-closes on; returns the bytes
/// moved (app to upstream, upstream to app).
pub async fn splice_both(app: &TcpStream, upstream: &TcpStream) -> (u64, u64) {
    let (out, back) = tokio::join!(splice_one(app, upstream), splice_one(upstream, app));
    (out.unwrap_or(0), back.unwrap_or(0))
}

async fn splice_one(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (pipe_r, pipe_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // A larger pipe moves more per call (the default holds 64 KiB); the
    // kernel may refuse (pipe-user-pages limits), which only costs speed.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_w, SPLICE_CHUNK);
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total = 0u64;
    let result = async {
        loop {
            // The pipe is empty here, so EAGAIN can only mean the socket.
            let n = from
                .async_io(Interest::READABLE, || {
                    rustix::pipe::splice(from.as_fd(), None, &pipe_w, None, SPLICE_CHUNK, flags)
                        .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Ok(());
            }
            // Top the pipe up with whatever else has arrived, so that each
            // write to the other side moves as much as it can.
            let mut n = n;
            while n < SPLICE_CHUNK {
                match rustix::pipe::splice(
                    from.as_fd(),
                    None,
                    &pipe_w,
                    None,
                    SPLICE_CHUNK - n,
                    flags,
                ) {
                    Ok(0) | Err(_) => break,
                    Ok(more) => n += more,
                }
            }
            let mut left = n;
            while left > 0 {
                left -= to
                    .async_io(Interest::WRITABLE, || {
                        rustix::pipe::splice(&pipe_r, None, to.as_fd(), None, left, flags)
                            .map_err(io::Error::from)
                    })
                    .await?;
            }
            total += n as u64;
        }
    }
    .await;
    // Pass the end on (or, on an error, end both directions).
    let how = if result.is_ok() {
        rustix::net::Shutdown::Write
    } else {
        rustix::net::Shutdown::Both
    };
    let _ = rustix::net::shutdown(to.as_fd(), how);
    result.map(|()| total)
}
