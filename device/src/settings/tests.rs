use super::*;

const EXAMPLE: &str = include_str!("../../packaging/config.toml");

#[test]
fn the_packaged_example_parses_and_names_every_field() {
    let file = parse(EXAMPLE).unwrap();
    let settings = Settings::resolve(file, Overrides::default()).unwrap();
    assert_eq!(settings.endpoint.as_str(), "https://iot.example.com/");
    assert_eq!(
        settings.device.to_string(),
        "projects/my-project/locations/us-central1/registries/barn/devices/boiler-7"
    );
    assert_eq!(settings.sync_interval, Duration::from_secs(1));
    assert_eq!(settings.config_poll, Some(Duration::from_secs(60)));
    assert_eq!(settings.spool_max_bytes, 64 * 1024 * 1024);
    assert_eq!(settings.token_lifetime.as_secs(), 3600);
    // Every field of the file struct appears in the example, commented out or not.
    for field in [
        "algorithm",
        "ca_file",
        "transport",
        "host",
        "port",
        "keepalive",
        "messages_per_second",
        "max_bytes",
        "sync_interval",
        "concurrency",
        "max_backoff",
        "sensors",
        "interval",
        "command",
        "command_interval",
        "stdin",
        "sub_folder",
        "poll_interval",
        "file",
        "hook",
        "id",
    ] {
        assert!(
            EXAMPLE.contains(&format!("{field} = ")),
            "{field} is not documented"
        );
    }
}

#[test]
fn flags_and_environment_beat_the_file() {
    let file = parse(EXAMPLE).unwrap();
    let over = Overrides {
        endpoint: Some("http://127.0.0.1:9".into()),
        device: Some("other-device".into()),
        spool_dir: Some("/tmp/spool".into()),
        stdin: true,
        clock_offset_secs: 1200,
        ..Overrides::default()
    };
    let settings = Settings::resolve(file, over).unwrap();
    assert_eq!(settings.endpoint.as_str(), "http://127.0.0.1:9/");
    assert_eq!(settings.device.device.to_string(), "other-device");
    assert_eq!(settings.spool_dir, PathBuf::from("/tmp/spool"));
    assert!(settings.stdin);
    assert_eq!(settings.clock_offset_secs, 1200);
}

#[test]
fn a_missing_field_names_its_flag_and_variable() {
    let err = Settings::resolve(FileSettings::default(), Overrides::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`endpoint` is not set: put it in the settings file or pass --endpoint (or IOTCORE_ENDPOINT)"
    );
}

#[test]
fn typos_and_bad_values_are_refused_with_the_field_named() {
    let err = parse("endpoint = \"x\"\nsensor = true\n").unwrap_err();
    assert!(err.contains("unknown field `sensor`"), "{err}");
    let file =
        parse(&EXAMPLE.replace("token_lifetime = \"1h\"", "token_lifetime = \"25h\"")).unwrap();
    let err = Settings::resolve(file, Overrides::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("`token_lifetime` = \"25h\""),
        "{err}"
    );
    assert!(err.to_string().contains("at most 24 h"), "{err}");
}

#[test]
fn a_missing_default_file_is_no_error_but_a_named_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    assert!(read_file(&path, false).is_ok());
    assert!(matches!(
        read_file(&path, true),
        Err(SettingsError::Read { .. })
    ));
}

#[test]
fn mqtt_is_chosen_by_the_file_or_overridden_and_defaults_to_the_endpoint_host() {
    let mut file = parse(EXAMPLE).unwrap();
    file.transport = Some("mqtt".into());
    let settings = Settings::resolve(file.clone(), Overrides::default()).unwrap();
    assert_eq!(settings.transport, TransportKind::Mqtt);
    assert_eq!(settings.mqtt.host, "iot.example.com");
    assert_eq!(settings.mqtt.port, 8883);
    assert_eq!(settings.mqtt.keepalive, Duration::from_secs(60));
    assert_eq!(settings.mqtt.messages_per_second, 100);
    let over = Overrides {
        transport: Some("https".into()),
        mqtt_host: Some("mqtt.example.com".into()),
        mqtt_port: Some(443),
        ..Overrides::default()
    };
    let settings = Settings::resolve(file.clone(), over).unwrap();
    assert_eq!(settings.transport, TransportKind::Https);
    assert_eq!(settings.mqtt.host, "mqtt.example.com");
    assert_eq!(settings.mqtt.port, 443);
    file.transport = Some("mqtt+ws".into());
    let settings = Settings::resolve(file.clone(), Overrides::default()).unwrap();
    assert_eq!(settings.transport, TransportKind::MqttWs);
    assert_eq!(
        settings.websocket_url().as_deref(),
        Some("wss://iot.example.com:443/mqtt")
    );
    file.transport = Some("coap".into());
    let err = Settings::resolve(file, Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("\"mqtt+ws\""), "{err}");
}

#[test]
fn the_mqtt_message_rate_is_a_setting_of_at_least_one_a_second() {
    let mut file = parse(EXAMPLE).unwrap();
    file.mqtt.messages_per_second = Some(5000);
    let settings = Settings::resolve(file.clone(), Overrides::default()).unwrap();
    assert_eq!(settings.mqtt.messages_per_second, 5000);
    file.mqtt.messages_per_second = Some(0);
    let err = Settings::resolve(file, Overrides::default()).unwrap_err();
    assert!(
        err.to_string().contains("mqtt.messages_per_second"),
        "{err}"
    );
}

#[test]
fn an_mqtt_keepalive_under_five_seconds_is_refused() {
    let mut file = parse(EXAMPLE).unwrap();
    file.mqtt.keepalive = Some("1s".into());
    let err = Settings::resolve(file, Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("mqtt.keepalive"), "{err}");
}

#[test]
fn gateway_devices_are_read_from_their_tables_and_checked() {
    let gateway = "\n[[gateway.devices]]\nid = \"sensor-1\"\n\n[[gateway.devices]]\nid = \"sensor-2\"\nprivate_key = \"keys/sensor-2.pem\"\n";
    let mut file = parse(&format!("{EXAMPLE}{gateway}")).unwrap();
    file.transport = Some("mqtt".into());
    let settings = Settings::resolve(file.clone(), Overrides::default()).unwrap();
    assert_eq!(
        settings.gateway_devices,
        [
            GatewayDevice {
                id: "sensor-1".into(),
                private_key: None
            },
            GatewayDevice {
                id: "sensor-2".into(),
                private_key: Some("keys/sensor-2.pem".into())
            },
        ]
    );
    // None by default.
    let plain = Settings::resolve(parse(EXAMPLE).unwrap(), Overrides::default()).unwrap();
    assert!(plain.gateway_devices.is_empty());

    let refused = |file: FileSettings| {
        Settings::resolve(file, Overrides::default())
            .unwrap_err()
            .to_string()
    };
    let mut https = file.clone();
    https.transport = None;
    assert!(Settings::resolve(https, Overrides::default()).is_ok());
    let mut twice = file.clone();
    twice.gateway.devices[1].id = "sensor-1".into();
    assert!(refused(twice).contains("listed twice"));
    let mut own = file.clone();
    own.gateway.devices[0].id = "boiler-7".into();
    assert!(refused(own).contains("the gateway's own id"));
    let mut bad = file;
    bad.gateway.devices[0].id = "1-starts-with-a-digit".into();
    assert!(refused(bad).contains("not a device id"));
    let typo = parse("[[gateway.devices]]\nid = \"a\"\nkey = \"k.pem\"\n").unwrap_err();
    assert!(typo.contains("unknown field `key`"), "{typo}");
}
