// Node-RED settings for `hlbridge-bench --compare-node-red DIR`: headless (no editor, no admin API,
// no HTTP nodes, so no HTTP listener at all), quiet, no telemetry; the bench passes `--userDir` (a
// temporary directory) and the flow file on the command line, and the broker in NR_MQTT_HOST/PORT.
module.exports = {
    httpAdminRoot: false,
    httpNodeRoot: false,
    httpStatic: false,
    uiHost: "127.0.0.1",
    disableEditor: true,
    credentialSecret: false,
    flowFilePretty: false,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    functionExternalModules: false,
    functionGlobalContext: {},
    exportGlobalContextKeys: false,
    logging: { console: { level: "warn", metrics: false, audit: false } },
};
