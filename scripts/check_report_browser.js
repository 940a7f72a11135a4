// Open a report.html in Debian's chromium: every image loaded, no console messages, no failed requests; screenshot.
const { chromium } = require('playwright-core');
(async () => {
  const [file, shot] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const messages = [], failed = [], requests = [];
  page.on('console', m => messages.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', e => messages.push(`pageerror: ${e.message}`));
  page.on('requestfailed', r => failed.push(r.url().slice(0, 80)));
  page.on('request', r => { if (!r.url().startsWith('data:') && !r.url().startsWith('file:')) requests.push(r.url()); });
  await page.goto('file://' + file, { waitUntil: 'load' });
  const images = await page.$$eval('img', imgs => imgs.map(i => ({ alt: i.alt, complete: i.complete,
    w: i.naturalWidth, h: i.naturalHeight })));
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ images, console: messages, failed, external_requests: requests,
                               title: await page.title() }, null, 1));
  await browser.close();
})();
