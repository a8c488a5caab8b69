//! Writes gathered across h2's forced flushes: one TLS record and one `write(2)` a turn of
//! the connection's task, not one a flush.
//!
//! h2 copies a DATA payload into its write buffer, with the frames around it, only up to a
//! threshold (1 KiB on a stream that takes no vectored writes, as this one). A larger payload
//! is chained after the buffer, and h2 must flush before it can buffer the next frame: it
//! writes the buffer, then the payload (two writes), then flushes its transport. Through
//! tokio-rustls every write is a TLS record and a `write(2)`, so an answer over the threshold
//! (a batch of rows with a receipt, for one) cost three: the frames before it, itself, and its
//! trailers with what followed.
//!
//! [`Gathered`] keeps what is written in a buffer. A flush that follows two or more writes
//! (h2 flushing a chained payload, in the middle of its turn) only marks the buffer as due;
//! any other flush sends it, as one TLS record and one system call. In the middle of a turn
//! h2 always has another frame in hand, and flushes again at the end of the turn, so the
//! due bytes normally leave then. Should that payload be the turn's last frame, the task is
//! woken once the worker has run out of other work (tokio's yield), and h2, which reads
//! first thing each turn, sends them from [`Gathered`]'s read. The buffer also goes out when
//! it would overflow, and before a shutdown.
//!
//! A flush therefore returns before its bytes reach the socket only when more are coming in
//! the same turn, and never later than the task's next one. Small answers (under the
//! threshold) are flushed as before, so a lone call waits for nothing.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that gathers what is written to it across forced flushes (see the module).
#[derive(Debug)]
pub struct Gathered<S> {
    io: S,
    buf: Vec<u8>,
    /// Set when a flush deferred the buffer: it goes out at the task's next turn at the latest.
    due: bool,
    /// Writes taken since the last flush.
    writes: usize,
}

impl<S> Gathered<S> {
    /// Gathers up to `capacity` bytes written to `io`.
    pub fn with_capacity(capacity: usize, io: S) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(capacity),
            due: false,
            writes: 0,
        }
    }

    /// Bytes gathered and not yet handed to the stream.
    #[cfg(test)]
    fn gathered(&self) -> usize {
        self.buf.len()
    }
}

impl<S: AsyncWrite + Unpin> Gathered<S> {
    /// Hands the whole buffer to the stream and flushes it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.buf.len() {
                break Ok(());
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.buf[sent..]) {
                Poll::Ready(Ok(0)) => {
                    break Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the connection took none of the gathered bytes",
                    ));
                }
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => {
                    self.buf.drain(..sent);
                    return Poll::Pending;
                }
            }
        };
        self.buf.clear();
        self.due = false;
        result?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.due {
            // The task's next turn: what its last one gathered goes out first. A socket that
            // takes no more now wakes the task when it does; the bytes stay due.
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() + buf.len() > self.buf.capacity() && !self.buf.is_empty() {
            ready!(self.poll_send(cx))?;
        }
        self.writes += 1;
        if buf.len() >= self.buf.capacity() {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        self.buf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let writes = std::mem::take(&mut self.writes);
        if self.buf.is_empty() {
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        if writes < 2 {
            return self.poll_send(cx);
        }
        // A chained payload: more is coming this turn. Should it not, the task's next turn
        // sends the buffer; tokio's yield defers that wake-up until the worker has run out
        // of other work (a task that woke itself would be queued as a yield and wake another
        // worker to steal it).
        if !self.due {
            self.due = true;
            let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            ready!(self.poll_send(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// A stream that records each write it takes, reads nothing yet, and takes no more than
    /// `room` bytes before it says it is full.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
        room: Option<usize>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = match self.room {
                Some(0) => return Poll::Pending,
                Some(room) => room.min(buf.len()),
                None => buf.len(),
            };
            if let Some(room) = self.room.as_mut() {
                *room -= n;
            }
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(g: &mut Gathered<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        assert!(
            matches!(Pin::new(g).poll_write(cx, bytes), Poll::Ready(Ok(n)) if n == bytes.len())
        );
    }

    fn flush(g: &mut Gathered<Recorder>, cx: &mut Context<'_>) {
        assert!(matches!(Pin::new(g).poll_flush(cx), Poll::Ready(Ok(()))));
    }

    fn read(g: &mut Gathered<Recorder>, cx: &mut Context<'_>) {
        let mut space = [0u8; 8];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(g).poll_read(cx, &mut buf).is_pending());
    }

    fn counted_waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    /// h2 in mid-turn: its buffer, then a chained payload, and the flush it must make before
    /// it can buffer the next frame. Nothing reaches the socket, and the task is woken once,
    /// in case the turn ends here.
    fn chained_payload_flushed(g: &mut Gathered<Recorder>, cx: &mut Context<'_>, wakes: &Wakes) {
        write(g, cx, b"headers");
        write(g, cx, b"payload");
        flush(g, cx);
        assert!(
            g.io.writes.is_empty(),
            "nothing reaches the socket mid-turn"
        );
        assert_eq!(g.gathered(), 14);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "woken once, in case the turn ends here"
        );
    }

    #[test]
    fn a_chained_payload_leaves_with_the_rest_of_its_turn_in_one_write() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(1024, Recorder::default());

        // h2's turn: the chained payload's flush, then the trailers and the turn's last flush.
        chained_payload_flushed(&mut g, &mut cx, &wakes);
        write(&mut g, &mut cx, b"trailers");
        flush(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"headerspayloadtrailers".to_vec()]);
        assert_eq!(g.io.flushes, 1);
        assert_eq!(g.gathered(), 0);

        // With nothing gathered, a read writes nothing.
        read(&mut g, &mut cx);
        assert_eq!(g.io.writes.len(), 1);
    }

    #[test]
    fn a_small_answer_is_sent_at_its_flush() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(1024, Recorder::default());
        write(&mut g, &mut cx, b"answer");
        flush(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"answer".to_vec()]);
        assert_eq!(g.io.flushes, 1);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a lone call waits for nothing"
        );
    }

    #[test]
    fn a_chained_payload_that_ends_the_turn_leaves_when_the_task_reads_again() {
        let (wakes, waker) = counted_waker();
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(1024, Recorder::default());
        chained_payload_flushed(&mut g, &mut cx, &wakes);
        // The task's next turn reads first.
        read(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"headerspayload".to_vec()]);
        assert_eq!(g.io.flushes, 1);
    }

    #[test]
    fn overflow_and_shutdown_send_what_was_gathered_in_order() {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(8, Recorder::default());
        write(&mut g, &mut cx, b"12345");
        // Would overflow: the first five go out before these are taken.
        write(&mut g, &mut cx, b"6789");
        assert_eq!(g.io.writes, vec![b"12345".to_vec()]);
        // As large as the buffer: straight through, after what was gathered.
        write(&mut g, &mut cx, b"abcdefgh");
        assert_eq!(
            g.io.writes,
            vec![b"12345".to_vec(), b"6789".to_vec(), b"abcdefgh".to_vec()]
        );
        write(&mut g, &mut cx, b"end");
        flush(&mut g, &mut cx);
        assert!(matches!(
            Pin::new(&mut g).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(g.io.writes.last().unwrap(), b"end");
        assert!(g.io.shut);
    }

    #[test]
    fn a_full_socket_keeps_the_rest_and_sends_it_later() {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(
            1024,
            Recorder {
                room: Some(4),
                ..Recorder::default()
            },
        );
        write(&mut g, &mut cx, b"abcd");
        write(&mut g, &mut cx, b"efgh");
        flush(&mut g, &mut cx);
        read(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"abcd".to_vec()]);
        assert_eq!(g.gathered(), 4, "the rest stays gathered");
        // The socket drains; the next turn sends the rest.
        g.io.room = None;
        read(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"abcd".to_vec(), b"efgh".to_vec()]);
        assert_eq!(g.gathered(), 0);
    }
}
