// The fleet console in headless Chromium (Debian's, driven by playwright-core), against a real
// `ingest serve` with an admin bearer token. Run by ingest/tests/api/console_browser.rs, which
// starts the service and passes everything through the environment:
//   CONSOLE_URL, DEVICE_URL   the admin listener and the device bridge
//   ADMIN_TOKEN, PROJECT, REGION
//   DEVICE_KEY, DEVICE_KEY_FORMAT, DEVICE_JWT   the device's public key and a token it signed
//   SCREENSHOTS               where the PNGs go
//   IOTCORE_CONSOLE_TEST      the directory scripts/console-env installed playwright-core into
//   CHROMIUM                  the browser binary (/usr/bin/chromium)
// It prints each step, and exits non-zero at the first failed check.

import assert from "node:assert/strict";
import http from "node:http";
import path from "node:path";
import { createRequire } from "node:module";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const CONSOLE = env("CONSOLE_URL");
const DEVICE_URL = env("DEVICE_URL");
const TOKEN = env("ADMIN_TOKEN");
const PROJECT = env("PROJECT");
const REGION = env("REGION");
const SCREENSHOTS = env("SCREENSHOTS");
const { chromium } = createRequire(path.join(env("IOTCORE_CONSOLE_TEST"), "package.json"))("playwright-core");

const REGISTRY = "barn-sensors";
const DEVICE = "pi-7";
const registries = `${CONSOLE}/console/projects/${PROJECT}/locations/${REGION}/registries`;
const fleet = `${registries}/${REGISTRY}`;
const devicePage = `${fleet}/devices/${DEVICE}`;
const api = `${CONSOLE}/v1/projects/${PROJECT}/locations/${REGION}/registries/${REGISTRY}`;
const deviceApi = `${DEVICE_URL}/v1/projects/${PROJECT}/locations/${REGION}/registries/${REGISTRY}/devices/${DEVICE}`;

const step = (what) => console.log(`-- ${what}`);
const b64 = (text) => Buffer.from(text).toString("base64");

/** What the admin API itself says about the device. */
async function deviceAsApiSeesIt() {
  const answer = await fetch(`${api}/devices/${DEVICE}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(answer.status, 200);
  return answer.json();
}

/** The device speaks to the HTTP bridge with its signed JWT. */
async function asDevice(method, body) {
  return fetch(`${deviceApi}:${method}`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("DEVICE_JWT")}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function eventually(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** A page of another origin whose form posts to the console as soon as it loads. */
function startForeignSite(action, fields) {
  const inputs = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${value}">`)
    .join("");
  const page = `<!doctype html><form id="f" method="post" action="${action}">${inputs}</form>
    <script>document.getElementById("f").submit()</script>`;
  const server = http.createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end(page);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function main() {
  step("without a session, the console and the API refuse");
  let answer = await fetch(fleet, { redirect: "manual" });
  assert.equal(answer.status, 401);
  assert.match(await answer.text(), /Sign in/);
  answer = await fetch(`${api}/devices`);
  assert.equal(answer.status, 401);
  answer = await fetch(`${fleet}/devices/${DEVICE}/block`, { method: "POST", body: "blocked=true" });
  assert.equal(answer.status, 401, "a change without a session is refused");

  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();

    step("a wrong token is refused with the API's message; the right one signs in");
    let response = await page.goto(`${CONSOLE}/console`);
    assert.equal(response.status(), 401);
    await page.fill("input[name=token]", "not-the-token-at-all");
    await page.fill("input[name=project]", PROJECT);
    await page.fill("input[name=location]", REGION);
    await page.click("button[type=submit]");
    await page.waitForSelector(".refusal");
    assert.match(await page.textContent(".refusal"), /not one this server accepts/);
    await page.fill("input[name=token]", TOKEN);
    await page.fill("input[name=project]", PROJECT);
    await page.click("button[type=submit]");
    await page.waitForURL(registries);
    const [cookie] = await context.cookies();
    assert.equal(cookie.httpOnly, true, "the session cookie is HttpOnly");
    assert.equal(cookie.sameSite, "Strict");
    assert.equal(cookie.secure, false, "plain HTTP on a loopback listener");

    step("create a registry");
    await page.fill("input[name=id]", REGISTRY);
    await page.fill("textarea[name=event_topics]", `projects/${PROJECT}/topics/events`);
    await page.click("form.card button[type=submit]");
    await page.waitForURL(fleet);
    assert.match(await page.textContent("h1"), /Fleet of barn-sensors/);

    step("a refused registry shows the API's message");
    await page.goto(registries);
    await page.fill("input[name=id]", REGISTRY);
    await page.click("form.card button[type=submit]");
    await page.waitForSelector(".refusal");
    assert.match(await page.textContent(".refusal"), /ALREADY_EXISTS.*already exists/);

    step("add a device with its key");
    await page.goto(fleet);
    await page.fill("input[name=id]", DEVICE);
    await page.selectOption("select[name=format]", env("DEVICE_KEY_FORMAT"));
    await page.fill("textarea[name=key]", env("DEVICE_KEY"));
    await page.click("form.card >> text=Add device");
    await page.waitForURL(devicePage);
    assert.match(await page.textContent("body"), /RSA_X509_PEM|RSA_PEM|ES256/);

    step("the device publishes an event and a state over the HTTP bridge");
    answer = await asDevice("publishEvent", { binaryData: b64("temperature=21") });
    assert.equal(answer.status, 200, await answer.text());
    answer = await asDevice("setState", { state: { binaryData: b64('{"temperature":21,"fan":"on"}') } });
    assert.equal(answer.status, 200, await answer.text());
    await eventually("the bookkeeping to reach the registry", async () => (await deviceAsApiSeesIt()).lastEventTime);

    step("the fleet shows it heard from the device");
    await page.goto(fleet);
    const row = page.locator("table.devices tbody tr", { hasText: DEVICE });
    assert.match(await row.textContent(), /s ago|min ago/);
    assert.equal((await page.textContent(".health .card.good .count")).trim(), "1");
    await page.screenshot({ path: path.join(SCREENSHOTS, "console-fleet.png"), fullPage: true });

    step("the filter by prefix and status");
    await page.goto(`${fleet}?prefix=pi-&status=recent`);
    assert.equal(await page.locator("table.devices tbody tr").count(), 1);
    await page.goto(`${fleet}?prefix=zz&status=`);
    assert.match(await page.textContent("main"), /No devices match/);
    await page.goto(`${fleet}?status=never`);
    assert.match(await page.textContent("main"), /No devices match/);

    step("the device page shows its state as JSON");
    await page.goto(devicePage);
    const state = await page.textContent(".state .payload");
    assert.match(state, /JSON/);
    assert.match(state, /"temperature": 21/);

    step("edit the config, and a stale edit is refused with the API's message");
    const stale = await context.newPage();
    await stale.goto(devicePage);
    await page.fill("textarea[name=data]", '{"fan": "high"}');
    await page.click("text=Save config");
    await page.waitForSelector(".notice");
    assert.match(await page.textContent(".notice"), /new config version/);
    assert.match(await page.textContent("table"), /"fan": "high"/);
    await new Promise((resolve) => setTimeout(resolve, 1100)); // IoT Core's one change a second
    await stale.fill("textarea[name=data]", '{"fan": "off"}');
    await stale.click("text=Save config");
    await stale.waitForSelector(".refusal");
    const refusal = await stale.textContent(".refusal");
    assert.match(refusal, /ABORTED/);
    assert.match(refusal, /the config is at version 2, not 1: someone changed it since you read it/);
    assert.equal(await stale.inputValue("textarea[name=data]"), '{"fan": "off"}', "the edit is kept");
    assert.equal(
      Buffer.from((await deviceAsApiSeesIt()).config.binaryData, "base64").toString(),
      '{"fan": "high"}',
      "the stale edit did not overwrite",
    );
    await stale.close();

    step("a command to a device without an MQTT connection is refused with the API's message");
    await page.fill("form[action$='/command'] textarea[name=data]", "reboot");
    await page.click("text=Send command");
    await page.waitForSelector(".refusal");
    assert.match(await page.textContent(".refusal"), /FAILED_PRECONDITION.*not connected over MQTT/);

    step("block the device: the console says so, and the bridge refuses it");
    await page.goto(devicePage);
    await page.click("text=Block device");
    await page.waitForSelector(".notice");
    assert.equal((await page.textContent("dl.facts .badge.bad")).trim(), "blocked");
    assert.equal((await deviceAsApiSeesIt()).blocked, true);
    answer = await asDevice("publishEvent", { binaryData: b64("temperature=22") });
    assert.notEqual(answer.status, 200, "a blocked device is refused");
    await page.screenshot({ path: path.join(SCREENSHOTS, "console-device.png"), fullPage: true });

    step("a form posted from another origin is refused, and changes nothing");
    const foreign = await startForeignSite(`${devicePage}/block`, { csrf: "guessed", blocked: "false" });
    try {
      const { port } = foreign.address();
      const refused = page.waitForResponse((r) => r.url() === `${devicePage}/block`);
      await page.goto(`http://127.0.0.1:${port}/`);
      assert.equal((await refused).status(), 403);
      assert.match(await page.textContent("body"), /cross-site request refused/);
    } finally {
      foreign.close();
    }
    assert.equal((await deviceAsApiSeesIt()).blocked, true, "still blocked");

    step("a same-origin post without the session's CSRF token is refused");
    const session = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
    answer = await fetch(`${devicePage}/block`, {
      method: "POST",
      headers: { cookie: session, origin: CONSOLE, "content-type": "application/x-www-form-urlencoded" },
      body: "blocked=false&csrf=guessed",
    });
    assert.equal(answer.status, 403);
    assert.match(await answer.text(), /CSRF/);
    assert.equal((await deviceAsApiSeesIt()).blocked, true, "still blocked");

    step("unblock, then delete with confirmation");
    await page.goto(devicePage);
    await page.click("text=Unblock device");
    await page.waitForSelector(".notice");
    await page.click("text=Delete device");
    await page.waitForSelector(".refusal");
    assert.match(await page.textContent(".refusal"), /type the device id/);
    await page.fill("input[name=confirm]", DEVICE);
    await page.click("text=Delete device");
    await page.waitForURL(`${fleet}?done=deleted`);
    assert.match(await page.textContent(".notice"), /deleted/);

    step("signing out ends the session");
    await page.click("text=Sign out");
    response = await page.goto(fleet);
    assert.equal(response.status(), 401);
  } finally {
    await browser.close();
  }
  console.log("console browser test: all checks passed");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
