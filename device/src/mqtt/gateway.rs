//! Gateway mode: the agent's one MQTT connection also carries the events of devices behind it
//! (`[[gateway.devices]]`), as IoT Core's gateways did. After every CONNECT (so after each token
//! renewal too) a task per device publishes to `/devices/{child}/attach` at QoS 1, with
//! `{"authorization": "<child JWT>"}` when the settings hold that device's key (the registry's
//! `gatewayAuthMethod` may ask for it) and `{}` otherwise, and waits for the PUBACK. A refused
//! attach comes back on the gateway's errors topic: it is logged with the bridge's reason and
//! tried again with backoff, while the gateway's own traffic and the other devices' go on. A
//! device's events are published on its own topics only while it is attached on the live
//! connection; a device the bridge detaches later (blocked, unbound, connected elsewhere: told
//! on the errors topic) is attached again the same way.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{CONNECTION_WAIT, Session, Topics, transient};
use crate::sender::Backoff;
use crate::token::TokenSource;
use crate::transport::Failure;

/// A device behind this gateway, as the settings name it.
#[derive(Debug, Clone)]
pub struct Child {
    /// Its device id.
    pub id: String,
    /// Its own tokens, when the settings hold its key: sent with the attach.
    pub tokens: Option<TokenSource>,
}

/// Where a device behind the gateway stands on one connection.
#[derive(Debug, Clone)]
pub(crate) enum Attachment {
    /// Its attach is on its way (or about to be).
    Attaching,
    /// The bridge acknowledged its attach.
    Attached,
    /// Its last attach was refused, or the bridge detached it, for this reason; another
    /// attempt follows after a backoff.
    Refused(Failure),
}

impl Session {
    /// Waits (a little) until `child` is attached on this connection; the refusal when it is
    /// not.
    pub(crate) async fn attached(&self, child: &str) -> Result<(), Failure> {
        let mut watching = self.attachments.subscribe();
        let settled = |all: &std::collections::HashMap<String, Attachment>| {
            !matches!(all.get(child), Some(Attachment::Attaching))
        };
        let waited = tokio::time::timeout(CONNECTION_WAIT, watching.wait_for(settled)).await;
        let Ok(Ok(all)) = waited else {
            return Err(transient(&format!(
                "device `{child}` is not attached to this gateway yet"
            )));
        };
        match all.get(child) {
            Some(Attachment::Attached) => Ok(()),
            Some(Attachment::Refused(failure)) => Err(failure.clone()),
            Some(Attachment::Attaching) | None => Err(Failure::Refused {
                reason: format!(
                    "device `{child}` is not one of this gateway's devices: its readings stay in \
                     the spool until it is back in [[gateway.devices]]"
                ),
                info_reason: None,
            }),
        }
    }

    /// The bridge says `child` is not attached (any more): it is attached again.
    pub(crate) fn detached(&self, child: &str, failure: Failure) {
        self.attachments
            .send_if_modified(|all| match all.get_mut(child) {
                Some(attachment @ Attachment::Attached) => {
                    *attachment = Attachment::Refused(failure);
                    true
                }
                _ => false,
            });
    }

    fn set_attachment(&self, child: &str, to: Attachment) {
        self.attachments.send_modify(|all| {
            all.insert(child.to_owned(), to);
        });
    }

    /// Waits until `child` is no longer attached.
    async fn until_detached(&self, child: &str) {
        let mut watching = self.attachments.subscribe();
        let _ = watching
            .wait_for(|all| !matches!(all.get(child), Some(Attachment::Attached)))
            .await;
    }
}

/// Starts keeping every child attached on `session`; dropping the set stops them (the
/// connection task does when the connection ends).
pub(crate) fn attach_all(
    session: &Arc<Session>,
    children: &[Child],
    max_backoff: Duration,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for child in children {
        tasks.spawn(keep_attached(session.clone(), child.clone(), max_backoff));
    }
    tasks
}

/// Attaches `child`, again after each refusal (with backoff) and each detach, until the
/// session ends.
async fn keep_attached(session: Arc<Session>, child: Child, max_backoff: Duration) {
    let mut backoff = Backoff::new(max_backoff);
    loop {
        session.set_attachment(&child.id, Attachment::Attaching);
        match attach(&session, &child).await {
            Ok(()) => {
                tracing::info!(device = %child.id, "attached a device behind this gateway");
                session.set_attachment(&child.id, Attachment::Attached);
                backoff = Backoff::new(max_backoff);
                session.until_detached(&child.id).await;
                tracing::info!(device = %child.id, "the MQTT bridge detached a device behind this gateway; attaching it again");
            }
            Err(_) if session.is_closed() => return,
            Err(failure) => {
                let pause = backoff.next(None);
                tracing::warn!(
                    device = %child.id,
                    error = %failure,
                    retry_in_ms = pause.as_millis() as u64,
                    "the MQTT bridge refused to attach a device behind this gateway; its readings \
                     wait in the spool"
                );
                session.set_attachment(&child.id, Attachment::Refused(failure));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// One attach: its PUBACK, or the bridge's refusal.
async fn attach(session: &Session, child: &Child) -> Result<(), Failure> {
    let payload = match &child.tokens {
        Some(tokens) => {
            let token = tokens.fresh().map_err(|err| Failure::Refused {
                reason: format!("cannot sign a token for device `{}`: {err}", child.id),
                info_reason: None,
            })?;
            serde_json::json!({ "authorization": token })
        }
        None => serde_json::json!({}),
    };
    let topic = Topics::of(&child.id).attach();
    session.publish(topic, payload.to_string().as_bytes()).await
}
