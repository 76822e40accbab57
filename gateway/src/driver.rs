//! The one connection driver of both front ends: a thin quinn-style loop around a sans-IO
//! protocol core. It reads the socket and feeds the core, runs the core's commands as futures
//! polled in the connection task, writes the core's output once per wake-up, sleeps until the
//! core's deadline, and drains on shutdown. What differs between iSCSI and NVMe/TCP (executing
//! commands, answering login questions, admitting Connects, messages from the rest of the node)
//! is a [`Handler`] plugged into it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// The contract both sans-IO protocol cores share, so one loop drives either.
pub trait Core {
    /// What the core asks its driver to do.
    type Event;
    /// Why the core ended the connection.
    type CloseReason: Debug + Clone;
    /// Bytes to send.
    type Output: AsRef<[u8]>;

    /// Feeds bytes received at `now`.
    fn receive(&mut self, now: Instant, data: &[u8]);
    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The bytes to write, in order.
    fn take_output(&mut self) -> Self::Output;
    /// When [`Core::handle_timeout`] must next be called, if ever.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Acts on the core's timer at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// Whether the core ended the connection (after its close event).
    fn is_closed(&self) -> bool;
    /// Why the core ended the connection, once it has.
    fn close_reason(&self) -> Option<&Self::CloseReason>;
}

impl Core for proto_iscsi::session::Connection {
    type Event = proto_iscsi::session::Event;
    type CloseReason = proto_iscsi::session::CloseReason;
    type Output = bytes::BytesMut;

    fn receive(&mut self, now: Instant, data: &[u8]) {
        self.receive(now, data);
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        self.poll_event()
    }
    fn take_output(&mut self) -> Self::Output {
        self.take_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn is_closed(&self) -> bool {
        self.is_closed()
    }
    fn close_reason(&self) -> Option<&Self::CloseReason> {
        self.close_reason()
    }
}

impl Core for proto_nvmeof::Connection {
    type Event = proto_nvmeof::Event;
    type CloseReason = proto_nvmeof::CloseReason;
    type Output = Vec<u8>;

    fn receive(&mut self, now: Instant, data: &[u8]) {
        self.receive(now, data);
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        self.poll_event()
    }
    fn take_output(&mut self) -> Self::Output {
        self.take_output()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        // An expired association closes the queue (its close event follows); the other
        // queues hear of it when the handler unregisters this one.
        let _ = self.handle_timeout(now);
    }
    fn is_closed(&self) -> bool {
        self.is_closed()
    }
    fn close_reason(&self) -> Option<&Self::CloseReason> {
        self.close_reason()
    }
}

/// A command executing for the connection: a future polled by the connection task itself (no
/// task spawn and no cross-thread wake-up per command; reads from the page cache complete on
/// their first poll).
pub type Running<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The commands a connection has executing. A command started under a key (its task tag)
/// can be stopped by that key: it is dropped where it waits and its result never reaches
/// [`Handler::on_done`], so a later command reusing the tag gets only its own result.
pub struct Commands<T> {
    set: FuturesUnordered<Running<(u64, Option<T>)>>,
    /// Key to (internal id, abort handle) of the keyed commands running.
    keyed: HashMap<u64, (u64, AbortHandle)>,
    /// Internal id to key, to forget a finished command's handle.
    ids: HashMap<u64, u64>,
    next_id: u64,
}

impl<T: Send + 'static> Commands<T> {
    fn new() -> Self {
        Commands {
            set: FuturesUnordered::new(),
            keyed: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
        }
    }

    /// Starts executing `f`; its result goes to [`Handler::on_done`].
    pub fn push(&mut self, f: Running<T>) {
        let id = self.id();
        self.set.push(Box::pin(async move { (id, Some(f.await)) }));
    }

    /// Starts executing `f` under `key` (a task tag), so [`Commands::cancel`] can stop it.
    pub fn push_keyed(&mut self, key: u64, f: Running<T>) {
        let id = self.id();
        let (handle, reg) = AbortHandle::new_pair();
        if let Some((old, h)) = self.keyed.insert(key, (id, handle)) {
            // The core never hands out a tag still running; stop the old one anyway.
            h.abort();
            self.ids.remove(&old);
        }
        self.ids.insert(id, key);
        let f = Abortable::new(f, reg);
        self.set.push(Box::pin(async move { (id, f.await.ok()) }));
    }

    /// Stops the command running under `key`, if any: it is dropped at once (a block
    /// operation already handed to the volume's I/O threads completes there, unseen).
    pub fn cancel(&mut self, key: u64) -> bool {
        match self.keyed.remove(&key) {
            Some((id, h)) => {
                h.abort();
                self.ids.remove(&id);
                true
            }
            None => false,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Forgets a finished command's handle; its result, unless it was cancelled.
    fn finished(&mut self, (id, out): (u64, Option<T>)) -> Option<T> {
        if let Some(key) = self.ids.remove(&id) {
            self.keyed.remove(&key);
        }
        out
    }

    /// How many are executing.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is executing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// What a handler tells the driver after a message from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// Stop reading, finish the executing commands, close (the reason is logged).
    Close(&'static str),
}

/// Why a connection ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended<R> {
    /// The protocol core closed it.
    Core(R),
    /// The peer closed its side.
    PeerClosed,
    /// Reading the socket failed.
    ReadFailed(std::io::ErrorKind),
    /// Writing the socket failed.
    WriteFailed(std::io::ErrorKind),
    /// The node closed it (see [`Flow::Close`]).
    Node(&'static str),
    /// The daemon is shutting down.
    Shutdown,
}

impl<R: std::fmt::Display> std::fmt::Display for Ended<R> {
    /// The reason as the daemon logs it ("keep-alive timeout expired", "host closed the
    /// connection", ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Core(r) => write!(f, "{r}"),
            Ended::PeerClosed => f.write_str("host closed the connection"),
            Ended::ReadFailed(k) => write!(f, "read failed: {k}"),
            Ended::WriteFailed(k) => write!(f, "write failed: {k}"),
            Ended::Node(why) => f.write_str(why),
            Ended::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// The protocol-specific side of a connection.
pub trait Handler: Send {
    /// The protocol core it serves.
    type Core: Core + Send;
    /// What an executed command hands back to the core.
    type Done: Send + 'static;
    /// Messages from elsewhere in the node.
    type Control: Send;

    /// Commands the connection may have executing before it stops reading the socket.
    const MAX_IN_FLIGHT: usize;

    /// Acts on one event of the core: answers its questions, starts commands...
    fn on_event(
        &mut self,
        core: &mut Self::Core,
        event: <Self::Core as Core>::Event,
        commands: &mut Commands<Self::Done>,
    );

    /// Reports an executed command to the core.
    fn on_done(&mut self, core: &mut Self::Core, done: Self::Done);

    /// Acts on a message from the node.
    fn on_control(
        &mut self,
        core: &mut Self::Core,
        msg: Self::Control,
        commands: &mut Commands<Self::Done>,
    ) -> Flow;

    /// The connection is over (no command executing any more): release what it held.
    fn finish(self, core: &Self::Core, ended: &Ended<<Self::Core as Core>::CloseReason>);
}

/// The read buffer a connection starts with.
const READ_BUFFER_MIN: usize = 4 * 1024;
/// The largest read buffer a connection grows to.
const READ_BUFFER_MAX: usize = 256 * 1024;

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Serves one connection with `core` and `handler` until the core closes it, the peer goes
/// away, the node closes it (a [`Flow::Close`] from `control`) or shutdown; commands already
/// executing finish first.
pub async fn drive<H: Handler>(
    mut stream: TcpStream,
    mut core: H::Core,
    mut handler: H,
    mut control: Option<mpsc::UnboundedReceiver<H::Control>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut commands = Commands::new();
    // Small until the peer sends more: an idle or half-open connection holds 4 KiB, a busy
    // one grows its buffer (doubling while reads fill it) to READ_BUFFER_MAX.
    let mut buf = vec![0u8; READ_BUFFER_MIN];
    let mut draining = *shutdown.borrow();
    let mut ended: Option<Ended<<H::Core as Core>::CloseReason>> = None;
    let mut can_write = true;
    loop {
        // Checked first: a connection accepted during shutdown ends at once.
        if (ended.is_some() || draining) && commands.is_empty() {
            break;
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = stream.read(&mut buf),
                if !draining && ended.is_none() && commands.len() < H::MAX_IN_FLIGHT =>
            {
                match r {
                    Ok(0) => ended = Some(Ended::PeerClosed),
                    Err(e) => ended = Some(Ended::ReadFailed(e.kind())),
                    Ok(n) => {
                        core.receive(Instant::now(), buf.get(..n).unwrap_or_default());
                        if n == buf.len() && buf.len() < READ_BUFFER_MAX {
                            buf.resize(buf.len() * 2, 0);
                        }
                    }
                }
            }
            Some(done) = commands.set.next(), if !commands.is_empty() => {
                if let Some(done) = commands.finished(done) {
                    handler.on_done(&mut core, done);
                }
                // Collect every other command already done before writing.
                while let Some(Some(done)) = commands.set.next().now_or_never() {
                    if let Some(done) = commands.finished(done) {
                        handler.on_done(&mut core, done);
                    }
                }
            }
            msg = recv(&mut control) => match msg {
                Some(m) => {
                    if let Flow::Close(why) = handler.on_control(&mut core, m, &mut commands) {
                        ended.get_or_insert(Ended::Node(why));
                    }
                }
                None => control = None,
            },
            _ = until(deadline), if ended.is_none() => core.handle_timeout(Instant::now()),
            r = shutdown.changed(), if !draining => {
                let _ = r;
                draining = true;
            }
        }
        while let Some(ev) = core.poll_event() {
            handler.on_event(&mut core, ev, &mut commands);
        }
        if ended.is_none() && core.is_closed() {
            ended = core.close_reason().cloned().map(Ended::Core);
        }
        let out = core.take_output();
        if can_write && !out.as_ref().is_empty() {
            if let Err(e) = stream.write_all(out.as_ref()).await {
                can_write = false;
                ended.get_or_insert(Ended::WriteFailed(e.kind()));
            }
        }
    }
    handler.finish(&core, &ended.unwrap_or(Ended::Shutdown));
    let _ = stream.shutdown().await;
}

/// The next message on `control`, or never without a channel.
async fn recv<T>(control: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match control {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
