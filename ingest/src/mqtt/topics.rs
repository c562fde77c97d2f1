//! IoT Core's fixed MQTT topics, and nothing else: a device publishes to
//! `/devices/{device}/events[/{subfolder…}]` and `/devices/{device}/state`, and subscribes to
//! `/devices/{device}/config`, `/devices/{device}/commands/#` and `/devices/{device}/errors`.
//! `{device}` is the device's own id (or numeric id, as the client id named it); another device's
//! topic is refused like any other, except on a gateway's connection, which may also use
//! `/devices/{device}/attach` and `/detach`, and the topics of the devices it attached.

/// What a device may publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishTopic<'a> {
    /// Telemetry, with its subfolder (`None` for plain `/events`).
    Event(Option<&'a str>),
    /// A state report.
    State,
}

/// What a device may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscription {
    /// `/devices/{d}/config`.
    Config,
    /// `/devices/{d}/commands/#`.
    Commands,
    /// `/devices/{d}/errors`.
    Errors,
}

/// The names a device may use for itself in topics: its id, and its numeric id.
#[derive(Debug, Clone)]
pub(crate) struct OwnTopics {
    id: String,
    num_id: String,
}

impl OwnTopics {
    pub(crate) fn new(id: &str, num_id: u64) -> Self {
        Self {
            id: id.to_owned(),
            num_id: num_id.to_string(),
        }
    }

    /// The part after `/devices/{d}/`, when `topic` is one of this device's own topics.
    fn rest<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let (device, rest) = split(topic)?;
        self.is_named(device).then_some(rest)
    }

    /// Whether `device`, as a topic names it, is this device (by id or numeric id).
    pub(crate) fn is_named(&self, device: &str) -> bool {
        device == self.id || device == self.num_id
    }

    /// Reads a PUBLISH topic; `Err` says why it is not one a device may publish to.
    pub(crate) fn publish<'a>(&self, topic: &'a str) -> Result<PublishTopic<'a>, String> {
        let Some(rest) = self.rest(topic) else {
            return Err(format!(
                "`{}` is not one of this device's topics; a device publishes to \
                 /devices/{}/events, /devices/{}/events/{{subfolder}} or /devices/{}/state",
                shorten(topic),
                self.id,
                self.id,
                self.id
            ));
        };
        match rest {
            "events" => Ok(PublishTopic::Event(None)),
            "state" => Ok(PublishTopic::State),
            _ => match rest.strip_prefix("events/") {
                Some(subfolder) if !subfolder.is_empty() => {
                    Ok(PublishTopic::Event(Some(subfolder)))
                }
                _ => Err(format!(
                    "`{}` is not a topic a device may publish to; use \
                     /devices/{}/events[/{{subfolder}}] for telemetry or /devices/{}/state",
                    shorten(topic),
                    self.id,
                    self.id
                )),
            },
        }
    }

    /// Reads a SUBSCRIBE filter; `Err` says why it is refused (SUBACK 0x80).
    pub(crate) fn subscription(&self, filter: &str) -> Result<Subscription, String> {
        match self.rest(filter) {
            Some("config") => Ok(Subscription::Config),
            Some("commands/#") => Ok(Subscription::Commands),
            Some("errors") => Ok(Subscription::Errors),
            Some(rest) if rest.starts_with("commands/") => Err(format!(
                "`{}`: subscribing to one command subfolder is not supported, as in IoT Core; \
                 subscribe to /devices/{}/commands/# and filter by topic",
                shorten(filter),
                self.id
            )),
            _ => Err(format!(
                "`{}` cannot be subscribed to; a device subscribes to /devices/{}/config, \
                 /devices/{}/commands/# or /devices/{}/errors",
                shorten(filter),
                self.id,
                self.id,
                self.id
            )),
        }
    }

    /// The topic configs are delivered on.
    pub(crate) fn config_topic(&self) -> String {
        format!("/devices/{}/config", self.id)
    }

    /// The topic a command is delivered on: `/devices/{d}/commands[/{subfolder}]`.
    pub(crate) fn command_topic(&self, subfolder: Option<&str>) -> String {
        match subfolder {
            Some(subfolder) => format!("/devices/{}/commands/{subfolder}", self.id),
            None => format!("/devices/{}/commands", self.id),
        }
    }

    /// The topic errors are delivered on.
    pub(crate) fn errors_topic(&self) -> String {
        format!("/devices/{}/errors", self.id)
    }
}

/// The device a `/devices/{device}/{rest}` topic names, and the rest.
pub(crate) fn split(topic: &str) -> Option<(&str, &str)> {
    topic.strip_prefix("/devices/")?.split_once('/')
}

/// A topic as it may appear in a message: long or odd ones cut, so a refusal stays readable.
pub(crate) fn shorten(topic: &str) -> String {
    let cut: String = topic.chars().take(200).collect();
    if cut.len() < topic.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnTopics {
        OwnTopics::new("dev-1", 42)
    }

    #[test]
    fn a_device_publishes_events_with_subfolders_and_state_under_its_id_or_number() {
        let own = own();
        assert_eq!(
            own.publish("/devices/dev-1/events"),
            Ok(PublishTopic::Event(None))
        );
        assert_eq!(
            own.publish("/devices/42/events/a/b"),
            Ok(PublishTopic::Event(Some("a/b")))
        );
        assert_eq!(own.publish("/devices/dev-1/state"), Ok(PublishTopic::State));
    }

    #[test]
    fn other_topics_and_other_devices_are_refused() {
        let own = own();
        for topic in [
            "/devices/dev-2/events",
            "/devices/dev-1/events/",
            "/devices/dev-1/config",
            "devices/dev-1/events",
            "/devices/dev-1",
            "/x",
        ] {
            assert!(own.publish(topic).is_err(), "{topic}");
        }
    }

    #[test]
    fn a_topic_names_its_device() {
        assert_eq!(split("/devices/dev-2/attach"), Some(("dev-2", "attach")));
        assert_eq!(split("/devices/7/events/a/b"), Some(("7", "events/a/b")));
        assert_eq!(split("/devices/dev-2"), None);
        assert!(own().is_named("42") && own().is_named("dev-1") && !own().is_named("dev-2"));
    }

    #[test]
    fn only_the_three_subscriptions_are_granted() {
        let own = own();
        assert_eq!(
            own.subscription("/devices/dev-1/config"),
            Ok(Subscription::Config)
        );
        assert_eq!(
            own.subscription("/devices/42/commands/#"),
            Ok(Subscription::Commands)
        );
        assert_eq!(
            own.subscription("/devices/dev-1/errors"),
            Ok(Subscription::Errors)
        );
        let err = own
            .subscription("/devices/dev-1/commands/reboot")
            .unwrap_err();
        assert!(err.contains("one command subfolder"), "{err}");
        assert!(own.subscription("/devices/dev-2/config").is_err());
        assert!(own.subscription("#").is_err());
    }
}
