//! The queue between a worker's sessions and one pipe's writer: `tokio::sync::mpsc`'s
//! unbounded channel without its atomics, since every end lives on the same worker thread
//! (the sessions and the pipe are tasks of one `LocalSet`). tokio's channel cost about 150
//! instructions per request at `-P 1` (callgrind) in atomic slot claims, semaphore permits and
//! its waker; this one is a `RefCell<VecDeque>` and a waker that is woken only when the
//! writer actually waits for work.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Shared by the pipe's handle (which pushes) and its connection task (which takes).
pub(super) struct Queue<T> {
    items: RefCell<VecDeque<T>>,
    /// The writer's waker, kept between waits: a task's waker is only cloned again when the
    /// writer runs in another task.
    waker: RefCell<Option<Waker>>,
    /// Whether the writer waits for work and must be woken by the next push.
    writer_waiting: Cell<bool>,
    /// The handle is gone: nothing more will be pushed.
    handle_gone: Cell<bool>,
    /// The connection task is over: pushes are refused.
    closed: Cell<bool>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            writer_waiting: Cell::new(false),
            handle_gone: Cell::new(false),
            closed: Cell::new(false),
        }
    }
}

impl<T> Queue<T> {
    /// Queues `item`; gives it back if the connection task is over.
    pub fn push(&self, item: T) -> Result<(), T> {
        if self.closed.get() {
            return Err(item);
        }
        self.items.borrow_mut().push_back(item);
        self.wake_writer();
        Ok(())
    }

    /// The handle is gone: the writer, once the queue is empty, learns that nothing more comes.
    pub fn close_handle(&self) {
        self.handle_gone.set(true);
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if self.writer_waiting.replace(false) {
            // Woken by reference: the waker stays for the writer's next wait.
            if let Some(waker) = self.waker.borrow().as_ref() {
                waker.wake_by_ref();
            }
        }
    }

    /// Waits for queued items and moves up to `limit` of them into `batch` (which should be
    /// empty: its storage is swapped with the queue's when everything fits). Returns how many
    /// it moved; 0 once the handle is gone and the queue is empty.
    pub async fn take(&self, batch: &mut VecDeque<T>, limit: usize) -> usize {
        poll_fn(|cx| {
            let mut items = self.items.borrow_mut();
            if items.is_empty() {
                if self.handle_gone.get() {
                    return Poll::Ready(0);
                }
                let mut waker = self.waker.borrow_mut();
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                self.writer_waiting.set(true);
                return Poll::Pending;
            }
            self.writer_waiting.set(false);
            if items.len() <= limit && batch.is_empty() {
                std::mem::swap(&mut *items, batch);
            } else {
                let n = items.len().min(limit);
                batch.extend(items.drain(..n));
            }
            Poll::Ready(batch.len())
        })
        .await
    }

    /// The connection task is over: refuses further pushes and hands back what was queued.
    pub fn close(&self) -> VecDeque<T> {
        self.closed.set(true);
        self.writer_waiting.set(false);
        self.waker.borrow_mut().take();
        std::mem::take(&mut *self.items.borrow_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_take(
        queue: &Queue<u32>,
        batch: &mut VecDeque<u32>,
        limit: usize,
        waker: &Waker,
    ) -> Poll<usize> {
        let mut cx = Context::from_waker(waker);
        let mut future = std::pin::pin!(queue.take(batch, limit));
        future.as_mut().poll(&mut cx)
    }

    use std::future::Future;

    #[test]
    fn the_writer_is_woken_once_per_wait_and_takes_in_order_up_to_the_limit() {
        let queue = Rc::new(Queue::<u32>::default());
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut batch = VecDeque::new();

        assert_eq!(poll_take(&queue, &mut batch, 2, &waker), Poll::Pending);
        for i in 1..=3 {
            assert!(queue.push(i).is_ok());
        }
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "one wake for three pushes"
        );

        assert_eq!(poll_take(&queue, &mut batch, 2, &waker), Poll::Ready(2));
        assert_eq!(batch.drain(..).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(poll_take(&queue, &mut batch, 2, &waker), Poll::Ready(1));
        assert_eq!(batch.drain(..).collect::<Vec<_>>(), [3]);

        // Pushed while the writer was busy: no wake, it looks again before waiting.
        assert!(queue.push(4).is_ok());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_take(&queue, &mut batch, 8, &waker), Poll::Ready(1));
        assert_eq!(batch.drain(..).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn a_gone_handle_ends_the_writer_after_the_queue_empties() {
        let queue = Queue::<u32>::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut batch = VecDeque::new();

        assert!(queue.push(7).is_ok());
        queue.close_handle();
        assert_eq!(poll_take(&queue, &mut batch, 8, &waker), Poll::Ready(1));
        batch.clear();
        assert_eq!(poll_take(&queue, &mut batch, 8, &waker), Poll::Ready(0));

        let waiting = Queue::<u32>::default();
        assert_eq!(poll_take(&waiting, &mut batch, 8, &waker), Poll::Pending);
        waiting.close_handle();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the waiting writer is woken"
        );
        assert_eq!(poll_take(&waiting, &mut batch, 8, &waker), Poll::Ready(0));
    }

    #[test]
    fn a_closed_queue_hands_back_what_it_held_and_refuses_more() {
        let queue = Queue::<u32>::default();
        assert!(queue.push(1).is_ok());
        assert!(queue.push(2).is_ok());
        assert_eq!(queue.close().into_iter().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(queue.push(3), Err(3));
    }
}
