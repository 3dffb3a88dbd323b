// Walks the web UI wizard in headless Chromium (Debian's /usr/bin/chromium, driven by npm's
// playwright-core): bare metal and a cloud platform, each with extensions and kernel
// arguments, by mouse, and bare metal again by keyboard only. Fetches every download link of
// the result pages, saves the ISO the browser downloads, records every request the pages made,
// and saves a screenshot of each step. Run by tests/integration/ui_browser.rs, which checks
// what this prints (one JSON object on stdout).
//
// Environment: IF_UI_BASE (the appliance, http://127.0.0.1:PORT), IF_UI_OUT (screenshots and
// the downloaded ISO), IF_PLAYWRIGHT_DIR (where playwright-core is installed),
// IF_CHROMIUM (default /usr/bin/chromium).

import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const base = process.env.IF_UI_BASE;
const out = process.env.IF_UI_OUT;
const require = createRequire(path.join(process.env.IF_PLAYWRIGHT_DIR, "node_modules", "x.js"));
const { chromium } = require("playwright-core");

const origin = new URL(base).origin;
const requests = [];
const outside = [];
const result = { runs: {}, outside, requests: 0, errors: [] };

function watch(page) {
  page.on("request", (r) => {
    requests.push(r.url());
    const u = r.url();
    if (!(u.startsWith(origin + "/") || u === origin || u.startsWith("data:") || u.startsWith("about:"))) {
      outside.push(u);
    }
  });
  page.on("pageerror", (e) => result.errors.push(String(e)));
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(out, `${name}.png`), fullPage: true });
}

async function next(page, label = "Next") {
  await Promise.all([page.waitForNavigation(), page.getByRole("button", { name: label, exact: true }).click()]);
}

// The text of a <pre> without the copy button the script adds.
async function preText(page, selector) {
  return page.$eval(selector, (el) => (el.firstChild ? el.firstChild.textContent : el.textContent));
}

async function resultOf(page) {
  const id = (await preText(page, "#schematic-id")).trim();
  const links = await page.$$eval("a[data-download]", (as) => as.map((a) => ({ text: a.textContent, href: a.getAttribute("href") })));
  const installer = (await preText(page, "#installer")).trim();
  return { id, links, installer, url: page.url() };
}

// Every download link answers 200 (fetched through the page's own request context).
async function fetchAll(page, run) {
  run.fetched = [];
  for (const l of run.links) {
    const r = await page.request.get(new URL(l.href, base).toString(), { timeout: 300000 });
    const body = await r.body();
    run.fetched.push({ href: l.href, status: r.status(), bytes: body.length });
  }
}

async function mouseWalk(browser, name, choose) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  watch(page);
  await page.goto(base + "/");
  await shot(page, `${name}-1-hardware`);
  await page.check(`input[name=target][value=${choose.target}]`);
  await next(page);
  await shot(page, `${name}-2-version`);
  await page.check(`input[name=version][value="${choose.version}"]`);
  await next(page);
  let n = 3;
  if (choose.platform) {
    await shot(page, `${name}-${n++}-platform`);
    await page.check(`input[name=platform][value=${choose.platform}]`);
    await next(page);
  }
  if (await page.$("input[name=arch][type=radio]")) {
    await shot(page, `${name}-${n++}-arch`);
    await page.check(`input[name=arch][value=${choose.arch}]`);
    await next(page);
  }
  // Extensions: the live filter hides what does not match; ticks survive filtering.
  await page.fill("#search", choose.filter);
  const visible = await page.$$eval("#extension-list li[data-search]", (lis) => lis.filter((l) => !l.hidden).length);
  result.runs[name + "-filter-visible"] = visible;
  await page.fill("#search", "");
  for (const e of choose.extensions) {
    await page.check(`input[name=selected-extensions][value="${e}"]`);
  }
  await shot(page, `${name}-${n++}-extensions`);
  await next(page);
  await page.fill("#cmdline", choose.cmdline);
  await shot(page, `${name}-${n++}-customization`);
  await next(page, "Create schematic");
  await shot(page, `${name}-${n++}-result`);
  const run = await resultOf(page);
  await fetchAll(page, run);
  const iso = run.links.find((l) => l.href.endsWith(".iso"));
  if (iso) {
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 300000 }), page.click(`a[href="${iso.href}"]`)]);
    run.iso = path.join(out, `${name}.iso`);
    await download.saveAs(run.iso);
    run.isoHref = iso.href;
  }
  result.runs[name] = run;
  await context.close();
}

// Keyboard only: Tab moves the focus until `want` (evaluated in the page) holds.
async function tabTo(page, want, what) {
  for (let i = 0; i < 80; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(want)) return;
  }
  throw new Error(`Tab never reached ${what} on ${page.url()}`);
}

async function keyboardWalk(browser, choose) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  watch(page);
  await page.goto(base + "/");
  const submit = (label) => `(() => { const a = document.activeElement; return a && a.tagName === "BUTTON" && a.textContent.trim() === ${JSON.stringify(label)}; })()`;
  const nav = async (label = "Next") => {
    await tabTo(page, submit(label), label);
    await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
  };
  // Hardware: bare metal is preselected; version: the latest stable; arch: amd64.
  await nav();
  await nav();
  if (await page.$("input[name=arch][type=radio]")) await nav();
  // Extensions: focus the first checkbox, tick it with Space.
  await tabTo(page, `document.activeElement && document.activeElement.name === "selected-extensions"`, "an extension");
  await page.keyboard.press("Space");
  const ticked = await page.evaluate(() => document.activeElement.value);
  await nav();
  await tabTo(page, `document.activeElement && document.activeElement.id === "cmdline"`, "the kernel arguments");
  await page.keyboard.type(choose.cmdline);
  await nav("Create schematic");
  await shot(page, "keyboard-result");
  const run = await resultOf(page);
  run.ticked = ticked;
  result.runs.keyboard = run;
  await context.close();
}

// The operator page on the admin listener: refused without the token, shown with it (HTTP
// Basic, the token as password).
async function operator(browser) {
  const admin = process.env.IF_UI_ADMIN;
  if (!admin) return;
  const anonymous = await browser.newContext();
  // (A page would show the browser's login prompt; headless Chromium fails the navigation.)
  const refused = await anonymous.request.get(admin + "/admin/ui");
  result.admin = { unauthenticated: refused.status(), challenge: refused.headers()["www-authenticate"] };
  await anonymous.close();
  const context = await browser.newContext({
    viewport: { width: 1100, height: 900 },
    httpCredentials: { username: "operator", password: process.env.IF_UI_ADMIN_TOKEN },
  });
  const page = await context.newPage();
  const adminOrigin = new URL(admin).origin;
  page.on("request", (r) => {
    requests.push(r.url());
    if (!r.url().startsWith(adminOrigin + "/")) outside.push(r.url());
  });
  const resp = await page.goto(admin + "/admin/ui");
  result.admin.status = resp.status();
  result.admin.sections = await page.$$eval("h2", (hs) => hs.map((h) => h.textContent));
  result.admin.builds = await page.$$eval("section[aria-labelledby=builds-h] tbody tr", (rows) => rows.length);
  await shot(page, "admin-overview");
  await context.close();
}

// The same step on a phone and in the dark theme.
async function looks(browser, url) {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, colorScheme: "dark" });
  const page = await phone.newPage();
  watch(page);
  await page.goto(url);
  await shot(page, "phone-dark-result");
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  result.darkBackground = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.goto(base + "/?target=metal");
  await shot(page, "phone-dark-version");
  await phone.close();
}

const browser = await chromium.launch({
  executablePath: process.env.IF_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  await mouseWalk(browser, "metal", {
    target: "metal", version: "1.11.0", arch: "amd64", filter: "microcode",
    extensions: ["siderolabs/fw-test", "siderolabs/kmod-test"], cmdline: "console=ttyS0 if.test=hello",
  });
  await mouseWalk(browser, "cloud", {
    target: "cloud", version: "1.11.0", platform: "oracle", arch: "amd64", filter: "service",
    extensions: ["siderolabs/svc-test"], cmdline: "console=ttyS1",
  });
  await keyboardWalk(browser, { cmdline: "talos.dashboard.disabled=1" });
  await looks(browser, result.runs.metal.url);
  await operator(browser);
} catch (e) {
  result.errors.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
result.requests = requests.length;
fs.writeFileSync(path.join(out, "result.json"), JSON.stringify(result, null, 2));
process.stdout.write(JSON.stringify(result) + "\n");
