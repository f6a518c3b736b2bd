//! Publishing events with JSON payloads and decoding delivered ones.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
pub use crate::bindings::ctxhost::platform::types::Event;

/// Publish `data` as the JSON payload of an event of type `event_type` about
/// `correlation_id`. It leaves the context only if the current unit of work commits.
pub fn publish_json<T: Serialize + ?Sized>(
    event_type: &str,
    correlation_id: &str,
    data: &T,
) -> Result<(), Error> {
    let bytes = serde_json::to_vec(data)?;
    crate::bindings::ctxhost::platform::events::publish(event_type, correlation_id, &bytes)
        .map_err(|e| Error(format!("publish {event_type}: {e}")))
}

/// Decode the JSON payload of a delivered event.
pub fn data_json<T: DeserializeOwned>(event: &Event) -> Result<T, Error> {
    serde_json::from_slice(&event.data).map_err(|e| {
        Error(format!(
            "event {} ({}): bad payload: {e}",
            event.id, event.type_
        ))
    })
}
