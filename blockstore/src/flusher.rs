//! The flusher: copies logged blocks into the extent and frees log space.
//!
//! One run takes everything appended so far, makes it durable in the log, writes each block's
//! newest logged version into the extent (punching holes for trimmed ranges), syncs the extent,
//! persists the new checkpoint in the superblock, and only then drops the copied entries from the
//! index and advances the log tail. A crash at any point leaves the old checkpoint, from which
//! recovery replays the same records again.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::engine::{lock, Engine};
use crate::error::Result;
use crate::index::Loc;

impl Engine {
    /// Runs the flusher once in the calling thread. Returns whether there was anything to do.
    pub fn flush_once(&self) -> Result<bool> {
        let _only_one = lock(&self.flush_lock);
        self.check_alive()?;
        let (target_lsn, target_virt) = {
            let log = lock(&self.log);
            if log.next_lsn == log.tail_lsn {
                return Ok(false);
            }
            (log.next_lsn, log.head)
        };
        self.sync_wal()?;
        let entries = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .below(target_lsn);
        let bs = u64::from(self.block_size());
        self.copy_to_extent(&entries, bs)?;
        self.extent.sync_data().map_err(|e| self.fail(e))?;
        {
            let mut sb = lock(&self.sb);
            sb.checkpoint_lsn = target_lsn;
            sb.checkpoint_virt = target_virt;
            sb.store(self.meta.as_ref()).map_err(|e| self.fail(e))?;
        }
        {
            let _w = self.reclaim.write().unwrap_or_else(|e| e.into_inner());
            self.index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove_below(target_lsn);
            let mut log = lock(&self.log);
            log.tail = target_virt;
            log.tail_lsn = target_lsn;
            self.stats.set_log_used(log.head - log.tail);
        }
        self.space_cv.notify_all();
        self.stats.add_flusher_run(entries.len() as u64);
        Ok(true)
    }

    /// Writes the newest logged version of each entry into the extent. Entries are in block
    /// order; neighbouring ones are gathered into one buffer (up to 1 MiB) and written with one
    /// call, and neighbouring trims become one hole punch.
    fn copy_to_extent(&self, entries: &[crate::index::Entry], bs: u64) -> Result<()> {
        const RUN_BYTES: u64 = 1 << 20;
        let mut run: Vec<u8> = Vec::with_capacity(RUN_BYTES as usize);
        let mut run_start = 0u64;
        let mut hole: Option<(u64, u64)> = None;
        let flush_run = |run: &mut Vec<u8>, start: u64| -> Result<()> {
            if !run.is_empty() {
                self.extent
                    .write_at(run, start * bs)
                    .map_err(|e| self.fail(e))?;
                run.clear();
            }
            Ok(())
        };
        let flush_hole = |hole: &mut Option<(u64, u64)>| -> Result<()> {
            if let Some((start, len)) = hole.take() {
                self.extent
                    .punch_hole(start * bs, len * bs)
                    .map_err(|e| self.fail(e))?;
            }
            Ok(())
        };
        for e in entries {
            match e.loc {
                Loc::Zero { .. } => {
                    flush_run(&mut run, run_start)?;
                    hole = match hole {
                        Some((s, l)) if s + l == e.start => Some((s, l + e.len)),
                        other => {
                            let mut h = other;
                            flush_hole(&mut h)?;
                            Some((e.start, e.len))
                        }
                    };
                }
                Loc::Log { virt, .. } => {
                    flush_hole(&mut hole)?;
                    let run_blocks = run.len() as u64 / bs;
                    let len = (e.len * bs) as usize;
                    if run.is_empty()
                        || run_start + run_blocks != e.start
                        || run.len() as u64 + e.len * bs > RUN_BYTES
                    {
                        flush_run(&mut run, run_start)?;
                        run_start = e.start;
                    }
                    let at = run.len();
                    run.resize(at + len, 0);
                    self.wal
                        .read_at(&mut run[at..], virt % self.wal_size)
                        .map_err(|err| self.fail(err))?;
                }
            }
        }
        flush_run(&mut run, run_start)?;
        flush_hole(&mut hole)?;
        Ok(())
    }

    /// Asks the background flusher to run now.
    pub fn request_flush(&self) {
        lock(&self.ctl).requested = true;
        self.ctl_cv.notify_all();
    }

    /// Whether the log holds more than an eighth of its size: worth a flusher run right away.
    fn log_pressure(&self) -> bool {
        let log = lock(&self.log);
        (log.head - log.tail) * 8 >= self.wal_size
    }

    fn log_pending(&self) -> bool {
        let log = lock(&self.log);
        log.next_lsn != log.tail_lsn
    }
}

/// Starts the background flusher thread. It holds only a weak reference, so dropping the last
/// handle to the engine still closes it.
pub(crate) fn start(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    let handle = std::thread::Builder::new()
        .name("tandem-flusher".into())
        .spawn(move || run(weak))
        .ok();
    *lock(&engine.thread) = handle;
}

/// Stops the thread (if any) and waits for it, unless called from the thread itself.
pub(crate) fn stop(engine: &Engine) {
    lock(&engine.ctl).shutdown = true;
    engine.ctl_cv.notify_all();
    let handle = lock(&engine.thread).take();
    if let Some(h) = handle {
        if h.thread().id() != std::thread::current().id() {
            let _ = h.join();
        }
    }
}

fn run(weak: Weak<Engine>) {
    let mut last_run = Instant::now();
    loop {
        let Some(engine) = weak.upgrade() else {
            return;
        };
        let interval = engine.opts.flush_interval;
        let wake = {
            let lease = engine.role_state().lease_until;
            let now = Instant::now();
            let mut wait = interval;
            if let Some(until) = lease {
                if until > now {
                    wait = wait.min(until - now + Duration::from_millis(1));
                }
            }
            wait
        };
        {
            let mut ctl = lock(&engine.ctl);
            if !ctl.requested && !ctl.shutdown {
                ctl = engine
                    .ctl_cv
                    .wait_timeout(ctl, wake)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if ctl.shutdown {
                return;
            }
            let requested = std::mem::take(&mut ctl.requested);
            drop(ctl);
            engine.publish_access();
            let due = last_run.elapsed() >= interval && engine.log_pending();
            if requested || due || engine.log_pressure() {
                last_run = Instant::now();
                if let Err(e) = engine.flush_once() {
                    tracing::error!(error = %e, "flusher stopped");
                    return;
                }
            }
        }
    }
}
