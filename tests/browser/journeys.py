"""The portal's journeys in a real browser (Debian chromium through chromedriver, Selenium).

Run by tests/it/portal_browser.rs against a running gateway:

    python3 tests/browser/journeys.py BASE_URL ADMIN_KEY CONSUMER_KEY PUBLISHER_KEY AUDITOR_KEY OUT_DIR

Each journey drives the pages as a person would (typing, clicking links and buttons) and checks
what the page shows against the API's own answers. Any JavaScript dialog (alert, confirm,
prompt) opened by page content fails the run: hostile titles and values must stay text.
Screenshots of every page at 375 px and 1440 px wide are saved in OUT_DIR. Exits non-zero on the
first failure, with the page's URL and a screenshot of it.
"""

import json
import os
import sys
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (NoAlertPresentException, StaleElementReferenceException,
                                        WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, ADMIN, CONSUMER, PUBLISHER, AUDITOR, OUT = sys.argv[1:7]
DOWNLOADS = os.path.join(OUT, "downloads")
os.makedirs(DOWNLOADS, exist_ok=True)


def api(path, key=None, method="GET", body=None):
    req = urllib.request.Request(BASE + path, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        else:
            data, ctype = body
            req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, data=data) as r:
        raw = r.read()
        return json.loads(raw) if r.headers.get_content_type().endswith("json") else raw


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1440,1000", "--lang=zh-CN"]:
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {
        "download.default_directory": DOWNLOADS, "download.prompt_for_download": False,
        "intl.accept_languages": "zh-CN,zh"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    d.set_page_load_timeout(30)
    return d


class Journey:
    def __init__(self, name):
        self.name = name
        self.d = browser()
        self.wait = WebDriverWait(self.d, 15)

    def open(self, path):
        self.d.get(BASE + path)
        self.no_dialog()

    def no_dialog(self):
        try:
            alert = self.d.switch_to.alert
            text = alert.text
            alert.dismiss()
            self.fail(f"a JavaScript dialog opened: {text!r}")
        except NoAlertPresentException:
            pass

    def el(self, css):
        return self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def navigating(self, action):
        """Runs `action` (a click or a submit) and waits until the next page replaced this one."""
        old = self.d.find_element(By.TAG_NAME, "html")
        action()

        def replaced(_):
            # chromedriver reports an element of a page already gone either as stale or, during
            # the swap, as "does not belong to the document": both mean the next page is here.
            try:
                old.is_enabled()
                return False
            except StaleElementReferenceException:
                return True
            except WebDriverException as e:
                if "does not belong to the document" in str(e):
                    return True
                raise

        self.wait.until(replaced)
        self.el("body")
        self.no_dialog()

    def click_text(self, text):
        link = self.wait.until(EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, text)))
        self.navigating(link.click)

    def click(self, css):
        self.navigating(self.el(css).click)

    def body(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def download(self, css, suffix):
        """Clicks the link `css` and returns the bytes of the file it downloads."""
        for f in os.listdir(DOWNLOADS):
            os.remove(os.path.join(DOWNLOADS, f))
        self.d.find_element(By.CSS_SELECTOR, css).click()
        for _ in range(100):
            done = [f for f in os.listdir(DOWNLOADS) if f.endswith(suffix)]
            if done:
                with open(os.path.join(DOWNLOADS, done[0]), "rb") as fh:
                    return fh.read()
            time.sleep(0.1)
        self.fail(f"the download of {css} did not arrive")

    def check(self, cond, what):
        if not cond:
            self.fail(what)

    def fail(self, what):
        shot = os.path.join(OUT, f"FAILED-{self.name}.png")
        try:
            self.d.save_screenshot(shot)
        except Exception:
            pass
        print(f"FAIL [{self.name}] {what}\n  at {self.d.current_url}\n  screenshot {shot}", flush=True)
        self.d.quit()
        sys.exit(1)

    def shots(self, label):
        """Screenshots of the current page at phone and desktop widths (full page height)."""
        for width in (375, 1440):
            self.d.set_window_size(width, 900)
            height = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.set_window_size(width, min(max(height, 600), 4000))
            self.d.save_screenshot(os.path.join(OUT, f"{label}-{width}.png"))
            overflow = self.d.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth + 1")
            self.check(not overflow or width > 375 or label in WIDE_OK,
                       f"{label} scrolls sideways at {width} px")
        self.d.set_window_size(1440, 1000)

    def done(self):
        self.d.quit()
        print(f"ok   [{self.name}]", flush=True)


# Pages whose tables may scroll inside their own box at 375 px (the page itself must not).
WIDE_OK = set()


def anonymous():
    j = Journey("anonymous")
    j.open("/")
    j.check(j.d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN", "html lang")
    j.shots("catalog")
    # Search, then a facet.
    box = j.el("#q")
    box.clear()
    box.send_keys("公交")
    j.click("form.search button[type=submit]")
    found = api("/api/v1/datasets?q=" + urllib.parse.quote("公交"))
    j.check(str(found["total"]) in j.el(".toolbar strong").text, "search result count")
    j.click_text("无条件开放")
    j.check("aria-current" in j.d.page_source, "the facet is marked")
    # The dataset, its preview, a filter.
    j.click_text("公交线路")
    j.el("table")
    j.shots("dataset")
    rows = api("/api/v1/datasets/transport/bus_lines/rows?limit=20")
    first = rows["rows"][0]
    j.check(str(first["line_name"]) in j.body(), "the preview shows the API's first row")
    where = j.el("#where")
    where.send_keys("night_line = true")
    j.navigating(where.submit)
    j.el("table")
    night = api("/api/v1/datasets/transport/bus_lines/rows?limit=20&where=" + urllib.parse.quote("night_line = true"))
    cells = [td.text for td in j.d.find_elements(By.CSS_SELECTOR, "#main table tbody tr td")]
    for r in night["rows"]:
        j.check(str(r["line_name"]) in cells, f"filtered preview lacks {r['line_name']}")
    # Download the CSV: the bytes are the export API's; the CSV for Excel the same bytes after
    # a UTF-8 byte-order mark.
    exported = api("/api/v1/datasets/transport/bus_lines/export?format=csv")
    for choice, expected in [("csv", exported), ("excel", b"\xef\xbb\xbf" + exported)]:
        got = j.download(f"p.downloads a[href*='format={choice}']", ".csv")
        j.check(got == expected,
                f"downloaded {choice} ({len(got)} bytes) is not the export's ({len(expected)} bytes)")
    # The SQL console: an error, marked; then the fix.
    j.open("/sql")
    sql = j.el("#q")
    sql.clear()
    sql.send_keys("SELECT line_name FROM transport.bus_lines WHERE (")
    j.click("form button.primary")
    mark = j.el(".sql-source mark")
    j.check(mark.is_displayed(), "the error position is marked")
    j.check("line 1" in j.el(".notice.error").text, "the error says where")
    j.shots("sql-error")
    sql = j.el("#q")
    sql.clear()
    sql.send_keys("SELECT count(*) AS n FROM transport.bus_lines")
    j.click("form button.primary")
    n = api("/api/v1/query", method="POST", body={"sql": "SELECT count(*) AS n FROM transport.bus_lines"})["rows"][0]["n"]
    j.check(j.el("#main table td.num").text == str(n), "the fixed query's result")
    j.shots("sql")
    # The table list's search, by name: the statement stays as edited, and is not run.
    edited = "SELECT line_name FROM transport."
    sql = j.el("#q")
    sql.clear()
    sql.send_keys(edited)
    j.el("#table-words").send_keys("bus_l")
    j.click("#table-search button")
    j.check(j.el("#q").get_attribute("value") == edited, "the edited statement is kept")
    found = [c.text for c in j.d.find_elements(By.CSS_SELECTOR, "aside.tables summary code")]
    j.check(found == ["transport.bus_lines"], f"the table search found {found}")
    j.check(not j.d.find_elements(By.CSS_SELECTOR, "#main .table-wrap"), "the statement did not run")
    # English by the switch.
    j.click_text("English")
    j.check(j.d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en", "switched to English")
    j.done()


def sign_in(j, key, then):
    j.open("/signin?next=" + urllib.parse.quote(then))
    j.el("#key").send_keys(key)
    j.click("form button.primary")


def consumer_applies():
    j = Journey("consumer-applies")
    j.open("/signin?next=/me")
    j.shots("signin")
    j.el("#key").send_keys(CONSUMER)
    j.click("form button.primary")
    j.check("/me" in j.d.current_url, "signed in, on my access")
    j.shots("me")
    j.check("dg_session" not in j.d.execute_script("return document.cookie"),
            "the session cookie is HttpOnly (not visible to scripts)")
    j.open("/datasets/justice/legal_aid_cases")
    purpose = j.el("#purpose")
    purpose.send_keys("法律援助服务研究")
    j.navigating(purpose.submit)
    j.el(".notice.ok")
    j.shots("apply")
    j.done()


def publisher():
    j = Journey("publisher")
    sign_in(j, PUBLISHER, "/publish")
    j.check(j.d.current_url.endswith("/publish/justice"), "a publisher lands on their department")
    j.shots("publish")
    # Approve the consumer's application, with an expiry date.
    card = [c for c in j.d.find_elements(By.CSS_SELECTOR, ".card") if "法律援助服务研究" in c.text]
    j.check(card, "the pending application is listed")
    card[0].find_element(By.CSS_SELECTOR, "input[type=date]").send_keys("12312099")
    j.navigating(card[0].find_element(By.CSS_SELECTOR, "button.primary").click)
    j.check("notice=approved" in j.d.current_url, "approved")
    # Register a dataset with a masked column.
    j.el("#r-name").send_keys("hearings")
    j.el("#r-title").send_keys("庭审排期")
    j.el("#r-pk").send_keys("id")
    j.el("input[name=col0_name]").send_keys("id")
    Select(j.el("select[name=col0_type]")).select_by_visible_text("int64")
    j.el("input[name=col1_name]").send_keys("party")
    Select(j.el("select[name=col1_sensitivity]")).select_by_value("masked")
    Select(j.el("select[name=col1_mask]")).select_by_visible_text("partial")
    j.el("input[name=col2_name]").send_keys("room")
    j.click("form[action$='/register'] button.primary")
    j.check(j.d.current_url.endswith("/publish/justice/hearings?notice=registered"), "registered")
    # A 50 MB CSV, with the progress bar reaching 100% and the new version visible.
    big = os.path.join(OUT, "hearings-50mb.csv")
    rows = 0
    with open(big, "w") as fh:
        fh.write("id,party,room\n")
        while fh.tell() < 50 * 2**20:
            fh.write(f"{rows},当事人{rows % 9973},第{rows % 40}法庭\n")
            rows += 1
    j.el("#file").send_keys(big)
    j.el("#upload button.primary").click()
    WebDriverWait(j.d, 600).until(
        lambda d: d.find_element(By.ID, "upload-result").get_attribute("class") in ("notice ok", "notice error"))
    result = j.el("#upload-result")
    j.check(result.get_attribute("class") == "notice ok", f"the upload was refused: {result.text}")
    j.check(j.el("#progress").get_attribute("value") == "100", "the progress bar reached 100%")
    j.check(j.el("#progress-text").text == "100%", "the progress label says 100%")
    d = api("/api/v1/datasets/justice/hearings", PUBLISHER)
    j.check(d["row_count"] == rows, f"the version holds {d['row_count']} rows, not {rows}")
    j.check(str(rows) in result.text, "the page says how many rows the version has")
    j.shots("upload")
    # A bad CSV: the API's 422 shown with its line and column; nothing kept.
    bad = os.path.join(OUT, "hearings-bad.csv")
    with open(bad, "w") as fh:
        fh.write("id,party,room\n1,甲,第1法庭\nnot-a-number,乙,第2法庭\n")
    j.el("#file").send_keys(bad)
    j.el("#upload button.primary").click()
    WebDriverWait(j.d, 60).until(
        lambda d: "422" in d.find_element(By.ID, "upload-result").text)
    text = j.el("#upload-result").text
    j.check("line 3" in text, f"the error says the line: {text}")
    j.check("column" in text, f"the error says the column: {text}")
    j.check(api("/api/v1/datasets/justice/hearings", PUBLISHER)["row_count"] == rows, "nothing of the bad file kept")
    j.shots("upload-error")
    # A CSV saved in GBK (as Excel does in Chinese), its encoding chosen: stored as UTF-8.
    gbk = os.path.join(OUT, "hearings-gbk.csv")
    with open(gbk, "w", encoding="gbk") as fh:
        fh.write(f"id,party,room\n{rows},张三丰,第九法庭\n")
    Select(j.el("#encoding")).select_by_value("gb18030")
    j.el("#file").send_keys(gbk)
    j.el("#upload button.primary").click()
    WebDriverWait(j.d, 60).until(
        lambda d: d.find_element(By.ID, "upload-result").get_attribute("class") == "notice ok"
        and f"{rows + 1} " in d.find_element(By.ID, "upload-result").text)
    got = api(f"/api/v1/datasets/justice/hearings/rows?where=id%3D{rows}", PUBLISHER)["rows"]
    j.check(got == [{"id": rows, "party": "张三丰", "room": "第九法庭"}], f"the GBK row reads back as UTF-8: {got}")
    rows += 1
    # The version is visible on the public page.
    j.open("/datasets/justice/hearings")
    j.check(str(rows) in j.body(), "the new version's row count on the dataset page")
    j.done()


def consumer_reads_masked():
    j = Journey("consumer-reads")
    sign_in(j, CONSUMER, "/datasets/justice/legal_aid_cases")
    j.el("#main table tbody")
    masked = api("/api/v1/datasets/justice/legal_aid_cases/rows?limit=20", CONSUMER)
    cells = [td.text for td in j.d.find_elements(By.CSS_SELECTOR, "#main table tbody td")]
    for r in masked["rows"][:5]:
        for c in masked["columns"]:
            v = r[c["name"]]
            if isinstance(v, str) and v:
                j.check(v in cells, f"masked preview lacks {v!r}")
    raw = api("/api/v1/datasets/justice/legal_aid_cases/rows?limit=20", ADMIN)
    shown = set(cells)
    hidden = {c["name"] for c in raw["columns"]} - {c["name"] for c in masked["columns"]}
    for r in raw["rows"]:
        for name in hidden:
            v = r[name]
            j.check(not (isinstance(v, str) and len(v) > 3 and v in shown), f"private {name} shown")
    j.shots("dataset-granted")
    j.done()


def auditor():
    j = Journey("auditor")
    sign_in(j, AUDITOR, "/audit")
    consumer_id = CONSUMER.split("_")[1]
    box = j.el("#a-principal")
    box.send_keys(consumer_id)
    j.click("form.filters button.primary")
    rows = j.d.find_elements(By.CSS_SELECTOR, "#log tbody tr")
    expected = api(f"/api/v1/audit/events?principal={consumer_id}&limit=50", AUDITOR)["rows"]
    j.check(len(rows) == len(expected) and len(rows) > 0, f"{len(rows)} log rows, the API has {len(expected)}")
    for r in rows:
        j.check(consumer_id in r.text, "only the consumer's records")
    j.shots("audit")
    j.click("form.inline button.secondary")
    verdict = j.el("#verdict")
    j.check("ok" in verdict.get_attribute("class").split(), f"the chain verifies: {verdict.text}")
    j.check(len(j.d.find_elements(By.CSS_SELECTOR, "svg.chart rect")) > 0, "the charts have bars")
    j.shots("audit-verified")
    j.done()


def admin():
    j = Journey("admin")
    sign_in(j, ADMIN, "/admin")
    j.el("#k-name").send_keys("数据分析组")
    Select(j.el("#k-role")).select_by_visible_text("consumer")
    j.click("form[action='/admin/keys'] button.primary")
    key = j.el("#new-key code").text
    j.check(key.startswith("dg_"), f"the new key is shown: {key!r}")
    j.check(api("/api/v1/me", key)["role"] == "consumer", "the new key works")
    j.shots("admin")
    j.done()


def hostile():
    # A dataset whose title, description, tag and values are markup.
    api("/api/v1/datasets", ADMIN, "POST", {
        "department": "transport", "name": "hostile", "title": "<script>alert(1)</script>",
        "description": "\"><img src=x onerror=alert(2)>", "access_level": "open",
        "tags": ["<svg onload=alert(3)>"], "columns": [{"name": "v", "type": "utf8"}]})
    api("/api/v1/datasets/transport/hostile/versions", ADMIN, "POST",
        (b"v\n<script>alert(4)</script>\n\"<img src=x onerror=alert(5)>\"\n", "text/csv"))
    j = Journey("hostile")
    for path in ["/", "/datasets/transport/hostile", "/sql?q=" + urllib.parse.quote("SELECT * FROM transport.hostile")]:
        j.open(path)
        time.sleep(0.3)
        j.no_dialog()
        j.check("<script>alert(1)</script>" in j.body() or path.startswith("/sql"),
                f"{path}: the hostile title shows as text")
    j.done()


# WCAG 2.1 contrast of every visible text on the page against the background it is painted on
# (backgrounds composed up the tree; SVG text by its fill): 4.5:1, or 3:1 for large text.
CONTRAST_JS = r"""
const parse = c => { const m = c && c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
  const p = m[1].split(',').map(parseFloat); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
const over = (top, under) => ({r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a),
  b: top.b * top.a + under.b * (1 - top.a), a: 1});
const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
const background = el => { const layers = [];
  for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; } }
  let out = {r: 255, g: 255, b: 255, a: 1};
  for (let i = layers.length - 1; i >= 0; i--) out = over(layers[i], out);
  return out; };
const bad = [], seen = new Set();
const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walk.nextNode()) {
  const el = walk.currentNode.parentElement;
  if (!walk.currentNode.textContent.trim() || seen.has(el)) continue;
  seen.add(el);
  const cs = getComputedStyle(el), box = el.getBoundingClientRect();
  if (cs.visibility === 'hidden' || cs.display === 'none' || box.width === 0 || box.right < 0 || box.bottom < 0) continue;
  if (el.closest('title, script, style, option')) continue;
  const inSvg = el instanceof SVGElement;
  const bg = background(inSvg ? el.closest('svg') : el);
  const fg = over(parse(inSvg ? cs.fill : cs.color) || {r: 0, g: 0, b: 0, a: 1}, bg);
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight) >= 700;
  const need = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
  if (ratio < need) bad.push(`${ratio.toFixed(2)} < ${need}: <${el.tagName.toLowerCase()} class="${el.className.baseVal ?? el.className}"> ${el.textContent.trim().slice(0, 40)}`);
}
return bad;
"""

# Form controls without a label (a <label for>, a wrapping label, aria-label or -labelledby), and
# buttons and links without an accessible name.
LABELS_JS = r"""
const out = [];
for (const e of document.querySelectorAll('input, select, textarea')) {
  if (['hidden', 'submit', 'button'].includes(e.type)) continue;
  if ((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')) continue;
  out.push(e.outerHTML.slice(0, 120));
}
for (const e of document.querySelectorAll('button, a[href]')) {
  if (!(e.textContent.trim() || e.getAttribute('aria-label') || e.getAttribute('title'))) out.push(e.outerHTML.slice(0, 120));
}
return out;
"""


def accessible():
    """Keyboard only: skip link, search, a dataset, its preview filter. Then every page's
    contrast and labels, for the public and for a signed-in admin."""
    j = Journey("accessible")
    j.open("/")
    keys = ActionChains(j.d)

    def tab_to(test, what, limit=60):
        for _ in range(limit):
            ActionChains(j.d).send_keys(Keys.TAB).perform()
            if j.d.execute_script(test):
                focused = j.d.switch_to.active_element
                outline = j.d.execute_script(
                    "const s = getComputedStyle(arguments[0]); return s.outlineStyle + ' ' + s.outlineWidth",
                    focused)
                j.check(not outline.startswith("none") and not outline.endswith(" 0px"),
                        f"{what}: focus is not visible ({outline})")
                return focused
        j.fail(f"{what} is not reachable with Tab")

    tab_to("return document.activeElement.classList.contains('skip')", "the skip link")
    box = j.d.execute_script("return document.activeElement.getBoundingClientRect()")
    j.check(box["left"] >= 0 and box["top"] >= 0, "the focused skip link is on screen")
    keys.send_keys(Keys.ENTER).perform()
    j.check(j.d.current_url.endswith("#main"), "the skip link goes to the content")
    tab_to("return document.activeElement.id === 'q'", "the search box")
    ActionChains(j.d).send_keys("公交").perform()
    j.navigating(lambda: ActionChains(j.d).send_keys(Keys.ENTER).perform())
    j.check("q=" in j.d.current_url, "Enter in the search box searches")
    tab_to("return !!document.activeElement.closest('.card h3')", "a dataset in the results")
    j.navigating(lambda: ActionChains(j.d).send_keys(Keys.ENTER).perform())
    j.check("/datasets/" in j.d.current_url, "Enter on a card opens the dataset")
    tab_to("return document.activeElement.id === 'where'", "the preview's filter")
    ActionChains(j.d).send_keys("night_line = true").perform()
    j.navigating(lambda: ActionChains(j.d).send_keys(Keys.ENTER).perform())
    j.check("where=" in j.d.current_url, "Enter in the filter filters the preview")

    def audit_page(path):
        j.open(path)
        j.el("main")
        low = j.d.execute_script(CONTRAST_JS)
        j.check(not low, f"{path}: text below WCAG AA contrast: {low[:5]}")
        unlabelled = j.d.execute_script(LABELS_JS)
        j.check(not unlabelled, f"{path}: controls without a label or name: {unlabelled[:5]}")

    for path in ["/", "/?lang=en", "/datasets/transport/bus_lines", "/datasets/justice/legal_aid_cases",
                 "/sql?q=" + urllib.parse.quote("SELECT 1 AS one"), "/sql?q=" + urllib.parse.quote("SELECT ("),
                 "/signin", "/datasets/transport/no_such_dataset"]:
        audit_page(path)
    sign_in(j, ADMIN, "/me")
    for path in ["/me", "/publish", "/publish/transport", "/publish/transport/bus_lines", "/audit",
                 "/audit?verify=1&report=bytes-by-principal", "/admin"]:
        audit_page(path)
    j.done()


def main():
    accessible()
    anonymous()
    consumer_applies()
    publisher()
    consumer_reads_masked()
    auditor()
    admin()
    hostile()
    print("all journeys passed", flush=True)


if __name__ == "__main__":
    main()
