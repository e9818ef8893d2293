"use strict";
/* vklora serve's page in a real browser: playwright-core drives the
 * system's Chromium (headless) against `vklora serve` on the tiny reference
 * model, on a free loopback port, and uses the page as a person would:
 * types, moves a slider, presses buttons, chooses files.
 *   generate  the page's image is the API's for the request the page sent
 *             (the prompt with <lora:style:0.5>); moving the slider to 1
 *             gives a different image, again the API's
 *   sweep     weights 0, 0.5, 1 side by side: three images with one seed,
 *             each the API's for <lora:style:W>
 *   compare   settings in the page's address (#prompt=cube&...&lora.style=0.5
 *             &go=compare) fill the form and press "Before / after": the two
 *             images are the sweep's at weights 0 and 0.5
 *   preview   with previews every step, the page shows current_image; the
 *             last one (the final step's prediction, decoded) matches the
 *             finished image within 2/255
 *   train     three images and their captions chosen in the browser are
 *             uploaded with the job (the server's copies equal them), the
 *             progress bar and loss curve reach step 4 of 4, the samples of
 *             steps 2 and 4 appear while it trains (the page's bytes are the
 *             files the trainer wrote) and the adapter is listed afterwards
 * Run by run.sh (ctest web/test_page); exit 77 (SKIPPED) without the
 * reference data. With VKLORA_WEB_SHOTS=DIR it leaves a screenshot of the
 * page after each part in DIR (the README's come from there). */
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const assert = require("assert");
const fs = require("fs");
const os = require("os");
const path = require("path");

const source = process.env.VKLORA_SOURCE_DIR || path.resolve(__dirname, "../..");
const shared = process.env.VKLORA_SHARED || path.join(source, "../shared");
const binary = process.env.VKLORA_BINARY;
const model = path.join(shared, "refkit/sd/tiny-sd");
const loraFile = path.join(shared, "refkit/sd/vectors/lora/lora_kohya.safetensors");
const dataDir = path.join(shared, "data/wesnoth-portraits/test16-128px");

process.on("SIGTERM", () => process.exit(143)); /* ctest's timeout: the exit handler kills the server */

function skip(why) {
  console.error("SKIPPED: " + why);
  process.exit(77);
}

const t0 = Date.now();
const log = (msg) => console.error(((Date.now() - t0) / 1000).toFixed(1).padStart(6) + " s  " + msg);

/* `vklora serve --port 0 ...` in dir; resolves with its URL once it listens */
function startServer(dir, args) {
  const logFile = path.join(dir, "serve.log");
  const child = spawn(binary, ["serve", "--port", "0", ...args], {
    cwd: dir, stdio: ["ignore", "pipe", fs.openSync(logFile, "w")],
  });
  /* however this script ends, the server does not outlive it */
  process.on("exit", () => { if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL"); });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("the server did not listen within 120 s")), 120000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)\/?\n/.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1], logFile }); }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error("the server exited with " + code + ": " + fs.readFileSync(logFile, "utf8")));
    });
  });
}

async function stopServer(srv) {
  if (srv.child.exitCode !== null) return srv.child.exitCode;
  const exited = new Promise((resolve) => srv.child.once("exit", (code) => resolve(code)));
  srv.child.kill("SIGTERM");
  return exited;
}

async function apiPost(srv, p, body) {
  const r = await fetch(srv.url + p, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await r.json();
  assert.strictEqual(r.status, 200, p + ": " + JSON.stringify(data));
  return data;
}

/* The txt2img bodies the page sends, in order */
function captureRequests(page) {
  const bodies = [];
  page.on("request", (req) => {
    if (req.url().endsWith("/sdapi/v1/txt2img")) bodies.push(JSON.parse(req.postData()));
  });
  return bodies;
}

const imageSources = (page, selector) =>
  page.$$eval(selector, (imgs) => imgs.map((i) => i.src.replace(/^data:image\/png;base64,/, "")));

async function waitStatus(page, text, timeout) {
  await page.waitForFunction((t) => document.getElementById("status").textContent === t, text, { timeout });
}

async function setSlider(page, value) {
  await page.$eval(".adapter input[type=range]", (sl, v) => {
    sl.value = v;
    sl.dispatchEvent(new Event("input"));
  }, String(value));
}

async function testGenerate(page, srv, bodies) {
  await page.fill("#prompt", "cube");
  await page.fill("#steps", "2");
  await page.fill("#seed", "3");
  await page.fill("#width", "32");
  await page.fill("#height", "32");
  await page.selectOption("#sampler", "Euler");
  await page.check(".adapter[data-name=style] input[type=checkbox]");
  const shown = [];
  for (const w of [0.5, 1]) {
    await setSlider(page, w);
    const rows = await page.$$eval("#gallery .pair", (r) => r.length);
    await page.click("#generate");
    await page.waitForFunction((n) => document.querySelectorAll("#gallery .pair").length > n, rows);
    await waitStatus(page, "done", 120000);
    const body = bodies[bodies.length - 1];
    assert.strictEqual(body.prompt, "cube <lora:style:" + w + ">");
    assert.strictEqual(body.seed, 3);
    assert.strictEqual(body.steps, 2);
    const [img] = await imageSources(page, "#gallery .pair:first-child img");
    const api = await apiPost(srv, "/sdapi/v1/txt2img", body);
    assert.strictEqual(img, api.images[0], "the page shows the API's image for its request");
    shown.push(img);
  }
  assert.notStrictEqual(shown[0], shown[1], "moving the slider changed the image");
}

async function testSweep(page, srv, bodies) {
  await page.fill("#sweep-weights", "0, 0.5, 1");
  const before = bodies.length;
  await page.click("#sweep");
  await page.waitForSelector("#gallery .pair[data-kind=sweep]");
  await waitStatus(page, "done", 120000);
  const weights = await page.$$eval("#gallery .pair[data-kind=sweep] figure", (f) => f.map((x) => x.dataset.weight));
  assert.deepStrictEqual(weights, ["0", "0.5", "1"]);
  const imgs = await imageSources(page, "#gallery .pair[data-kind=sweep] img");
  const sent = bodies.slice(before);
  assert.strictEqual(sent.length, 3);
  for (let i = 0; i < 3; i++) {
    assert.strictEqual(sent[i].prompt, "cube <lora:style:" + weights[i] + ">");
    assert.strictEqual(sent[i].seed, 3);
    const api = await apiPost(srv, "/sdapi/v1/txt2img", sent[i]);
    assert.strictEqual(imgs[i], api.images[0], "sweep image " + i + " is the API's");
  }
  assert.notStrictEqual(imgs[0], imgs[1], "weight 0 and 0.5 differ");
  assert.notStrictEqual(imgs[1], imgs[2], "weight 0.5 and 1 differ");
  return imgs;
}

async function testCompare(page, srv, sweepImages) {
  await page.goto("about:blank"); /* a new load: a changed #hash alone would not reload the page */
  await page.goto(srv.url + "/#prompt=cube&steps=2&seed=3&width=32&height=32&sampler=Euler&lora.style=0.5&go=compare");
  await page.waitForSelector("#gallery .pair[data-kind=compare]");
  await waitStatus(page, "done", 120000);
  const imgs = await imageSources(page, "#gallery .pair[data-kind=compare] img");
  const captions = await page.$$eval("#gallery figcaption", (c) => c.map((x) => x.textContent.split("\n")[0]));
  assert.deepStrictEqual(captions, ["cube <lora:style:0>", "cube <lora:style:0.5>"]);
  assert.strictEqual(imgs[0], sweepImages[0], "before: the sweep's weight 0");
  assert.strictEqual(imgs[1], sweepImages[1], "after: the sweep's weight 0.5");
}

async function testPreview(page, srv) {
  await apiPost(srv, "/sdapi/v1/options", { show_progress_every_n_steps: 1 });
  await page.fill("#steps", "4");
  await page.click("#generate");
  await waitStatus(page, "done", 120000);
  const count = Number(await page.$eval("#preview", (i) => i.dataset.count || 0));
  assert.ok(count >= 1, "the page showed a preview");
  assert.strictEqual(await page.$eval("#preview", (i) => i.className), "shown");
  /* pixels of the last preview against the finished image, in the browser */
  const diff = await page.evaluate(async () => {
    const pixels = async (src) => {
      const im = new Image();
      im.src = src;
      await im.decode();
      const c = document.createElement("canvas");
      c.width = im.naturalWidth;
      c.height = im.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(im, 0, 0);
      return { w: c.width, h: c.height, d: g.getImageData(0, 0, c.width, c.height).data };
    };
    const a = await pixels(document.getElementById("preview").src);
    const b = await pixels(document.querySelector("#gallery .pair:first-child img").src);
    if (a.w !== b.w || a.h !== b.h) return "sizes " + a.w + "x" + a.h + " and " + b.w + "x" + b.h;
    let m = 0;
    for (let i = 0; i < a.d.length; i++) m = Math.max(m, Math.abs(a.d[i] - b.d[i]));
    return m;
  });
  assert.ok(typeof diff === "number" && diff <= 2, "last preview vs image: " + diff);
  log("preview: " + count + " shown, the last within " + diff + "/255 of the image");
}

async function testTrain(page, srv, work) {
  const names = fs.readdirSync(dataDir).filter((f) => f.endsWith(".png")).sort().slice(0, 3);
  const files = [];
  for (const n of names) files.push(path.join(dataDir, n), path.join(dataDir, n.replace(/\.png$/, ".txt")));
  await page.click("#train summary");
  await page.setInputFiles("#train-files", files);
  await page.waitForFunction(() => document.querySelectorAll("#train-uploads input.caption").length === 3);
  const captions = await page.$$eval("#train-uploads input.caption", (c) => c.map((x) => x.value));
  const want = names.map((n) => fs.readFileSync(path.join(dataDir, n.replace(/\.png$/, ".txt")), "utf8").trim());
  assert.deepStrictEqual(captions, want, "each image got its .txt caption");
  await page.fill("#train-name", "webjob");
  await page.fill("#train-steps", "4");
  await page.fill("#train-rank", "4");
  await page.fill("#train-resolution", "64");
  await page.fill("#train-sample-prompt", "a portrait");
  await page.fill("#train-sample-every", "2");
  await page.click("#train-start");
  /* the first sample appears while the job still trains */
  await page.waitForSelector("#train-samples figure", { timeout: 300000 });
  const early = await page.$eval("#train-status", (s) => s.textContent);
  log("first sample shown at: " + early);
  assert.match(early, /^running, step [23] \/ 4/, "the first sample shows while the job trains");
  await page.waitForFunction(() => /^done, step 4 \/ 4, loss /.test(document.getElementById("train-status").textContent),
    null, { timeout: 300000 });
  assert.strictEqual(await page.$eval("#train-curve", (c) => c.dataset.points), "4");
  assert.strictEqual(await page.$eval("#train-progress", (p) => p.value), 1);
  const samples = await page.$$eval("#train-samples figure", (f) => f.map((x) => x.dataset.url));
  assert.deepStrictEqual(samples.map((u) => u.replace(/.*\//, "")), ["step000004-0.png", "step000002-0.png"]);
  /* the page's sample bytes are the trainer's files */
  const shownBytes = await page.evaluate(async () => {
    const out = [];
    for (const img of document.querySelectorAll("#train-samples img")) {
      const b = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
      let s = "";
      for (const x of b) s += String.fromCharCode(x);
      out.push(btoa(s));
    }
    return out;
  });
  for (const [i, step] of [[0, 4], [1, 2]]) {
    const file = path.join(work, "loras/webjob.samples/step00000" + step + "-0.png");
    assert.strictEqual(shownBytes[i], fs.readFileSync(file).toString("base64"), "sample of step " + step);
  }
  /* the uploads as the server keeps them */
  for (let i = 0; i < 3; i++) {
    const dir = path.join(work, "data/uploads/webjob");
    const id = String(i + 1).padStart(4, "0");
    assert.strictEqual(fs.readFileSync(path.join(dir, id + ".txt"), "utf8"), want[i]);
    assert.ok(fs.readFileSync(path.join(dir, id + ".png")).equals(fs.readFileSync(path.join(dataDir, names[i]))),
      "upload " + id + " is " + names[i]);
  }
  assert.ok(fs.existsSync(path.join(work, "loras/webjob.safetensors")));
  await page.waitForSelector(".adapter[data-name=webjob]", { timeout: 30000 });
}

async function main() {
  if (!binary) skip("VKLORA_BINARY is not set (run through ctest)");
  for (const p of [model, loraFile, dataDir])
    if (!fs.existsSync(p)) skip("reference data " + p + " not found (set VKLORA_SHARED)");
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "vklora-web-"));
  fs.mkdirSync(path.join(work, "loras"));
  fs.mkdirSync(path.join(work, "data"));
  fs.copyFileSync(loraFile, path.join(work, "loras/style.safetensors"));
  const srv = await startServer(work, ["--model", model, "--lora-dir", "loras", "--data-root", "data"]);
  log("server at " + srv.url);
  const browser = await chromium.launch({
    executablePath: process.env.VKLORA_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  let failed = 0;
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(60000);
    page.on("pageerror", (e) => { console.error("page error: " + e.message); failed++; });
    const bodies = captureRequests(page);
    await page.goto(srv.url + "/");
    await page.waitForSelector(".adapter[data-name=style]");
    let sweepImages = [];
    for (const [name, fn] of [["generate", () => testGenerate(page, srv, bodies)],
                              ["sweep", async () => { sweepImages = await testSweep(page, srv, bodies); }],
                              ["compare", () => testCompare(page, srv, sweepImages)],
                              ["preview", () => testPreview(page, srv)],
                              ["train", () => testTrain(page, srv, work)]]) {
      const t = Date.now();
      try {
        await fn();
        log("ok " + name + " (" + ((Date.now() - t) / 1000).toFixed(1) + " s)");
        if (process.env.VKLORA_WEB_SHOTS) {
          await page.screenshot({ path: path.join(process.env.VKLORA_WEB_SHOTS, name + ".png"), fullPage: true });
          if (name === "train") await page.locator("#train").screenshot({ path: path.join(process.env.VKLORA_WEB_SHOTS, "train-tab.png") });
        }
      } catch (e) {
        failed++;
        log("FAILED " + name + ": " + (e.stack || e));
        await page.screenshot({ path: path.join(work, "failed-" + name + ".png"), fullPage: true }).catch(() => {});
      }
    }
  } finally {
    await browser.close();
    const code = await stopServer(srv);
    if (code !== 0) { failed++; log("the server exited with " + code); }
    const serverLog = fs.readFileSync(srv.logFile, "utf8");
    if (/validation/i.test(serverLog)) { failed++; log("validation message in the server's log:\n" + serverLog); }
  }
  if (failed) {
    log(failed + " failed; files in " + work);
    process.exit(1);
  }
  fs.rmSync(work, { recursive: true, force: true });
  log("all passed");
}

main().catch((e) => {
  console.error(e.stack || e);
  process.exit(1);
});
