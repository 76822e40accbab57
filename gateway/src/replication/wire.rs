//! Frames over TCP: the socket set-up both sides share, reading frames through the sans-IO
//! [`Decoder`], a writer task that encodes frames so the state machines never wait on a slow
//! peer's socket, and the conversions between shipped log records and wire records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use blockstore::repl::frame::{self, Decoder, Frame, FrameError, Record};
use blockstore::replica::ShippedRecord;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes queued for a peer that is not reading, beyond which the connection is dropped (it
/// reconnects and catches up from its durable position) instead of growing memory.
pub const MAX_QUEUED: usize = 64 << 20;

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer closed the connection.
    #[error("closed by the peer")]
    Closed,
}

/// The reading half of a replication connection.
pub struct FrameReader {
    rd: OwnedReadHalf,
    dec: Decoder,
    buf: BytesMut,
}

impl FrameReader {
    /// Reads the next frame. Cancel-safe: a frame is never lost when the future is dropped
    /// (bytes read so far stay in the decoder).
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(f) = self.dec.next_frame()? {
                return Ok(f);
            }
            self.buf.clear();
            self.buf.reserve(256 << 10);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Closed);
            }
            self.dec.push(&self.buf);
        }
    }

    /// The next frame if one was read already (no I/O): a driver takes every frame that
    /// arrived together before it acts on them, so work they share is done once.
    pub fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        Ok(self.dec.next_frame()?)
    }
}

/// The sending half: frames go to a task that writes them, so a peer that stops reading
/// never blocks the state machine (its timeouts keep running); see [`MAX_QUEUED`].
#[derive(Clone)]
pub struct FrameSender {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl FrameSender {
    /// Queues `f`; returns false when the connection is gone or too far behind.
    pub fn send(&self, f: &Frame) -> bool {
        let mut bytes = Vec::with_capacity(frame::encoded_len(f));
        frame::encode(f, &mut bytes);
        let n = bytes.len();
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > MAX_QUEUED {
            return false;
        }
        self.tx.send(bytes).is_ok()
    }

    /// Bytes queued and not yet written to the socket (a full resync paces itself by it).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// Bytes of queued frames the writer gathers into one socket write.
const GATHER: usize = 256 << 10;

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(mut b) = rx.recv().await {
        // Frames queued together (records and the barrier after them) leave in one write, so
        // the peer reads them together.
        while b.len() < GATHER {
            match rx.try_recv() {
                Ok(more) => b.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&b).await.is_err() {
            return;
        }
        queued.fetch_sub(b.len(), Ordering::AcqRel);
    }
    let _ = wr.shutdown().await;
}

/// Splits a connected (and tuned) stream into a frame reader and a frame sender; the writer
/// task ends when every sender is dropped or the socket fails.
pub fn split(stream: TcpStream) -> (FrameReader, FrameSender) {
    crate::net::tune(&stream);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    tokio::spawn(write_loop(wr, rx, queued.clone()));
    (
        FrameReader {
            rd,
            dec: Decoder::new(),
            buf: BytesMut::new(),
        },
        FrameSender { tx, queued },
    )
}

/// A log record read for shipping, as a wire record (the data moves, no copy).
pub fn to_wire(r: ShippedRecord) -> Record {
    r.into()
}

/// A received wire record, as the engine applies it.
pub fn from_wire(r: Record) -> ShippedRecord {
    r.into()
}
