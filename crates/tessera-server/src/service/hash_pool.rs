//! The password-hashing pool: Argon2id runs on threads of its own, a bounded number of them
//! (`password_hashing_threads`), each in Linux's idle scheduling class (`SCHED_IDLE`). A login
//! flood then queues for those threads and takes only the CPU that request handling leaves
//! over, instead of taking verification down with it: with the hashing on tokio's blocking
//! threads at the same priority, 28 logins a second cut `/v1/verify` on one core to a third of
//! its throughput (issue 14).
//!
//! Why the idle class and not a `nice` value: the kernel lets a thread it has just picked run
//! out a slice of a few milliseconds before a waking request thread of higher priority may
//! take the core (measured: p99 of `/v1/verify` 5.5 ms at nice +10 under a login flood, against
//! 2.5 ms alone), while a normal thread waking up preempts an idle-class one at once (p99 2.2
//! ms under the same flood). The idle class gets only the CPU no normal thread wants; on a
//! core that request handling keeps fully busy, logins wait (their requests time out) rather
//! than slow verification down: verification is what every request of every user needs.
//!
//! Hand-written rather than a thread-pool crate: the pool is a channel and a loop, and what it
//! needs beyond that, a scheduling class per thread, no general pool offers.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run password hashing work, one job at a time each.
pub(crate) struct HashPool {
    jobs: Sender<Job>,
    /// Admits as many jobs as there are threads, so a login flood waits here (a request that
    /// gives up leaves nothing queued) and never holds more than one Argon2id memory block
    /// (19 MiB) per thread.
    admitted: Semaphore,
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
            admitted: Semaphore::new(threads),
        })
    }

    /// Runs `job` on a hashing thread, once one is free, and returns its result.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        let _admitted = self
            .admitted
            .acquire()
            .await
            .map_err(|_| PoolError("has stopped"))?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).map_err(|_| PoolError("has stopped"))?;
        // A job that panicked dropped `done` unsent.
        result.await.map_err(|_| PoolError("job failed"))
    }
}

/// A hashing thread: moves to the idle class, then runs jobs until the pool is dropped.
fn work(receiver: &Mutex<Receiver<Job>>) {
    into_idle_class();
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

/// Moves the calling thread to the idle scheduling class (Linux `SCHED_IDLE`; allowed without
/// privileges, as it only lowers the thread). Elsewhere hashing keeps the server's priority
/// and only the thread count bounds it.
fn into_idle_class() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(error) =
            set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
        {
            tracing::warn!(?error, "password hashing keeps the server's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_named_threads_in_the_idle_class() {
        let pool = HashPool::start(2).unwrap();
        // As many admitted at once as there are threads.
        assert_eq!(pool.admitted.available_permits(), 2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("tessera-hash-"));
        #[cfg(target_os = "linux")]
        {
            use thread_priority::{
                NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
            };
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            assert_eq!(
                pool.run(thread_schedule_policy).await.unwrap().unwrap(),
                idle
            );
            // The caller's own thread is left as it was.
            assert_ne!(thread_schedule_policy().unwrap(), idle);
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
