//! [`ObservedBus`]: any bus, with a span, a debug event and metrics for every
//! send and receive, and the sender's trace context put into each envelope.
//! It observes the transport only: ask the bus it wraps for its capabilities.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument as _;
use troupe_core::AgentId;
use troupe_core::bus::{Bus, BusError, Delivery, Subscription};
use troupe_core::envelope::Envelope;

use super::events::{MessageReceived, MessageSent, emit};
use super::metrics::topic_label;
use super::propagation;

/// Wraps a bus so that every send and receive is observed. The runtime wraps
/// the bus it is given; wrapping twice only doubles the counts.
///
/// ```
/// use std::sync::Arc;
/// use troupe::telemetry::ObservedBus;
/// use troupe_core::bus::{Bus, MemoryBus};
///
/// let bus: Arc<dyn Bus> = Arc::new(ObservedBus::new(Arc::new(MemoryBus::default())));
/// assert_eq!(bus.name(), "memory");
/// ```
pub struct ObservedBus {
    inner: Arc<dyn Bus>,
}

impl std::fmt::Debug for ObservedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObservedBus({})", self.inner.name())
    }
}

impl ObservedBus {
    /// Observes `inner`.
    pub fn new(inner: Arc<dyn Bus>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl Bus for ObservedBus {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn publish(&self, topic: &str, mut envelope: Envelope) -> Result<(), BusError> {
        let kind = envelope.kind.as_str();
        let span = tracing::debug_span!(
            "bus.send",
            otel.name = %format_args!("send {}", topic_label(topic)),
            otel.kind = "producer",
            messaging.system = self.inner.name(),
            messaging.operation.type = "send",
            messaging.destination.name = %topic_label(topic),
            messaging.message.id = %envelope.id,
            message_type = kind,
        );
        // A message sent inside a traced step keeps that step's context (the
        // dispatch sets its own); anything else is parented on this send.
        if envelope.trace_context.is_empty() {
            propagation::inject(&span, &mut envelope.trace_context);
        }
        let message_id = envelope.id;
        let result = self
            .inner
            .publish(topic, envelope)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        emit(MessageSent {
            topic,
            message_id: &message_id,
            kind,
            error: result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        });
        result
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &AgentId,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let inner = self.inner.subscribe(topic, group, consumer).await?;
        Ok(Box::new(ObservedSubscription {
            inner,
            system: self.inner.name().to_owned(),
            topic_label: topic_label(topic),
        }))
    }
}

struct ObservedSubscription {
    inner: Box<dyn Subscription>,
    system: String,
    topic_label: String,
}

#[async_trait]
impl Subscription for ObservedSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        let delivery = self.inner.next().await?;
        let envelope = &delivery.envelope;
        let kind = envelope.kind.as_str();
        let latency = (chrono::Utc::now() - envelope.created_at)
            .to_std()
            .unwrap_or_default();
        let span = tracing::debug_span!(
            "bus.receive",
            otel.name = %format_args!("receive {}", self.topic_label),
            otel.kind = "consumer",
            messaging.system = %self.system,
            messaging.operation.type = "receive",
            messaging.destination.name = %self.topic_label,
            messaging.message.id = %envelope.id,
            message_type = kind,
            task_id = envelope.task_id.map(tracing::field::display),
            subtask_id = envelope.subtask_id.as_ref().map(tracing::field::display),
            request_id = envelope.request_id.as_deref(),
        );
        propagation::set_parent(&span, &envelope.trace_context);
        span.in_scope(|| {
            emit(MessageReceived {
                topic: &delivery.topic,
                message_id: &envelope.id,
                kind,
                from: &envelope.from,
                delivery_count: delivery.delivery_count,
                latency,
            });
        });
        Ok(delivery)
    }
}
