//! Scheduling of the background threads the gateway starts.

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

#[cfg(test)]
mod tests {
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
