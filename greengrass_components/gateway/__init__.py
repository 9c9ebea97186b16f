"""Gateway core: durable store-and-forward buffer, MQTT / Greengrass IPC transports, rate-limited publisher."""
