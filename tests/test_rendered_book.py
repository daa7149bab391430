"""The rendered book as a reader meets it: every page of _build/html loaded offline in headless Chromium.

The book is built first unless _build/html is newer than every source (notebooks, markdown, configuration,
bibliography, css, the bundled MathJax). It is served on 127.0.0.1 only, and Chromium resolves no other host and
sends anything else to a closed proxy port, so a page that needs the network fails here. For each page of
_toc.yml, at two window widths, the checks are:

- offline: no request leaves the machine (MathJax, fonts, images and css all come from the book);
- math: MathJax typeset every formula (no `span.math` or `div.math` left as TeX, no MathJax error, no `\\(`,
  `\\[`, `$$` or `\\begin{` in the text of the main column outside code);
- images: every <img> loaded (decoded, non-zero size);
- overflow: nothing in the main column sticks out past its right edge or is cut off by a container that hides
  what does not fit (wide content must wrap or sit in a box that scrolls);
- title first: the first thing in the article is the page's title (no code cell above it);
- code fits: every code cell, hidden ones opened, holds its longest line without wrapping it (lines are at most
  100 columns, and the book's css makes room for 100 from 1024 px up);
- listings fit: the same for the package's source shown with ``show_source`` (the package's lines are at most 100
  columns); another project's source, quoted verbatim in a cell tagged ``third-party-source``, keeps its own lines
  and scrolls sideways instead (the overflow check sees that it does not stick out);
- figure text: every figure's smallest text is at least 9 px as displayed, from the size the figure records in its
  PNG (``segformer_edu.plots``, which every chapter's figures go through) and the width the page gives the image;
- tables fit: every table is as narrow as the column (no scroll bar hides a column);
- solutions: each solution is one labelled toggle ("Solution N", closed) that holds its code and output, and no
  solution code shows outside it;
- no placeholders: no "pending", "not been made yet" or the like in the text of a page: a page states what it shows;
- summary: every chapter (the pages numbered 1-10 and the appendices) ends with a "Summary" section.

Chromium is Debian's `chromium` (.ci/run installs it); set BOOK_CHROMIUM to use another binary. Where it is
missing the tests are skipped, except under CI (CI set), where that is a failure. Set BOOK_SCREENSHOTS to a
folder to also save a screenshot of the top of every page, and of its first displayed formula.
"""

import base64
import fcntl
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
WIDTHS = (1280, 1024)  # a laptop window with both sidebars, and a narrower one without the right sidebar
CHECKS = ("offline", "math", "images", "overflow", "title first", "code fits", "listings fit", "figure text",
          "tables fit", "solutions", "no placeholders", "summary")
MIN_TEXT_PX = 9
TEXT_KEY = "Smallest text (px)"  # segformer_edu.plots.TEXT_KEY: the PNG text chunk a figure records its text in
PLACEHOLDERS = (r"\bpending\b|\bnot (been )?(made|run|measured) yet\b|\b(has|have|had) not been (made|run)\b"
                r"|\bto be added\b|\bTODO\b|\bTBD\b")

# Pages that fail a check for a reason in a chapter this check does not fix, as (page, check): reason.
# The chapters are being reworked in place; remove the entry when the chapter is fixed (the test then XPASSes).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

SOURCES = ["book", "_static", "_ext", "_config.yml", "_toc.yml", "references.bib", "package-lock.json"]


def toc_pages():
    """Every page of _toc.yml, as its path without suffix ("book/intro", ...), in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part["chapters"]]
    return pages


PAGES = toc_pages()


def newest_source_mtime():
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        files = path.rglob("*") if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "results" not in file.relative_to(ROOT).parts[:2]:
                newest = max(newest, file.stat().st_mtime)
    return newest


def build_book():
    """Build the book unless _build/html is fresh; fail with the build's last lines if the build fails."""
    stamp = HTML / ".buildinfo"
    if stamp.is_file() and all((HTML / f"{page}.html").is_file() for page in PAGES):
        if stamp.stat().st_mtime >= newest_source_mtime():
            return
    jupyter_book = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    result = subprocess.run([jupyter_book, "build", str(ROOT), "-W", "--keep-going"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail("the book does not build:\n" + (result.stdout + result.stderr)[-4000:])
    stamp.touch()


def find_chromium():
    for candidate in (os.environ.get("BOOK_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    message = "headless Chromium is not installed (apt-get install chromium; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory):
    """An HTTP server for `directory` on 127.0.0.1, on a free port, in a daemon thread."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def high_fd(fd):
    """A copy of `fd` numbered 10 or more (so that the 3< and 4> redirections of bash cannot clobber it)."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return copy


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out): no extra packages."""

    def __init__(self, binary, profile):
        to_browser_r, to_browser_w = (high_fd(fd) for fd in os.pipe())
        from_browser_r, from_browser_w = (high_fd(fd) for fd in os.pipe())
        args = [
            binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}",
            # the network, blocked: no host but 127.0.0.1 resolves, and every other request goes to a closed port
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
            "--window-size=1280,900", "about:blank",
        ]
        shell = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.process = subprocess.Popen(["bash", "-c", shell, "bash", *args], pass_fds=(to_browser_r, from_browser_w),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.write_fd, self.read_fd = to_browser_w, from_browser_r
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session=None, timeout=60):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, session, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(index)
            self.events.append(self._read_message(deadline))

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.write_fd)
        os.close(self.read_fd)


# Runs in the page once it has loaded; resolves to the measurements the checks read.
MEASURE = r"""
(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const describe = el => {
    const name = el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
      ? '.' + el.className.trim().split(/\s+/).join('.') : '');
    return name + ': ' + (el.textContent || el.getAttribute('src') || '').trim().replace(/\s+/g, ' ').slice(0, 80);
  };
  const main = document.querySelector('article.bd-article');
  const mathElements = Array.from(main.querySelectorAll('.math'));
  let mathjax = 'not loaded';
  const start = Date.now();
  while (Date.now() - start < 20000) {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) break;
    await sleep(50);
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; mathjax = 'ok'; } catch (error) { mathjax = 'error: ' + error; }
  }
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(resolve => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
    setTimeout(resolve, 15000);
  })));
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const brokenImages = images.filter(img => !(img.complete && img.naturalWidth > 0))
    .map(img => (img.getAttribute('src') || '').slice(0, 100));

  const untypeset = mathElements.filter(el => !el.querySelector('mjx-container')).map(describe);
  const mathErrors = Array.from(main.querySelectorAll('mjx-merror, [data-mjx-error]'))
    .map(el => el.getAttribute('data-mjx-error') || el.textContent);
  const rawTex = [];
  const tex = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\end\{/;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {acceptNode: node =>
    node.parentElement.closest('pre, code, kbd, samp, script, style, textarea, mjx-container, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent;
    if (tex.test(text)) rawTex.push(text.trim().replace(/\s+/g, ' ').slice(0, 100));
  }

  // overflow: content past the article's right edge that no scrolling box holds, and content cut off
  const edge = main.getBoundingClientRect().right;
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const overflow = [];
  for (const el of main.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (box.right > edge + 1) {
      let holder = el.parentElement;
      while (holder && holder !== main && !scrolls(holder)) holder = holder.parentElement;
      if (!holder || holder === main) overflow.push('past the column by ' + Math.round(box.right - edge) + ' px: ' + describe(el));
    }
    const style = getComputedStyle(el);
    if (['hidden', 'clip'].includes(style.overflowX) && !['inline', 'contents'].includes(style.display)) {
      // what is drawn inside a box that hides overflow (MathJax's hidden copy for screen readers excepted)
      let right = box.right;
      for (const inner of el.querySelectorAll('*')) {
        if (inner.closest('mjx-assistive-mml')) continue;
        const innerBox = inner.getBoundingClientRect();
        if (innerBox.width > 0 && innerBox.height > 0) right = Math.max(right, innerBox.right);
      }
      if (right > box.right + 1) overflow.push('cut off by ' + Math.round(right - box.right) + ' px: ' + describe(el));
    }
  }
  // text that runs past the column (a long unbreakable line in a box that does not scroll)
  const texts = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  while (texts.nextNode()) {
    const node = texts.currentNode;
    if (!node.textContent.trim() || node.parentElement.closest('mjx-assistive-mml')) continue;
    range.selectNodeContents(node);
    const box = range.getBoundingClientRect();
    if (box.width === 0 || box.right <= edge + 1) continue;
    let holder = node.parentElement;
    while (holder && holder !== main && !scrolls(holder)) holder = holder.parentElement;
    if (!holder || holder === main) overflow.push('text past the column by ' + Math.round(box.right - edge) + ' px: ' + describe(node.parentElement));
  }
  // the first thing in the article that takes up space must be the page's title
  let first = null;
  for (const el of main.querySelectorAll('h1, div.cell, div.highlight, p, table, img, figure, ul, ol')) {
    const box = el.getBoundingClientRect();
    if (box.height > 0) { first = el; break; }
  }
  // every toggle opened, so that hidden cells and solutions are measured as a reader who opens them sees them
  const openSolutions = Array.from(main.querySelectorAll('details.sd-dropdown'))
    .filter(d => /^Solution \d+/.test(d.querySelector('summary').textContent.trim()) && d.open)
    .map(d => d.querySelector('summary').textContent.trim().slice(0, 40));
  const solutionTitles = Array.from(main.querySelectorAll('details.sd-dropdown'))
    .map(d => d.querySelector('summary').textContent.trim())
    .filter(t => /^Solution \d+/.test(t));
  const toggles = Array.from(main.querySelectorAll('details'));
  const wasOpen = toggles.map(d => d.open);
  toggles.forEach(d => { d.open = true; });
  await sleep(50);
  // how many columns a <pre> holds, against its longest line
  const columnsOf = pre => {
    const style = getComputedStyle(pre);
    const probe = document.createElement('span');
    probe.textContent = 'M'.repeat(100);
    Object.assign(probe.style, {whiteSpace: 'pre', position: 'absolute', visibility: 'hidden'});
    pre.appendChild(probe);
    const charWidth = probe.getBoundingClientRect().width / 100;
    probe.remove();
    return Math.floor((pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)) / charWidth);
  };
  const tooLong = selector => {
    const found = [];
    for (const pre of main.querySelectorAll(selector)) {
      // another project's source, quoted as it is (tag third-party-source): it scrolls sideways instead
      if (pre.clientWidth === 0 || pre.closest('div.cell.tag_third-party-source')) continue;
      const columns = columnsOf(pre);
      const longest = pre.textContent.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
      if (longest.length > columns) found.push({columns, length: longest.length, line: longest.trim().slice(0, 60)});
    }
    return found;
  };
  const wrappedCode = tooLong('div.cell div.cell_input pre');
  const wrappedListings = tooLong('div.cell div.cell_output div.output.text_html div.highlight pre');  // show_source
  // figures: the displayed width of every image in a cell's output, for the text size its PNG records
  const figures = Array.from(main.querySelectorAll('div.cell_output img')).map(img => ({
    src: img.getAttribute('src'), natural: img.naturalWidth, shown: img.getBoundingClientRect().width}));
  // tables: as wide as the column at most
  const columnWidth = main.clientWidth - parseFloat(getComputedStyle(main).paddingLeft)
    - parseFloat(getComputedStyle(main).paddingRight);
  const wideTables = Array.from(main.querySelectorAll('table')).map(table => ({
    width: Math.max(table.scrollWidth, table.getBoundingClientRect().width),
    room: Math.min(columnWidth, (table.parentElement.closest('div, section') || main).clientWidth),
    head: table.querySelector('tr') ? table.querySelector('tr').textContent.trim().replace(/\s+/g, ' ').slice(0, 60) : ''}))
    .filter(t => t.width > t.room + 1);
  // solutions: solution code outside its dropdown
  const looseSolutions = Array.from(main.querySelectorAll('div.cell div.cell_input pre'))
    .filter(pre => /^\s*# Solution to exercise \d+/.test(pre.textContent) && !pre.closest('details.sd-dropdown'))
    .map(pre => pre.textContent.trim().split('\n')[0]);
  const emptySolutions = Array.from(main.querySelectorAll('details.sd-dropdown'))
    .filter(d => /^Solution \d+/.test(d.querySelector('summary').textContent.trim()))
    .filter(d => d.querySelector('details.hide'))
    .map(d => d.querySelector('summary').textContent.trim() + ': a toggle inside the toggle');
  // the page's text, code excepted, for placeholders; and its last section's title
  const prose = [];
  const words = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {acceptNode: node =>
    node.parentElement.closest('pre, code, script, style, mjx-container') ? NodeFilter.FILTER_REJECT
      : NodeFilter.FILTER_ACCEPT});
  while (words.nextNode()) prose.push(words.currentNode.textContent);
  const outputs = Array.from(main.querySelectorAll('div.cell_output pre')).map(pre => pre.textContent);
  const sections = Array.from(main.querySelectorAll('section > h2'));
  const lastSection = sections.length ? sections[sections.length - 1].textContent.replace('#', '').trim() : null;
  toggles.forEach((d, index) => { d.open = wasOpen[index]; });
  return {
    wrappedCode, wrappedListings, figures, wideTables, looseSolutions, emptySolutions, openSolutions,
    solutionTitles, text: prose.join(' ') + '\n' + outputs.join('\n'), lastSection,
    mathjax, mathCount: mathElements.length, untypeset: untypeset.slice(0, 10), mathErrors: mathErrors.slice(0, 10),
    rawTex: rawTex.slice(0, 10), imageCount: images.length, brokenImages,
    overflow: Array.from(new Set(overflow)).slice(0, 10),
    first: first ? describe(first) : null, titleFirst: Boolean(first && first.tagName === 'H1'),
  };
})()
"""


def check_page(browser, session, url, width, screenshots, name):
    browser.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
    browser.events.clear()
    browser.call("Page.navigate", {"url": url}, session)
    browser.wait_for("Page.loadEventFired", session, timeout=60)
    result = browser.call("Runtime.evaluate", {"expression": MEASURE, "awaitPromise": True, "returnByValue": True},
                          session, timeout=90)
    if "exceptionDetails" in result:
        raise RuntimeError(f"{url}: {result['exceptionDetails']}")
    measured = result["result"]["value"]
    measured["url"] = url
    requests = [event["params"]["request"]["url"] for event in browser.events
                if event.get("method") == "Network.requestWillBeSent" and event.get("sessionId") == session]
    measured["external"] = [request for request in requests
                            if not request.startswith(("http://127.0.0.1", "data:", "blob:", "about:"))]
    if screenshots:
        for label, expression in [("top", "window.scrollTo(0, 0)"),
                                  ("math", "document.querySelector('article.bd-article mjx-container')"
                                           "?.scrollIntoView({block: 'center'})")]:
            browser.call("Runtime.evaluate", {"expression": expression}, session)
            time.sleep(0.3)
            shot = browser.call("Page.captureScreenshot", {"format": "png"}, session)
            Path(screenshots, f"{name}_{width}_{label}.png").write_bytes(base64.b64decode(shot["data"]))
    return measured


@pytest.fixture(scope="module")
def rendered():
    """{(page, width): measurements} for every page of the book at every width."""
    chromium = find_chromium()
    build_book()
    screenshots = os.environ.get("BOOK_SCREENSHOTS")
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
    server = serve(HTML)
    port = server.server_address[1]
    results = {}
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(chromium, profile)
        try:
            target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                browser.call(f"{domain}.enable", {}, session)
            for page in PAGES:
                for width in WIDTHS:
                    url = f"http://127.0.0.1:{port}/{page}.html"
                    results[page, width] = check_page(browser, session, url, width, screenshots,
                                                      page.replace("/", "_"))
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
    return results


def image_file(page_url: str, src: str) -> Path:
    """The built file of an <img src> on a page served from HTML."""
    page = page_url.split("/", 3)[3]  # http://127.0.0.1:port/<page>.html
    return (HTML / page).parent.joinpath(src.split("?")[0]).resolve()


def recorded_text_px(path: Path) -> float | None:
    """The smallest text size a figure's PNG records (a tEXt chunk written by segformer_edu.plots), or None."""
    data = path.read_bytes() if path.is_file() else b""
    position = 8  # after the PNG signature
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        if kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            if key.decode("latin-1") == TEXT_KEY:
                return float(value.decode("latin-1"))
        if kind == b"IEND":
            break
        position += 12 + length
    return None


def is_chapter(page_url: str) -> bool:
    """The numbered chapters and the appendices (not the introduction or the bibliography)."""
    name = page_url.rsplit("/", 1)[-1]
    return bool(re.match(r"(\d\d|[A-Z])_", name))


def failures(measured, check):
    """What the page does wrong for `check`, as a list of lines (empty: the check passes)."""
    if check == "offline":
        return [f"request to {url}" for url in measured["external"]]
    if check == "math":
        problems = []
        if measured["mathCount"] and measured["mathjax"] != "ok":
            problems.append(f"MathJax {measured['mathjax']}")
        problems += [f"not typeset: {text}" for text in measured["untypeset"]]
        problems += [f"MathJax error: {text}" for text in measured["mathErrors"]]
        problems += [f"raw TeX in the text: {text}" for text in measured["rawTex"]]
        return problems
    if check == "images":
        return [f"image did not load: {src}" for src in measured["brokenImages"]]
    if check == "overflow":
        return measured["overflow"]
    if check == "title first":
        return [] if measured["titleFirst"] else [f"the page starts with {measured['first']}"]
    if check == "code fits":
        return [f"a code line of {w['length']} columns wraps (the cell holds {w['columns']}): {w['line']}"
                for w in measured["wrappedCode"]]
    if check == "listings fit":
        return [f"a listed line of {w['length']} columns wraps (the listing holds {w['columns']}): {w['line']}"
                for w in measured["wrappedListings"]]
    if check == "figure text":
        problems = []
        for figure in measured["figures"]:
            smallest = recorded_text_px(image_file(measured["url"], figure["src"]))
            name = figure["src"].rsplit("/", 1)[-1]
            if smallest is None:
                problems.append(f"{name} records no text size: draw it after segformer_edu.plots.book_style()")
                continue
            shown = smallest * figure["shown"] / figure["natural"]
            if shown < MIN_TEXT_PX:
                problems.append(f"{name}: its smallest text shows at {shown:.1f} px ({smallest:.1f} px in a "
                                f"{figure['natural']} px wide image shown {figure['shown']:.0f} px wide)")
        return problems
    if check == "tables fit":
        return [f"a table {t['width']:.0f} px wide in {t['room']:.0f} px: {t['head']}" for t in measured["wideTables"]]
    if check == "solutions":
        return ([f"solution code outside its dropdown: {line}" for line in measured["looseSolutions"]]
                + measured["emptySolutions"] + [f"{title}: open on arrival" for title in measured["openSolutions"]])
    if check == "no placeholders":
        return [f"placeholder text: ...{measured['text'][max(0, m.start() - 60):m.end() + 40]}..."
                for m in re.finditer(PLACEHOLDERS, measured["text"], re.I)]
    if check == "summary":
        if not is_chapter(measured["url"]):
            return []
        return [] if measured["lastSection"] == "Summary" else [f"the last section is {measured['lastSection']!r}"]
    raise ValueError(check)


def cases():
    for page in PAGES:
        for check in CHECKS:
            reason = KNOWN_EXCEPTIONS.get((page, check))
            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            yield pytest.param(page, check, marks=marks, id=f"{page}-{check}")


@pytest.mark.parametrize("page, check", list(cases()))
def test_rendered_page(rendered, page, check):
    problems = [f"{width} px: {problem}" for width in WIDTHS for problem in failures(rendered[page, width], check)]
    assert not problems, f"{page}.html, {check}:\n" + "\n".join(problems)


def test_math_is_typeset_offline(rendered):
    """The check above must have seen math: the chapters' formulas, typeset by the bundled MathJax."""
    typeset = [page for page in PAGES if rendered[page, WIDTHS[0]]["mathCount"] > 0]
    assert len(typeset) >= len(PAGES) // 2, typeset
    assert all(rendered[page, WIDTHS[0]]["mathjax"] == "ok" for page in typeset)
