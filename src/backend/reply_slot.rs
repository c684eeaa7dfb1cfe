//! A one-shot reply slot between a worker's backend pipe and the session waiting for the
//! reply: `tokio::sync::oneshot`'s interface without its atomics, since both ends live on the
//! same worker thread (the pipe and the session are tasks of one `LocalSet`). tokio's channel
//! cost about 350 instructions per request at `-P 1` (callgrind) in atomic state changes and
//! waker bookkeeping; this one is a `RefCell` and a stored waker.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// The end that answers.
pub struct Sender<T>(Rc<RefCell<Slot<T>>>);

/// The end that waits.
pub struct Receiver<T>(Rc<RefCell<Slot<T>>>);

/// The sender went away without sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

pub mod error {
    /// Why [`super::Receiver::try_recv`] has no value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TryRecvError {
        /// Not sent yet.
        Empty,
        /// The sender went away without sending.
        Closed,
    }
}

use error::TryRecvError;

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
        sender_gone: false,
        receiver_gone: false,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    /// Hands over the value; gives it back if the receiver is gone. Inline: once per reply.
    #[inline(always)]
    pub fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut slot = self.0.borrow_mut();
            if slot.receiver_gone {
                return Err(value);
            }
            slot.value = Some(value);
            slot.waker.take()
        };
        // Woken outside the borrow: a waker may run code that looks at the slot.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is gone (nobody waits for the reply any more).
    pub fn is_closed(&self) -> bool {
        self.0.borrow().receiver_gone
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.0.borrow_mut();
            slot.sender_gone = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The value if it was sent, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut slot = self.0.borrow_mut();
        match slot.value.take() {
            Some(value) => Ok(value),
            None if slot.sender_gone => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, RecvError>> {
        let mut slot = self.0.borrow_mut();
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Ok(value));
        }
        if slot.sender_gone {
            return Poll::Ready(Err(RecvError));
        }
        match &mut slot.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut slot = self.0.borrow_mut();
        slot.receiver_gone = true;
        // A value nobody will take is dropped now, not when the sender goes.
        slot.value = None;
        slot.waker = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(rx: &mut Receiver<T>, waker: &Waker) -> Poll<Result<T, RecvError>> {
        Pin::new(rx).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_sent_value_wakes_the_waiting_receiver_once() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let (tx, mut rx) = channel();
        assert!(poll(&mut rx, &waker).is_pending());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(tx.send(7), Ok(()));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Ok(7)));
    }

    #[test]
    fn a_sender_dropped_unsent_closes_the_receiver() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let (tx, mut rx) = channel::<u8>();
        assert!(poll(&mut rx, &waker).is_pending());
        drop(tx);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Err(RecvError)));
    }

    #[test]
    fn a_value_sent_before_anyone_waits_is_taken_without_waiting() {
        let (tx, mut rx) = channel();
        assert!(!tx.is_closed());
        tx.send("reply").unwrap();
        assert_eq!(rx.try_recv(), Ok("reply"));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn a_receiver_gone_refuses_the_value_and_shows_as_closed() {
        let (tx, rx) = channel();
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(1), Err(1));
    }
}
