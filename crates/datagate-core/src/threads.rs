//! Scheduling of the gateway's threads: the priority of its background threads, and the cores its
//! serving threads run on.

/// Lowers the calling thread's scheduling priority to `nice` (Linux: nice values are per
/// thread), so that under contention the kernel gives the other threads the larger share of
/// the cores. A `nice` of 0 or below leaves the thread as it is.
pub fn lower_priority(nice: i32) -> std::io::Result<()> {
    if nice <= 0 {
        return Ok(());
    }
    // SAFETY: plain system calls on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lets the calling thread run only on cores nothing else wants (Linux `SCHED_IDLE`): for
/// catch-up work that may wait while requests keep the cores busy. A nice value still lends a
/// thread a share under contention (nice 10: about a tenth of a core beside a busy one);
/// an idle-class thread gets almost none. Elsewhere, or if refused, falls back to the lowest
/// nice value.
pub fn idle_only() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on the calling thread (pid 0) with a valid parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return Ok(());
        }
    }
    lower_priority(19)
}

/// Takes the calling thread out of the idle class (see [`idle_only`]) into the normal one at
/// `nice`: for catch-up work that has fallen so far behind that it must progress even while
/// requests keep the cores busy.
pub fn share_cores(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain system call on the calling thread (pid 0) with a valid parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    lower_priority(nice)
}

/// Keeps each worker thread of the runtime behind `handle` on a core of its own, when it has
/// exactly one worker per core this process may run on (its CPU affinity mask) and at least two:
/// the kernel otherwise tends to stack both serving threads of a busy 2-core host on one core
/// beside a third busy thread, and a request whose task waits in the descheduled worker waits
/// out the other's time slice (measured: the small page's p99 about a quarter lower with the
/// workers kept apart, benches/RESULTS.md). Work-stealing still moves tasks between workers, and
/// other threads (the query executor, the audit writer) stay free to run anywhere. Returns
/// whether the workers were pinned; a runtime sized otherwise (`server.threads` set to another
/// count, a CPU quota narrower than the mask) is left to the kernel.
pub async fn keep_workers_apart(handle: &tokio::runtime::Handle) -> std::io::Result<bool> {
    let cpus = allowed_cpus()?;
    let workers = handle.metrics().num_workers();
    if workers < 2 || workers != cpus.len() {
        return Ok(false);
    }
    // Counted while this thread still has the process's mask: a pinned thread would count one.
    cores();
    let _ = PROCESS_CPUS.set(cpus.clone());
    match on_each_worker(handle, move |i| pin_current_thread(cpus[i])).await {
        Some(results) => results.into_iter().collect::<std::io::Result<Vec<()>>>()?,
        None => return Ok(false),
    };
    Ok(true)
}

/// How many threads work split across cores should use: what the process may use (std's
/// `available_parallelism`, CPU quotas included), counted once — before [`keep_workers_apart`]
/// pins anything, since `available_parallelism` answers for the calling thread's CPU mask (one
/// on a pinned serving thread), and it reads the cgroup's files on every call (this is asked
/// per request).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// The CPUs the process could run on before [`keep_workers_apart`] pinned its workers.
static PROCESS_CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// Lets the calling thread run on every CPU the process could run on before its workers were
/// pinned: a thread inherits the CPU mask of the thread that starts it, so a thread started from
/// a pinned worker (the runtime's blocking threads, a decoder's helpers) calls this first, or it
/// would share that one core with the worker. Nothing to do when no worker was pinned.
pub fn run_anywhere() -> std::io::Result<()> {
    match PROCESS_CPUS.get() {
        Some(cpus) => set_current_thread_cpus(cpus),
        None => Ok(()),
    }
}

/// Runs `f(i)` on every worker thread of a multi-thread runtime, `i` numbering the workers from
/// 0: one task per worker, each holding its thread until all have started, so no two share one
/// (a worker holding a task cannot take another). Meant for start-up, before the runtime has
/// other work: if not every worker takes its task within a second, `f` runs nowhere (`None`).
pub async fn on_each_worker<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Option<Vec<T>> {
    use std::sync::{Arc, Condvar, Mutex};
    struct Meeting {
        arrived: usize,
        gave_up: bool,
    }
    let workers = handle.metrics().num_workers();
    let meeting = Arc::new((
        Mutex::new(Meeting {
            arrived: 0,
            gave_up: false,
        }),
        Condvar::new(),
    ));
    let f = Arc::new(f);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (meeting, f) = (meeting.clone(), f.clone());
            handle.spawn(async move {
                let (lock, all_here) = &*meeting;
                let mut m = lock.lock().unwrap_or_else(|p| p.into_inner());
                let i = m.arrived;
                m.arrived += 1;
                all_here.notify_all();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
                while m.arrived < workers && !m.gave_up {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        m.gave_up = true;
                        all_here.notify_all();
                        break;
                    }
                    m = all_here
                        .wait_timeout(m, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let go = !m.gave_up;
                drop(m);
                go.then(|| f(i))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(workers);
    for task in tasks {
        out.push(task.await.ok()??);
    }
    Some(out)
}

/// The CPUs the calling thread may run on (its affinity mask), in order.
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is an empty set; the call fills it for the calling thread.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` is below CPU_SETSIZE.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect())
    }
    #[cfg(not(target_os = "linux"))]
    Ok(Vec::new())
}

/// Lets the calling thread run on `cpu` only.
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    set_current_thread_cpus(&[cpu])
}

/// Lets the calling thread run on `cpus` only.
fn set_current_thread_cpus(cpus: &[usize]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an empty set with CPUs below CPU_SETSIZE (as every allowed CPU is) added,
        // applied to the calling thread.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpus;
    Ok(())
}

#[cfg(test)]
mod tests {
    fn runtime(workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .on_thread_start(|| super::run_anywhere().unwrap())
            .build()
            .unwrap()
    }

    /// Every worker's thread id and CPU mask, visited once each.
    fn workers_masks(rt: &tokio::runtime::Runtime) -> Vec<(std::thread::ThreadId, Vec<usize>)> {
        let handle = rt.handle().clone();
        rt.block_on(super::on_each_worker(&handle, |_| {
            (std::thread::current().id(), super::allowed_cpus().unwrap())
        }))
        .expect("every worker took its task")
    }

    #[test]
    fn each_worker_is_visited_once_on_a_thread_of_its_own() {
        let rt = runtime(4);
        let seen = workers_masks(&rt);
        let threads: std::collections::HashSet<_> = seen.iter().map(|(t, _)| *t).collect();
        assert_eq!((seen.len(), threads.len()), (4, 4));
    }

    #[test]
    fn one_worker_per_core_keeps_each_worker_on_its_own_core() {
        let cpus = super::allowed_cpus().unwrap();
        let rt = runtime(cpus.len());
        let handle = rt.handle().clone();
        let pinned = rt.block_on(super::keep_workers_apart(&handle)).unwrap();
        // One core: nothing to keep apart.
        assert_eq!(pinned, cfg!(target_os = "linux") && cpus.len() >= 2);
        if pinned {
            let mut masks: Vec<Vec<usize>> =
                workers_masks(&rt).into_iter().map(|(_, m)| m).collect();
            masks.sort();
            assert_eq!(masks, cpus.iter().map(|&c| vec![c]).collect::<Vec<_>>());
            // Threads started from a pinned worker run anywhere again: the runtime's blocking
            // threads (its start hook) and threads that reset themselves.
            let (blocking, spawned) = rt.block_on(async {
                tokio::spawn(async {
                    let blocking = tokio::task::spawn_blocking(|| super::allowed_cpus().unwrap());
                    let spawned = std::thread::spawn(|| {
                        super::run_anywhere().unwrap();
                        super::allowed_cpus().unwrap()
                    })
                    .join()
                    .unwrap();
                    (blocking.await.unwrap(), spawned)
                })
                .await
                .unwrap()
            });
            assert_eq!((blocking, spawned), (cpus.clone(), cpus.clone()));
            // Work is still split for every core, asked on a pinned worker.
            let on_worker = rt.block_on(async { tokio::spawn(async { super::cores() }).await });
            assert_eq!(on_worker.unwrap(), cpus.len());
        }
    }

    #[test]
    fn a_runtime_not_sized_to_the_cores_is_left_to_the_kernel() {
        let cpus = super::allowed_cpus().unwrap();
        let rt = runtime(cpus.len() + 1);
        let handle = rt.handle().clone();
        assert!(!rt.block_on(super::keep_workers_apart(&handle)).unwrap());
        for (_, mask) in workers_masks(&rt) {
            assert_eq!(mask, cpus);
        }
    }

    #[test]
    fn an_idle_thread_is_in_the_idle_class() {
        std::thread::spawn(|| {
            super::idle_only().unwrap();
            #[cfg(target_os = "linux")]
            // SAFETY: reads the calling thread's own policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_idle_thread_can_share_the_cores_again() {
        std::thread::spawn(|| {
            super::idle_only().unwrap();
            super::share_cores(10).unwrap();
            #[cfg(target_os = "linux")]
            // SAFETY: reads the calling thread's own policy and nice value.
            unsafe {
                assert_eq!(libc::sched_getscheduler(0), libc::SCHED_OTHER);
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                assert_eq!(libc::getpriority(libc::PRIO_PROCESS, tid), 10);
            }
        })
        .join()
        .unwrap();
    }
}
