//! The one Server-Sent Events relay for answers streamed from the agent engine, shared by
//! the playground (POST /api/agents/:id/test with `stream: true`) and /v1/chat/completions.
//!
//! The relay owns what both need: the channel of answer text from the engine, keep-alive
//! comments, cancellation of the turn (and its upstream request) as soon as the client goes
//! away, the optional analytics record, and a final event for success or failure. What
//! differs, the framing of those events (`delta`/`done`/`error` events vs OpenAI chunks and
//! `[DONE]`), is a [`Framing`].

use crate::agent::{Engine, Turn, TurnError, TurnResult};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One Server-Sent Event as the OpenAPI document describes a `text/event-stream` answer:
/// its `event` name (none for OpenAI chunks) and its `data` line (JSON text, or `[DONE]`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// `delta`, `done` or `error` for the playground; absent for /v1 chunks.
    event: Option<String>,
    /// The event's data: a JSON document, or `[DONE]` at the end of a /v1 stream.
    data: String,
}

/// Answer text and events buffered between the engine, the relay and the client.
const BUFFER: usize = 64;

/// How one API frames a streamed turn as SSE events.
pub trait Framing: Send + 'static {
    /// Events before the first text (e.g. OpenAI's role chunk).
    fn start(&mut self) -> Vec<Event> {
        Vec::new()
    }
    /// Events for a piece of the answer's text.
    fn delta(&mut self, text: String) -> Vec<Event>;
    /// Events for the finished turn.
    fn done(&mut self, result: &TurnResult) -> Vec<Event>;
    /// Events for a failed turn.
    fn failed(&mut self, error: &TurnError) -> Vec<Event>;
    /// Events after everything else (e.g. OpenAI's `[DONE]`).
    fn end(&mut self) -> Vec<Event> {
        Vec::new()
    }
}

/// Whether the relay records the turn in the agent's daily analytics (turns without a
/// conversation: /v1 records, the playground does not).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Detached,
    No,
}

/// Runs `turn` on `engine` and answers with its events as they come.
pub fn relay(
    engine: Arc<Engine>,
    turn: Turn,
    mut framing: impl Framing,
    record: Record,
) -> Response {
    let (tx, mut rx) = mpsc::channel::<String>(BUFFER);
    let (ev_tx, ev_rx) = mpsc::channel::<Result<Event, Infallible>>(BUFFER);
    let stats = (record == Record::Detached).then(|| (turn.caller.clone(), turn.agent.clone()));
    tokio::spawn(async move {
        // False once the client is gone.
        let send = |events: Vec<Event>| {
            let ev_tx = ev_tx.clone();
            async move {
                for e in events {
                    if ev_tx.send(Ok(e)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        if !send(framing.start()).await {
            return;
        }
        let run = engine.run(turn, Some(tx));
        tokio::pin!(run);
        let mut result = None;
        loop {
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => {
                        if !send(framing.delta(d)).await {
                            // Returning drops the turn, which aborts its upstream request.
                            return;
                        }
                    }
                    // The turn is over and every piece of text was relayed.
                    None => if result.is_some() { break },
                },
                r = &mut run, if result.is_none() => result = Some(r),
                // The client left while the turn was busy elsewhere (retrieval, tools).
                _ = ev_tx.closed() => return,
            }
        }
        let Some(result) = result else { return };
        if let Some((caller, agent)) = &stats {
            engine.record_detached(caller, agent, &result).await;
        }
        let events = match &result {
            Ok(r) => framing.done(r),
            Err(e) => framing.failed(e),
        };
        if send(events).await {
            send(framing.end()).await;
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(ev_rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// An event with a JSON payload; a value that cannot be serialised becomes an empty object
/// (every payload here is built from plain data, so this does not happen in practice).
pub fn json_event(name: Option<&str>, data: &impl serde::Serialize) -> Event {
    let e = Event::default();
    let e = match name {
        Some(n) => e.event(n),
        None => e,
    };
    match e.clone().json_data(data) {
        Ok(e) => e,
        Err(_) => e.data("{}"),
    }
}
