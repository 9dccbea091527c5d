//! Panics of third-party decoders over untrusted bytes, turned into errors.
//!
//! Some readers of binary formats (arrow's IPC decoder among them) panic on malformed input
//! instead of returning an error: an index out of range, an unknown type id. An upload or a
//! Flight parameter stream is such input, and a corrupt one is the client's mistake, so it
//! must come back as a clear refusal, not a 500 or a broken connection. [`contain`] runs a
//! decoding step and hands back a panic inside it as its message; [`Contained`] does the same
//! for each poll of a future. While either runs, the hook installed by
//! [`install_quiet_hook`] does not print the panic: it is expected, and reported as an error
//! by the caller.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// Whether the calling thread is inside [`contain`].
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// A panic's message, for logs and for the error it becomes.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f`; a panic inside it comes back as `Err(message)`. Only for code that holds no
/// state the panic could leave half-changed, or whose state is dropped after an error.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let outer = CONTAINING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(outer));
    result.map_err(|payload| panic_message(payload.as_ref()))
}

/// A future whose polls are each [`contain`]ed: it ends with `Err(message)` at the first panic
/// (and is not polled again).
pub struct Contained<F> {
    inner: Option<Pin<Box<F>>>,
}

impl<F: Future> Contained<F> {
    pub fn new(future: F) -> Self {
        Self {
            inner: Some(Box::pin(future)),
        }
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err("polled after a panic".into()));
        };
        match contain(|| inner.as_mut().poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                self.inner = None;
                Poll::Ready(Ok(v))
            }
            Err(message) => {
                self.inner = None;
                Poll::Ready(Err(message))
            }
        }
    }
}

/// Installs a panic hook that stays silent for panics inside [`contain`] and hands every other
/// panic to the hook that was there before. Called once by the binary at start-up.
pub fn install_quiet_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CONTAINING.with(Cell::get) {
            previous(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_becomes_its_message_and_the_flag_is_restored() {
        install_quiet_hook();
        assert_eq!(contain(|| 7), Ok(7));
        let caught = contain(|| -> u8 { panic!("index {} out of range", 9) });
        assert_eq!(caught, Err("index 9 out of range".to_string()));
        let nested = contain(|| contain(|| panic!("inner")).unwrap_err());
        assert_eq!(nested, Ok("inner".to_string()));
        assert!(!CONTAINING.with(Cell::get), "the flag outlived contain");
        let payload: Box<dyn Any + Send> = Box::new(17u32);
        assert_eq!(panic_message(payload.as_ref()), "a panic without a message");
    }

    #[tokio::test]
    async fn a_future_that_panics_ends_with_its_message() {
        let ok = Contained::new(async {
            tokio::task::yield_now().await;
            5
        })
        .await;
        assert_eq!(ok, Ok(5));
        let failed = Contained::new(async {
            tokio::task::yield_now().await;
            let v: Vec<u8> = Vec::new();
            v[3]
        })
        .await;
        let message = failed.unwrap_err();
        assert!(message.contains("index out of bounds"), "{message}");
    }
}
