//! Adjustments for AWS emulators, applied only when an endpoint override is configured.
//!
//! moto's CloudWatch Logs returns event timestamps as floats (`1795627413889.782`) where the
//! API defines integers, and the SDK's strict parser rejects the whole page. The interceptor
//! buffers such a response and rounds those numbers, leaving everything else untouched.

use std::pin::Pin;
use std::task::{Context, Poll};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use http_body::{Body, Frame};

#[derive(Debug)]
pub struct IntegerTimestamps;

impl Intercept for IntegerTimestamps {
    fn name(&self) -> &'static str {
        "brizo-integer-timestamps"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response_mut().body_mut();
        let inner = std::mem::replace(body, SdkBody::taken());
        *body = SdkBody::from_body_1_x(Rounding {
            inner,
            buffer: Vec::new(),
            done: false,
        });
        Ok(())
    }
}

/// Reads the whole body, then yields it once with float timestamps rounded.
struct Rounding {
    inner: SdkBody,
    buffer: Vec<u8>,
    done: bool,
}

impl Body for Rounding {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let raw = std::mem::take(&mut self.buffer);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(round_timestamps(raw))))));
                }
            }
        }
    }
}

fn round_timestamps(raw: Vec<u8>) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return raw;
    };
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if let (true, Some(f)) =
                        (key.ends_with("Time") || key == "timestamp", item.as_f64())
                    {
                        if !item.is_i64() && !item.is_u64() {
                            *item = serde_json::Value::from(f.round() as i64);
                        }
                    } else {
                        walk(item);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    serde_json::to_vec(&value).unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    #[test]
    fn float_timestamps_become_integers_and_nothing_else_changes() {
        let raw = br#"{"events":[{"ingestionTime":1795627414475,"message":"x 1.5","timestamp":1795627413889.782}],"nextForwardToken":"f/1"}"#;
        let fixed: serde_json::Value =
            serde_json::from_slice(&super::round_timestamps(raw.to_vec())).unwrap();
        assert_eq!(
            fixed["events"][0]["timestamp"],
            serde_json::json!(1795627413890i64)
        );
        assert_eq!(
            fixed["events"][0]["ingestionTime"],
            serde_json::json!(1795627414475i64)
        );
        assert_eq!(fixed["events"][0]["message"], "x 1.5");
        assert_eq!(super::round_timestamps(b"not json".to_vec()), b"not json");
    }
}
