//! Reading a request body whole, within a size limit, a pause limit between its parts and a
//! limit on the whole read, so a client that trickles its body cannot hold a request (and
//! its connection) open.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive in time (limit {0:?})")]
    Timeout(Duration),
    #[error("the request body could not be read: {0}")]
    Unreadable(#[source] axum::Error),
}

/// The limits of one read.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    pub(super) max_bytes: usize,
    pub(super) idle: Duration,
    pub(super) total: Duration,
}

/// Read `body` whole within `limits`.
pub(super) async fn read_body(body: Body, limits: BodyLimits) -> Result<Bytes, BodyError> {
    tokio::time::timeout(limits.total, read_frames(body, limits))
        .await
        .unwrap_or(Err(BodyError::Timeout(limits.total)))
}

async fn read_frames(mut body: Body, limits: BodyLimits) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(limits.idle, body.frame())
            .await
            .map_err(|_| BodyError::Timeout(limits.idle))?;
        let Some(frame) = frame else {
            return Ok(buf.freeze());
        };
        let frame = frame.map_err(BodyError::Unreadable)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limits.max_bytes {
                return Err(BodyError::TooLarge(limits.max_bytes));
            }
            if buf.is_empty() && hyper::body::Body::is_end_stream(&body) {
                // One frame, the whole body: no copy.
                return Ok(data);
            }
            buf.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{StreamExt, stream};

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            idle: Duration::from_millis(200),
            total: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limit() {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        let body = Body::from_stream(stream::iter(parts));
        assert_eq!(read_body(body, limits(4)).await.expect("read"), "abcd");
        let body = Body::from("abcde");
        assert!(matches!(
            read_body(body, limits(4)).await,
            Err(BodyError::TooLarge(4))
        ));
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_times_out() {
        let first: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"a"))];
        let stalled = stream::iter(first).chain(stream::pending());
        let body = Body::from_stream(stalled);
        let started = std::time::Instant::now();
        assert!(matches!(
            read_body(body, limits(100)).await,
            Err(BodyError::Timeout(d)) if d == Duration::from_millis(200)
        ));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the pause limit ended it"
        );
    }

    #[tokio::test]
    async fn a_trickling_body_hits_the_total_limit() {
        let trickle = stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
        });
        let body = Body::from_stream(trickle);
        let l = BodyLimits {
            max_bytes: 1 << 20,
            idle: Duration::from_millis(200),
            total: Duration::from_millis(500),
        };
        assert!(matches!(
            read_body(body, l).await,
            Err(BodyError::Timeout(d)) if d == Duration::from_millis(500)
        ));
    }
}
