//! The volume's own I/O threads: blocking file work runs here, never on async worker threads.
//!
//! A handful of threads per volume pull jobs from one queue. Unlike a general-purpose blocking
//! pool that grows a thread per waiting call, a busy queue keeps the same threads running
//! without a wake-up per job, which matters at high queue depth.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    shutdown: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    cv: Condvar,
}

/// A fixed set of I/O threads.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl Executor {
    /// Starts `threads` I/O threads named after `name`.
    pub fn new(name: &str, threads: usize) -> Executor {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let inner = inner.clone();
            let _ = std::thread::Builder::new()
                .name(format!("{name}-io{i}"))
                .spawn(move || worker(&inner));
        }
        Executor { inner }
    }

    /// Runs `f` on an I/O thread and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx.await.ok()
    }

    /// Queues `f` without waiting for it. Returns `false` (dropping `f`) after shutdown.
    pub fn execute(&self, f: impl FnOnce() + Send + 'static) -> bool {
        self.submit(Box::new(f))
    }

    fn submit(&self, job: Job) -> bool {
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.shutdown {
            // Dropping the job drops any sender it holds: a waiting caller sees `None`.
            return false;
        }
        q.jobs.push_back(job);
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.inner.cv.notify_one();
        }
        true
    }

    /// Stops the threads once the queue is empty.
    pub fn shutdown(&self) {
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.shutdown = true;
        drop(q);
        self.inner.cv.notify_all();
    }
}

fn worker(inner: &Inner) {
    loop {
        let job = {
            let mut q = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.shutdown {
                    return;
                }
                q.idle += 1;
                q = inner.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                q.idle -= 1;
            }
        };
        // A panicking job must not take the thread with it (the jobs queued behind it would
        // wait forever); its caller sees its answer channel dropped.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_caller_and_returns_results() {
        let ex = Executor::new("test", 2);
        let me = std::thread::current().id();
        let (v, other) = ex
            .run(move || (21 * 2, std::thread::current().id() != me))
            .await
            .unwrap();
        assert_eq!(v, 42);
        assert!(other);
        let many: Vec<_> = (0..100u64).map(|i| ex.run(move || i * 2)).collect();
        let mut sum = 0;
        for f in many {
            sum += f.await.unwrap();
        }
        assert_eq!(sum, 9900);
        ex.shutdown();
        assert_eq!(ex.run(|| 1).await, None);
    }
}
