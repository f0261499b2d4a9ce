//! A single-threaded mailbox: tasks of one shard push, the shard's loop awaits. No locks (the
//! shard is one thread), bounded by the caller (replies exist only for requests it made).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Shared by the shard loop and the tasks it spawned.
pub(crate) struct Mailbox<T> {
    inner: Rc<RefCell<(VecDeque<T>, Option<Waker>)>>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> Mailbox<T> {
    pub(crate) fn new() -> Self {
        Self { inner: Rc::new(RefCell::new((VecDeque::new(), None))) }
    }

    pub(crate) fn push(&self, item: T) {
        let mut g = self.inner.borrow_mut();
        g.0.push_back(item);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.inner.borrow().0.len()
    }

    pub(crate) fn pop(&self) -> Option<T> {
        self.inner.borrow_mut().0.pop_front()
    }

    /// Resolves when the mailbox is non-empty.
    pub(crate) fn ready(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut g = self.inner.borrow_mut();
            if g.0.is_empty() {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }
}
