"""The HTML report (--html FILE): what the page shows, read back.

Guards against a report that looks right but says the wrong thing: a verdict
row missing, the first difference of a FAIL marked at the wrong step, faults
missing from the timeline, a coverage grid that disagrees with the JSON
report, and text from files (sentences, paths) becoming markup.

One suite of three tiny scenarios runs (a PASS, a FAIL, an ERROR), from a
folder whose path holds a <script> element; headless Chromium (Debian's
`chromium`) loads the page once and dumps its DOM, which is parsed here.
A first test needs neither MPI nor Chromium: the synthetic page of
tests/unit/test_html.c (`test_html --write`) through Python's html.parser.
"""
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mpi import BIN

HARNESS = BIN / "ckpt-harness"
VOID = {"meta", "br", "link", "img", "hr", "input", "source", "wbr", "area", "base", "col", "embed", "param",
        "track"}


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag=None, cls=None, **attrs):
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if cls and cls not in n.attrs.get("class", "").split():
                continue
            if any(n.attrs.get(k.replace("_", "-")) != str(v) for k, v in attrs.items()):
                continue
            out.append(n)
        return out

    def find(self, *args, **kw):
        found = self.find_all(*args, **kw)
        assert found, (args, kw)
        return found[0]


class Page(HTMLParser):
    """A small DOM: elements with attributes, children and text."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {}, None)
        self.doctype = None
        self.feed(text)
        self.close()

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def section(page, name):
    return next(s for s in page.root.find_all("section", cls="scenario") if s.attrs["data-scenario"] == name)


def no_active_content(page):
    """Nothing runs and nothing is fetched: no script, no handler, no outside URL."""
    assert not page.root.find_all("script")
    for n in page.root.iter():
        for k, v in n.attrs.items():
            assert not k.startswith("on"), (n.tag, k)
            if k in ("src", "href", "xlink:href"):
                assert v is None or v.startswith("#"), (n.tag, k, v)


def test_html_page_structure_without_chromium(tmp_path):
    out = tmp_path / "synthetic.html"
    res = subprocess.run([BIN / "test_html", "--write", out], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    page = Page(out.read_text())
    assert page.doctype.lower() == "doctype html"
    no_active_content(page)
    rows = page.root.find_all("tr", cls="verdict")
    assert [r.attrs["data-verdict"] for r in rows] == ["FAIL", "PASS", "SKIP"]
    assert all(len(r.find_all("td")) == 8 for r in rows)
    # a name with markup in it is text, and its row links to its section
    name = "skip-opt<script>document.title='x'</script>"
    assert rows[0].find("td", cls="name").text() == name
    assert rows[0].find("a").attrs["href"] == "#s-0"
    fail = page.root.find("section", id="s-0")
    assert fail.attrs["data-scenario"] == name
    assert fail.find("p", cls="path").text().startswith("/tmp/a<script>alert(1)</script>/b&c\"d'e.yaml")
    assert "<img src=x onerror=alert(2)> & more \\x01\\xff end" in fail.find("p", cls="sentence").text()
    assert fail.find("g", cls="first-diff").attrs["data-step"] == "10"
    assert fail.find("span", cls="diff-step").text() == "10"
    fires = fail.find_all("li", cls="fire")
    assert [(f.attrs["data-rank"], f.attrs["data-step"], f.attrs["data-action"]) for f in fires] == \
        [("0", "10", "errno:EIO"), ("1", "12", "kill"), ("1", "15", "errno:ENOSPC")]
    assert fires[2].attrs["data-phase"] == "" and "(no phase) / write" in fires[2].text()
    assert [a.attrs["data-restored-from"] for a in fail.find_all("tr", cls="attempt")] == ["-1", "10"]
    assert not section(page, "plain-pass").find_all("g", cls="first-diff")
    assert "No attempt ran" in section(page, "never-ran").text()
    cells = {(c.attrs["data-phase"], c.attrs["data-op"]): int(c.attrs["data-count"])
             for c in page.root.find("table", cls="coverage").find_all("td")}
    assert {k: v for k, v in cells.items() if v} == {("save.shard_write", "write"): 2, ("train.step", "phase"): 1,
                                                     ("", "rename"): 1}


PASS = """name: html-torn-shard
trainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 5, keep: 3}}
faults:
  - when: {rank: 1, step: 10, phase: save.shard_write, op: write, nth: 2}
    do: {torn: 100, then: kill}
expect: {outcome: resume_bitwise, restored_from: 5}
"""
# test_skip_restore: reftrain leaves the optimizer moments unrestored, so the restore at step 10 is the first difference
FAIL = """name: html-skip-opt
trainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 5, keep: 3}, test_skip_restore: opt}
faults:
  - when: {rank: 1, step: 12, phase: train.step}
    do: kill
expect: {outcome: resume_bitwise}
"""
ERROR = """name: html-never-fires
trainer: {preset: tiny, world_size: 2, steps: 20, checkpoint: {every: 5, keep: 3}}
faults:
  - when: {rank: 0, step: 10, phase: save.commit, op: rename, nth: 99}
    do: kill
expect: {outcome: resume_bitwise}
"""
HOSTILE = "<script>document.body.dataset.pwned=1</script>"


def chromium_dom(html, tmp):
    exe = shutil.which("chromium")
    if not exe:
        pytest.fail("chromium is not installed: the HTML report is checked by rendering it "
                    "(scripts/common.sh installs Debian's chromium)")
    profile = tmp / "chromium-profile"
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--dump-dom",
                             html.as_uri()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)      # its helpers too: nothing outlives the test
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0 and "</html>" in out, err[-2000:]
    return out, err


def drop_evidence(report):
    """The work directories the harness kept of the FAIL and the ERROR: expected here, not evidence."""
    for s in report["scenarios"]:
        if s.get("workdir"):
            shutil.rmtree(s["workdir"], ignore_errors=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    # a folder whose path spells a script element ("/" cannot be in a name, so it spans two)
    d = tmp / HOSTILE.split("/")[0] / HOSTILE.split("/", 1)[1]
    d.mkdir(parents=True)
    for name, text in (("pass", PASS), ("fail", FAIL), ("error", ERROR)):
        (d / f"{name}.yaml").write_text(text)
    html, js = tmp / "report.html", tmp / "r.json"
    res = subprocess.run([HARNESS, "suite", d, "-j", "2", "--html", html, "--json", js], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(js.read_text())
    drop_evidence(report)
    dom, log = chromium_dom(html, tmp)
    # the page asked for nothing the Content-Security-Policy had to block (a fetch, a script, a handler)
    assert "Content Security Policy" not in log, log[-2000:]
    return Page(dom), report, d


def test_html_shows_every_verdict_row(rendered):
    page, report, _ = rendered
    rows = {r.attrs["data-scenario"]: r for r in page.root.find_all("tr", cls="verdict")}
    assert {n: r.find("td", cls="v").text() for n, r in rows.items()} == \
        {"html-torn-shard": "PASS", "html-skip-opt": "FAIL", "html-never-fires": "ERROR"}
    for s in report["scenarios"]:
        assert rows[s["name"]].find("td", cls="sentence").text() == s["sentence"]
    assert "1 passed" in page.root.find("p", id="summary").text()


def test_html_marks_the_first_difference_of_a_fail_at_its_step(rendered):
    page, report, _ = rendered
    sentence = next(s["sentence"] for s in report["scenarios"] if s["name"] == "html-skip-opt")
    step = re.search(r"restored at step (\d+)", sentence).group(1)
    assert step == "10"
    fail = section(page, "html-skip-opt")
    marker = fail.find("g", cls="first-diff")
    assert marker.attrs["data-step"] == step and marker.attrs["data-attempt"] == "2"
    assert marker.find("text").text() == f"first difference: step {step}"
    assert "restored state differs at step 10 (attempt 2): opt" in marker.find("title").text()
    assert fail.find("span", cls="diff-step").text() == step
    # the loss curves: the uninterrupted run, and each attempt's own
    svg = fail.find("svg", cls="loss")
    assert len(svg.find("polyline", cls="golden").attrs["points"].split()) == 20
    assert [p.attrs["data-attempt"] for p in svg.find_all("polyline", cls="resumed")] == ["1", "2"]
    # a run that resumed bit for bit has no marker
    assert not section(page, "html-torn-shard").find_all("g", cls="first-diff")
    assert "No step of any attempt differs" in section(page, "html-torn-shard").text()


def test_html_timeline_shows_attempts_and_the_faults_that_fired(rendered):
    page, _, _ = rendered
    fail = section(page, "html-skip-opt")
    attempts = fail.find_all("tr", cls="attempt")
    assert [a.attrs["data-restored-from"] for a in attempts] == ["-1", "10"]
    kill = attempts[0].find("li", cls="fire")
    assert (kill.attrs["data-rank"], kill.attrs["data-step"], kill.attrs["data-phase"], kill.attrs["data-action"]) \
        == ("1", "12", "train.step", "kill")
    assert "killed: rank 1 at step 12" in attempts[0].find("td", cls="ended").text()
    assert attempts[0].find("td", cls="commits").text() == "5, 10"
    assert attempts[1].find("td", cls="ended").text() == "finished (done)"
    assert attempts[1].find_all("td")[1].text() == "step 10 (step-00000010), 2 ranks"
    torn = section(page, "html-torn-shard").find("li", cls="fire")
    assert (torn.attrs["data-rank"], torn.attrs["data-step"], torn.attrs["data-phase"], torn.attrs["data-op"],
            torn.attrs["data-action"]) == ("1", "10", "save.shard_write", "write", "torn:100+kill")
    assert "step-00000010.tmp/rank-00001.safetensors" in torn.text()
    assert [a.attrs["data-restored-from"] for a in section(page, "html-torn-shard").find_all("tr", cls="attempt")] \
        == ["-1", "5"]
    # and in the SVG timeline: a fault mark on attempt 1's row
    row = section(page, "html-torn-shard").find("g", cls="attempt-row", data_attempt="1")
    assert "rank 1, step 10, save.shard_write / write #2" in row.find("path", cls="fire-mark").text()


def test_html_coverage_grid_matches_the_json_report(rendered):
    page, report, _ = rendered
    cells = {(c.attrs["data-phase"], c.attrs["data-op"]): int(c.attrs["data-count"])
             for c in page.root.find("table", cls="coverage").find_all("td")}
    hit = {f"{p}/{o}": n for (p, o), n in cells.items() if n}
    assert hit == report["coverage"] == {"save.shard_write/write": 1, "train.step/phase": 1}
    assert cells[("save.commit", "rename")] == 0      # the ERROR scenario's fault never fired


def test_html_text_from_files_is_shown_as_text(rendered):
    page, _, d = rendered
    no_active_content(page)
    body = page.root.find("body")
    assert "data-pwned" not in body.attrs
    err = section(page, "html-never-fires")
    assert err.find("p", cls="path").text().startswith(str(d / "error.yaml"))
    assert HOSTILE in err.find("p", cls="path").text()
    assert HOSTILE in err.find("p", cls="sentence").text()      # the sentence names the file


def test_html_from_run_and_a_page_that_cannot_be_written(tmp_path):
    scenario = tmp_path / "error.yaml"
    scenario.write_text(ERROR)
    html = tmp_path / "one.html"
    res = subprocess.run([HARNESS, "run", scenario, "--html", html, "--json", tmp_path / "r.json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    drop_evidence(json.loads((tmp_path / "r.json").read_text()))
    page = Page(html.read_text())
    no_active_content(page)
    assert [(r.attrs["data-scenario"], r.attrs["data-verdict"]) for r in page.root.find_all("tr", cls="verdict")] \
        == [("html-never-fires", "ERROR")]
    assert "fault did not fire" in section(page, "html-never-fires").find("p", cls="sentence").text()
    assert not list(tmp_path.glob("*.tmp"))
    # a page that cannot be written: the harness could not do its job (3), said on stderr
    res = subprocess.run([HARNESS, "run", scenario, "--html", tmp_path / "missing" / "one.html", "--json",
                          tmp_path / "r2.json"], capture_output=True, text=True, timeout=300)
    drop_evidence(json.loads((tmp_path / "r2.json").read_text()))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "cannot write" in res.stderr and "missing/one.html" in res.stderr
