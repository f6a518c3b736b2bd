//! The runtime as the bus's [`Subscribers`]: a loaded context version that subscribes to
//! events, whose handler runs as an invocation of `ctxhost:platform/subscriber.handle`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::context::LoadedContext;
use super::engine::Runtime;
use crate::bus::{Envelope, HandlerError, Subscriber, Subscribers};
use crate::state::SharedUnit;

/// One version of a context, for the bus.
struct Handler {
    runtime: Runtime,
    ctx: Arc<LoadedContext>,
}

impl Subscriber for Handler {
    fn subscriptions(&self) -> &[String] {
        &self.ctx.subscriptions
    }

    fn handle<'a>(
        &'a self,
        unit: SharedUnit,
        event: &'a Envelope,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        Box::pin(async move {
            match self
                .runtime
                .invoke_handler(self.ctx.clone(), unit, event)
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(HandlerError::Refused(reason)),
                Err(e) => Err(HandlerError::Failed(Box::new(e))),
            }
        })
    }
}

impl Subscribers for Runtime {
    fn subscriber(&self, context: &str) -> Option<Arc<dyn Subscriber>> {
        let ctx = self.registry().get(context)?;
        Some(Arc::new(Handler {
            runtime: self.clone(),
            ctx,
        }))
    }
}
