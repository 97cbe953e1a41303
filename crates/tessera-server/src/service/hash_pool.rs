//! The password-hashing pool: Argon2id runs on threads of its own, a bounded number of them
//! (`password_hashing_threads`), each at a lower scheduling priority than the threads that
//! answer requests. A login flood then queues for those threads and takes only the CPU that
//! request handling leaves over, instead of taking verification down with it: with the
//! hashing on tokio's blocking threads at the same priority, 28 logins a second cut
//! `/v1/verify` on one core to a third of its throughput (issue 14).
//!
//! Hand-written rather than a thread-pool crate: the pool is a channel and a loop, and what it
//! needs beyond that, a priority per thread, no general pool offers.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// How much lower the hashing threads' priority is (Linux `nice`, 0–19 below the server's).
/// At 10, the kernel gives a busy request thread about nine tenths of a core both want (CFS
/// weights 1024 against 110), and the hashing threads every cycle it does not use.
pub(crate) const HASHING_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run password hashing work, one job at a time each.
pub(crate) struct HashPool {
    jobs: Sender<Job>,
    threads: usize,
}

/// The pool could not take or finish a job: its threads are gone, or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the password hashing pool {0}")]
pub(crate) struct PoolError(&'static str);

impl HashPool {
    /// Starts `threads` hashing threads (at least one).
    pub(crate) fn start(threads: usize) -> std::io::Result<HashPool> {
        let threads = threads.max(1);
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("tessera-hash-{index}"))
                .spawn(move || work(&receiver))?;
        }
        Ok(HashPool {
            jobs: sender,
            threads,
        })
    }

    /// How many threads hash.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a hashing thread and returns its result.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).map_err(|_| PoolError("has stopped"))?;
        // A job that panicked dropped `done` unsent.
        result.await.map_err(|_| PoolError("job failed"))
    }
}

/// A hashing thread: lowers its own priority, then runs jobs until the pool is dropped.
fn work(receiver: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        let next = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = next else {
            return;
        };
        // A panicking job fails its caller (its result is never sent); the thread carries on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Lowers the calling thread's priority by [`HASHING_NICE`]. On Linux every thread has a nice
/// value of its own (`setpriority` on its thread id); elsewhere hashing keeps the server's
/// priority and only the thread count bounds it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let tid = rustix::thread::gettid();
        let lowered = getpriority_process(Some(tid))
            .and_then(|current| setpriority_process(Some(tid), (current + HASHING_NICE).min(19)));
        if let Err(error) = lowered {
            tracing::warn!(%error, "password hashing keeps the server's priority");
        }
    }
}

/// The priority of the calling thread (its `nice`; 0 where threads have none of their own).
#[cfg(test)]
fn current_nice() -> i32 {
    #[cfg(target_os = "linux")]
    return rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        .unwrap_or(i32::MIN);
    #[cfg(not(target_os = "linux"))]
    return 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_named_threads_at_a_lower_priority() {
        let pool = HashPool::start(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let (name, nice) = pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, current_nice())
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("tessera-hash-"));
        if cfg!(target_os = "linux") {
            assert_eq!(nice, (current_nice() + HASHING_NICE).min(19));
        }
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_pool_carries_on() {
        let pool = HashPool::start(1).unwrap();
        let failed = pool.run(|| -> u8 { panic!("inside a job") }).await;
        assert!(failed.is_err());
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn no_more_jobs_run_at_once_than_the_pool_has_threads() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Arc::new(HashPool::start(2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (pool, running, most) =
                (Arc::clone(&pool), Arc::clone(&running), Arc::clone(&most));
            tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            })
        });
        for job in jobs.collect::<Vec<_>>() {
            job.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
