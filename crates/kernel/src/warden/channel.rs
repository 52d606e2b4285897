//! The warden's channel to the kernel: a `SOCK_SEQPACKET` socket pair, one JSON message per
//! packet, with open file descriptors attached where a message hands some over (a plugin's
//! connection and its stderr, the approval daemon's channel). Packets keep their boundaries,
//! so a descriptor always arrives with the message it belongs to.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use zeroize::Zeroizing;

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The message was not what this side expects.
    #[error("malformed message: {0}")]
    Malformed(#[source] p3ak_proto::ProtoError),
    /// The message to send does not encode.
    #[error("malformed message: {0}")]
    Encode(#[source] serde_json::Error),
    /// The message was larger than [`MAX_MESSAGE`] or carried too many descriptors.
    #[error("a message over {MAX_MESSAGE} bytes or {MAX_FDS} descriptors")]
    TooLarge,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> ChannelError {
    move |source| ChannelError::Io { context, source }
}

/// Two connected ends, both close-on-exec and non-blocking; one of them is usually handed to
/// a child process as its standard input.
pub fn pair() -> Result<(OwnedFd, OwnedFd), ChannelError> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| ChannelError::Io {
        context: "cannot create a socket pair",
        source: e.into(),
    })
}

/// One end of the channel.
pub struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// Wraps one end (made non-blocking here: a child may inherit a blocking one).
    pub fn new(fd: OwnedFd) -> Result<Self, ChannelError> {
        let mut flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| ChannelError::Io {
            context: "cannot read the channel's flags",
            source: e.into(),
        })?;
        flags |= rustix::fs::OFlags::NONBLOCK;
        rustix::fs::fcntl_setfl(&fd, flags).map_err(|e| ChannelError::Io {
            context: "cannot make the channel non-blocking",
            source: e.into(),
        })?;
        #[expect(
            deprecated,
            reason = "the replacement is `unsafe`; the deprecation is about types whose \
                      descriptor may change or close under the AsyncFd, and an OwnedFd owned by \
                      it stays open and the same for its whole life"
        )]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE | Interest::WRITABLE)
            .map_err(io("cannot watch the channel"))?;
        Ok(Self { fd })
    }

    /// Sends one message, with `fds` attached.
    pub async fn send<T: Serialize>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        let bytes = Zeroizing::new(serde_json::to_vec(message).map_err(ChannelError::Encode)?);
        if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(ChannelError::TooLarge);
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(io("cannot wait on the channel"))?;
            let sent = guard.try_io(|fd| {
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                    return Err(std::io::Error::other("descriptors do not fit"));
                }
                rustix::net::sendmsg(
                    fd.get_ref(),
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(Ok(n)) if n == bytes.len() => return Ok(()),
                Ok(Ok(_)) => return Err(ChannelError::TooLarge),
                Ok(Err(e)) => return Err(io("cannot send on the channel")(e)),
                Err(_would_block) => {}
            }
        }
    }

    /// The next message and the descriptors that came with it; `None` when the other end
    /// closed.
    pub async fn recv<T: DeserializeOwned>(
        &self,
    ) -> Result<Option<(T, Vec<OwnedFd>)>, ChannelError> {
        let mut buf = Zeroizing::new(vec![0u8; MAX_MESSAGE + 1]);
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(io("cannot wait on the channel"))?;
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = guard.try_io(|fd| {
                rustix::net::recvmsg(
                    fd.get_ref(),
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)
            });
            let received = match received {
                Ok(Ok(received)) => received,
                Ok(Err(e)) => return Err(io("cannot read the channel")(e)),
                Err(_would_block) => continue,
            };
            // Descriptors are taken out first, so that they are closed whatever happens next.
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            if received.bytes == 0 && fds.is_empty() {
                return Ok(None);
            }
            if received
                .flags
                .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
                || received.bytes > MAX_MESSAGE
                || fds.len() > MAX_FDS
            {
                return Err(ChannelError::TooLarge);
            }
            let payload = buf.get(..received.bytes).unwrap_or_default();
            let message =
                p3ak_proto::from_slice_strict(payload).map_err(ChannelError::Malformed)?;
            return Ok(Some((message, fds)));
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Note {
        text: String,
    }

    #[tokio::test]
    async fn messages_keep_their_boundaries_and_descriptors() {
        let (a, b) = pair().unwrap();
        let (a, b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let (x, mut y) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send(&Note { text: "one".into() }, &[x.as_fd()])
            .await
            .unwrap();
        a.send(&Note { text: "two".into() }, &[]).await.unwrap();
        drop(x);
        let (first, fds): (Note, _) = b.recv().await.unwrap().unwrap();
        assert_eq!(first.text, "one");
        assert_eq!(fds.len(), 1);
        // The descriptor is the same socket: what is written to it arrives at `y`.
        let mut sent = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
        std::io::Write::write_all(&mut sent, b"hi").unwrap();
        drop(sent);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut y, &mut got).unwrap();
        assert_eq!(got, "hi");
        let (second, fds): (Note, _) = b.recv().await.unwrap().unwrap();
        assert_eq!(second.text, "two");
        assert!(fds.is_empty());
        drop(a);
        assert!(b.recv::<Note>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn invariant_i9_a_malformed_or_oversized_message_is_an_error() {
        let (a, b) = pair().unwrap();
        let b = Channel::new(b).unwrap();
        rustix::net::send(&a, b"{not json", SendFlags::empty()).unwrap();
        assert!(matches!(
            b.recv::<Note>().await,
            Err(ChannelError::Malformed(_))
        ));
        // A repeated key means two things to two readers: refused.
        rustix::net::send(&a, br#"{"text":"a","text":"b"}"#, SendFlags::empty()).unwrap();
        assert!(matches!(
            b.recv::<Note>().await,
            Err(ChannelError::Malformed(e)) if e.to_string().contains("duplicate key")
        ));
        rustix::net::send(&a, &vec![b' '; MAX_MESSAGE + 10], SendFlags::empty()).unwrap();
        assert!(matches!(
            b.recv::<Note>().await,
            Err(ChannelError::TooLarge)
        ));
    }
}
