//! The control socket (`--control PATH`): the provisioning protocol of the
//! image's serial line on a unix stream socket, so `routerctl --port
//! unix:PATH` works unchanged.
//!
//! Each connection is a task with its own [`Session`] (hello, sequence
//! numbers, retransmission cache, idle timeout: the same sans-I/O code the
//! image runs on COM1). A request the session passes on becomes a [`Call`]
//! to the router loop, which owns the node and answers on a oneshot; the
//! loop never waits for a client. While a session is open, log lines go to
//! it as frames (`routerctl logs`). At most [`MAX_CONNECTIONS`] clients at
//! once; the socket is created `0600` (whoever can write it can change the
//! box), and a stale socket file left by a crash is replaced, a live one is
//! not.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routerd_provision::message::{Op, Reply};
use routerd_provision::session::{encode_log, Session, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};

use crate::logger;

/// Clients served at once; more are turned away (logged).
pub const MAX_CONNECTIONS: usize = 8;
/// How the software names itself in hello replies.
pub const SOFTWARE: &str = "routerd-host";
pub const BUILD: &str = env!("CARGO_PKG_VERSION");

/// One request for the router loop.
pub struct Call {
    pub op: Op,
    pub reply: oneshot::Sender<Reply>,
}

/// The socket, bound. Dropping it removes the socket file.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Control {
    /// Bind `path` (mode 0600). A socket file nobody answers on is
    /// replaced; anything else at `path` is an error.
    pub fn bind(path: &Path) -> io::Result<Control> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket; not touching it"));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "another process serves this socket"));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Control { listener, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept clients until the task is dropped. `device` is the running
    /// configuration's device name (hello replies carry it).
    pub async fn serve(self, calls: mpsc::Sender<Call>, device: watch::Receiver<String>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let start = Instant::now();
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    log::warn!("control: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                log::warn!("control: {MAX_CONNECTIONS} clients already connected; turned one away");
                continue;
            };
            let (calls, device) = (calls.clone(), device.clone());
            tokio::spawn(async move {
                connection(stream, calls, device, start).await;
                drop(permit);
            });
        }
    }
}

fn ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

async fn next_line(logs: &mut Option<broadcast::Receiver<logger::Line>>) -> Result<logger::Line, broadcast::error::RecvError> {
    match logs {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// One client, until it hangs up (or the router loop is gone).
async fn connection(mut stream: UnixStream, calls: mpsc::Sender<Call>, mut device: watch::Receiver<String>, start: Instant) {
    let mut session = Box::new(Session::new(SOFTWARE, BUILD));
    session.set_device_name(&device.borrow_and_update());
    let mut buf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::new();
    let mut logs: Option<broadcast::Receiver<logger::Line>> = None;
    let mut frame = [0u8; 2 * routerd_provision::message::LOG_TEXT];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for &b in buf.iter().take(n) {
                    if device.has_changed().unwrap_or(false) {
                        session.set_device_name(&device.borrow_and_update());
                    }
                    let request = match session.push(b, ms(start)) {
                        Step::Nothing => None,
                        Step::Send(f) => {
                            out.extend_from_slice(f);
                            None
                        }
                        Step::Execute(req) => Some(req),
                    };
                    let Some(req) = request else { continue };
                    let (tx, rx) = oneshot::channel();
                    if calls.send(Call { op: req.op, reply: tx }).await.is_err() {
                        return;
                    }
                    let Ok(mut reply) = rx.await else { return };
                    if let Reply::Status(st) = &mut reply {
                        // This connection's session counters, as the image
                        // reports its serial line's.
                        st.serial = session.stats();
                    }
                    out.extend_from_slice(session.respond(req.seq, reply));
                }
                if !out.is_empty() {
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
            line = next_line(&mut logs) => {
                let text = match line {
                    Ok(l) => Some((l.ms, l.level, l.text)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Some((ms(start), log::Level::Warn as u8, format!("control: this session fell behind; {n} log lines lost")))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                };
                if let Some(f) = text.and_then(|(t, level, text)| encode_log(t, level, &text, &mut frame)) {
                    if stream.write_all(f).await.is_err() {
                        return;
                    }
                }
            }
            _ = tick.tick() => {
                session.poll(ms(start));
            }
        }
        // Log lines flow while a session is open, from the moment it opened.
        match (session.is_open(), logs.is_some()) {
            (true, false) => logs = Some(logger::subscribe()),
            (false, true) => logs = None,
            _ => {}
        }
    }
}
