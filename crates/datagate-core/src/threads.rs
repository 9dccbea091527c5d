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
