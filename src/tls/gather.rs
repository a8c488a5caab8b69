//! Writes gathered across a connection task's flushes: one `write(2)` a round, not one a
//! flush.
//!
//! h2 chains a DATA payload larger than its copy threshold (1 KiB on a stream that takes no
//! vectored writes, 256 bytes on one that does) after its write buffer, and must flush before
//! it buffers the next frame. Every h2 flush ends with a flush of its transport, so an answer
//! over the threshold (a batch of rows with a receipt, for one) costs a TLS record and a
//! `write(2)` for the frames before it, one for itself, and one for its trailers with what
//! follows. [`Gathered`] keeps what is written in a buffer, and a flush that comes while the
//! task still has work in hand only marks the buffer as due and wakes the task: the buffer
//! goes out, as one TLS record and one system call, when
//!
//! - the task reads its connection again (h2 reads first thing every time its connection is
//!   polled, and the wake-up makes sure it is polled),
//! - a flush comes with nothing written since the last one (no more to gather),
//! - the buffer would overflow, or
//! - the connection shuts down.
//!
//! A flush therefore returns before its bytes reach the socket, but never later than the
//! task's next turn; the wake-up it leaves guarantees that turn.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose writes are gathered until its task's next turn (see the module).
#[derive(Debug)]
pub struct Gathered<S> {
    io: S,
    buf: Vec<u8>,
    /// The buffer's length when a flush last deferred it: the buffer is due.
    due: Option<usize>,
}

impl<S> Gathered<S> {
    /// Gathers up to `capacity` bytes written to `io`.
    pub fn with_capacity(capacity: usize, io: S) -> Self {
        Self {
            io,
            buf: Vec::with_capacity(capacity),
            due: None,
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
                    if let Some(due) = self.due.as_mut() {
                        *due = due.saturating_sub(sent);
                    }
                    return Poll::Pending;
                }
            }
        };
        self.buf.clear();
        self.due = None;
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
        if self.due.is_some() {
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
        if buf.len() >= self.buf.capacity() {
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        self.buf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().fold(0usize, |n, b| n.saturating_add(b.len()));
        if self.buf.len().saturating_add(total) > self.buf.capacity() && !self.buf.is_empty() {
            ready!(self.poll_send(cx))?;
        }
        if total >= self.buf.capacity() {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        // Slices are copied into the buffer either way: the writer need not copy them first.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        let len = self.buf.len();
        if self.due == Some(len) {
            // Nothing written since the last flush: nothing more to gather.
            return self.poll_send(cx);
        }
        self.due = Some(len);
        cx.waker().wake_by_ref();
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

    #[test]
    fn a_turns_flushes_leave_as_one_write_when_the_task_reads_again() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(1024, Recorder::default());

        // One turn: frames, a flush (h2's, before a chained payload), more, a flush.
        write(&mut g, &mut cx, b"headers");
        flush(&mut g, &mut cx);
        write(&mut g, &mut cx, b"payload");
        write(&mut g, &mut cx, b"trailers");
        flush(&mut g, &mut cx);
        assert!(
            g.io.writes.is_empty(),
            "nothing reaches the socket during the turn"
        );
        assert_eq!(g.gathered(), 22);
        assert!(
            wakes.0.load(Ordering::SeqCst) >= 1,
            "the task is woken for its next turn"
        );

        // The next turn reads first: the gathered bytes go out in one write, flushed.
        read(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"headerspayloadtrailers".to_vec()]);
        assert_eq!(g.io.flushes, 1);
        assert_eq!(g.gathered(), 0);

        // With nothing gathered, a read writes nothing.
        read(&mut g, &mut cx);
        assert_eq!(g.io.writes.len(), 1);
    }

    #[test]
    fn a_flush_with_nothing_new_since_the_last_sends_at_once() {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(1024, Recorder::default());
        write(&mut g, &mut cx, b"answer");
        flush(&mut g, &mut cx);
        assert!(g.io.writes.is_empty());
        flush(&mut g, &mut cx);
        assert_eq!(g.io.writes, vec![b"answer".to_vec()]);
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
    fn a_full_socket_keeps_the_rest_due_and_sends_it_later() {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut g = Gathered::with_capacity(
            1024,
            Recorder {
                room: Some(4),
                ..Recorder::default()
            },
        );
        write(&mut g, &mut cx, b"abcdefgh");
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
