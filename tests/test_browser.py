"""The HTML reports in a real browser: headless Chromium (Debian's ``chromium``, installed by the fixture when
missing and apt-get can) opens the atlas report, a sweep report and the attention viewer from disk, and every
plot draws (each plotly div has its ``.main-svg``), the console stays free of errors and no request leaves the
file. The viewer's token hover and head picker are exercised too. Screenshots go to the test's tmp dir."""
import pytest

from _browser import Browser, ensure_chromium

PLOTS_DRAWN = """(function () {
  var plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  return plots.length > 0 && plots.every(function (p) { return p.querySelector('.main-svg'); }) ? plots.length : 0;
})()"""


@pytest.fixture(scope="module")
def browser():
    exe, reason = ensure_chromium()
    if exe is None:
        pytest.skip(f"no headless browser: {reason}")
    b = Browser(exe)
    yield b
    b.close()


def _check(browser, path, shot, min_plots):
    page = browser.open(path)
    drawn = page.wait_until(PLOTS_DRAWN, timeout=90)
    page.screenshot(shot)
    assert drawn >= min_plots, f"{path.name}: {drawn} plots drew, expected at least {min_plots}"
    assert page.evaluate("document.querySelectorAll('.main-svg').length") >= min_plots
    return page


def browser_requests(browser, path):
    return browser.open(path).requests()


def _clean(page):
    assert page.errors() == [], page.errors()
    assert page.outside_requests() == [], page.outside_requests()
    assert page.requests()[0].startswith("file://")


@pytest.mark.slow
def test_atlas_report_draws_offline(browser, tiny_llama, tmp_path):
    from interp.jobs.atlas import run_atlas
    from interp.jobs.config import AtlasConfig

    paths = run_atlas(tiny_llama, tmp_path / "atlas", AtlasConfig(seq_len=6, text_tokens=24, view_tokens=12, niah_lengths=()),
                      progress=False)
    page = _check(browser, paths["report"], tmp_path / "atlas.png", min_plots=10)  # 8 heatmaps, the viewer, the sink rows
    assert page.evaluate("document.querySelector('.interp-rowview').dataset.drawn")
    _clean(page)
    assert (tmp_path / "atlas.png").stat().st_size > 10_000


@pytest.mark.slow
def test_sweep_report_draws_offline(browser, tiny_dir, tmp_path):
    from interp.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text(f'seeds = [0, 1]\nmetrics = ["loss"]\n[[models]]\nname = "{tiny_dir}"\n[[tasks]]\nname = "induction"\n'
                    'size = 2\nlength = 4\n[[interventions]]\nname = "ablate"\n[[interventions]]\nname = "scale"\n'
                    'factor = 0.5\n[[analyses]]\nname = "patching"\n[[analyses]]\nname = "entropy"\nprompts = 2\ntokens = 12\n')
    main(["sweep", str(spec), "--out", str(tmp_path / "sweep"), "--threads", "1", "--quiet"])
    # a unit's own report, from inside the folder: it loads the folder root's one plotly.min.js, no network
    unit = sorted((tmp_path / "sweep" / "units").glob("*/report.html"))[0]
    _clean(_check(browser, unit, tmp_path / "unit.png", min_plots=1))
    assert any(u.endswith("/sweep/plotly.min.js") for u in browser_requests(browser, unit))
    page = _check(browser, tmp_path / "sweep" / "report.html", tmp_path / "sweep.png", min_plots=4)
    _clean(page)
    assert page.evaluate("document.querySelector('h1').textContent") == "Sweep · sweep"
    # the loss heatmap's facet dropdown lists the conditions and seeds that vary (the entropy job's vary by seed)
    labels = page.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot')).filter(function (p) {
      return (p.layout.updatemenus || []).length && /loss/.test(JSON.stringify(p.layout.title || ''));
    }).map(function (p) { return p.layout.updatemenus[0].buttons.map(function (b) { return b.label; }); })""")
    assert labels and "condition=ablate(how=zero) · seed=1" in labels[0], labels


def test_viewer_hover_and_head_picker(browser, tiny_llama, tmp_path):
    from interp.plot.viewer import viewer_from_model

    v = viewer_from_model(tiny_llama, {"first": "the cat sat on the mat", "second": "a dog ran"}, [(0, 1), (1, 4)],
                          metrics={"L1H4": {"induction": 0.5}})
    page = _check(browser, v.save(tmp_path / "viewer.html"), tmp_path / "viewer-before.png", min_plots=1)
    n = page.evaluate("document.querySelectorAll('.iv-tok').length")
    assert n == len(v.prompts[0].tokens)
    hovered = page.evaluate("""(function () {
      var toks = document.querySelectorAll('.iv-tok');
      toks[5].dispatchEvent(new MouseEvent('mouseenter'));
      var gd = document.querySelector('.js-plotly-plot');
      return {shapes: gd.layout.shapes.length, row: toks[0].dataset.row, col: toks[7].dataset.col,
              tinted: Array.from(toks).filter(function (t) { return t.style.background; }).length,
              hover: toks[5].classList.contains('iv-hover')};
    })()""")
    pattern = v.prompts[0].patterns["L0H1"]
    assert hovered["shapes"] == 2 and hovered["hover"]
    assert abs(float(hovered["row"]) - pattern[5, 0]) < 2e-3 and abs(float(hovered["col"]) - pattern[7, 5]) < 2e-3
    assert hovered["tinted"] == 6  # a causal row: token 5 attends to tokens 0..5
    picked = page.evaluate("""(function () {
      var sel = document.querySelector('.iv-head'); sel.value = '1'; sel.dispatchEvent(new Event('change'));
      var gd = document.querySelector('.js-plotly-plot');
      return [gd.layout.title.text, document.querySelector('.iv-metrics').textContent];
    })()""")
    assert picked[0].startswith("L1H4") and "induction" in picked[1]
    page.screenshot(tmp_path / "viewer-after.png")
    _clean(page)


NEEDLE_POINT = """(function (key) {
  var gd = document.querySelector('.interp-rowview .js-plotly-plot');
  gd.scrollIntoView();
  var r = gd.getBoundingClientRect(), L = gd._fullLayout, xa = L.xaxis, ya = L.yaxis, y = gd.data[0].y[key];
  return {x: r.left + xa._offset + xa.l2p(key), y: r.top + ya._offset + ya.l2p(y), top: r.top + L.yaxis2._offset,
          bottom: r.top + ya._offset + ya._length, scrollY: window.scrollY};  // the strip sits above the line
})(%d)"""


def test_row_view_of_8192_keys_hovers_the_needle_and_marks_it(browser, tmp_path):
    """The row view of an 8192-key report (10 heads): it draws with no console error, a real mouse move onto
    the needle's key shows that key's token and weight (plotly's label and the status line), and the screenshot
    has the needle span's red shading at the needle's x."""
    from PIL import Image
    from test_rowview import synthetic_view

    from interp.plot.export import write_report

    v = synthetic_view()
    path = write_report(tmp_path / "rows" / "report.html", "Row view · 8192 keys", [("rows", v)])
    page = browser.open(path)
    assert page.wait_until("document.querySelector('.interp-rowview').dataset.drawn", timeout=60) == "L0H0/0"
    assert page.evaluate("document.querySelectorAll('.interp-rowview .main-svg').length") >= 1
    assert page.evaluate("document.querySelector('.rv-top tr:nth-child(2)').textContent").startswith("15000 The")
    needle = 5000
    pt = page.evaluate(NEEDLE_POINT % needle)
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": pt["x"], "y": pt["y"]}, session=page.session)
    status = page.wait_until("document.querySelector('.rv-status').dataset.key", timeout=10)
    weight = float(v.rows["L0H0"][0, needle])
    assert status == str(needle)
    text = page.evaluate("document.querySelector('.rv-status').textContent")
    assert text.startswith(f"key {needle}:  The  weight {weight:.4f}") and text.endswith("(needle)"), text
    label = page.evaluate("(document.querySelector('.hoverlayer .hovertext') || {}).textContent")
    assert label and f"key {needle}:" in label and "The" in label and f"{weight:.4g}" in label, label
    shot = page.screenshot(tmp_path / "rowview.png")
    img = Image.open(shot).convert("RGB")
    # the screenshot's page coordinates: the viewport was scrolled by scrollY when the point was measured
    x, top, bottom = round(pt["x"]), round(pt["top"] + pt["scrollY"]), round(pt["bottom"] + pt["scrollY"])
    column = [img.getpixel((xx, yy)) for xx in range(x - 2, x + 3) for yy in range(top, bottom, 2)]
    red = [p for p in column if p[0] > 170 and p[1] < 140 and p[2] < 140]
    elsewhere = [img.getpixel((xx, yy)) for xx in range(x - 120, x - 115) for yy in range(top, bottom, 2)]
    assert len(red) > 20 and not [p for p in elsewhere if p[0] > 170 and p[1] < 140 and p[2] < 140], (len(red), x)
    _clean(page)
