"""HTML report and write_report: same numbers as the JSON, self-contained, and it renders in a browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest
from _audit_fixtures import make_audit, make_comparison
from _report_checks import (
    assert_points,
    check_audit_tables,
    check_comparison_table,
    check_worst_comparison_table,
    html_tables,
)

from fairscan.errors import InputError
from fairscan.report import REPORT_FILES, write_report
from fairscan.report.html import audit_html, comparison_html

CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
IMG_RE = re.compile(r'<img src="data:image/(svg\+xml|png);base64,([A-Za-z0-9+/=]*)"')


@pytest.fixture(scope="module")
def audit():
    return make_audit(balanced=True)


@pytest.fixture(scope="module")
def audit_page(audit):
    return audit_html(audit)


def _assert_self_contained(html: str) -> None:
    lowered = html.lower()
    assert "<script" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", lowered)
    assert "url(" not in lowered


def _images(html: str) -> list[bytes]:
    imgs = [base64.b64decode(payload) for _, payload in IMG_RE.findall(html)]
    assert imgs and all(imgs)
    for img in imgs:
        assert img.lstrip().startswith(b"<?xml") or img.startswith(b"\x89PNG")
        assert not re.search(rb"(href|src)=.https?:|url\((?!#)", img)  # only the SVG's own clip paths
    return imgs


def test_audit_numbers_round_trip(audit, audit_page):
    assert check_audit_tables(audit, html_tables(audit_page)) > 200
    s = audit["summary"]
    card = re.search(r'Mean AUC</div><div class="v">([^<]+)</div><div class="ci">([^<]+)</div>', audit_page)
    assert_points(f"{card[1]} {card[2]}", s["mean_auc"], s["mean_auc_ci"])
    for attr, a in s["attrs"].items():
        card = re.search(
            rf'\(FG\), {attr}</div><div class="v">([^<]+)</div><div class="ci">([^<]+)</div>', audit_page
        )
        assert_points(f"{card[1]} {card[2]}", a["gap"], a["gap_ci"], where=attr)


def test_audit_page_is_self_contained_with_three_figures(audit_page):
    _assert_self_contained(audit_page)
    assert len(_images(audit_page)) == 3
    for key in ("fig-group-delta", "fig-label-auc", "fig-label-delta"):
        assert f'<figure id="{key}">' in audit_page
    assert "AUC points" in audit_page and "JSON holds fractions" in audit_page
    assert "Δ vs mean over subgroups" in audit_page and "Δ vs whole population" in audit_page


def test_nulls_and_missing_sections():
    d = make_audit(intervals=False, thresholds=False, gate=False)
    page = audit_html(d)
    check_audit_tables(d, html_tables(page))
    assert 'id="threshold-metrics"' not in page and "Gate:" not in page
    assert "Intervals: off." in page
    assert len(_images(page)) == 3


def test_user_text_is_escaped():
    d = make_audit(model="<script>alert(1)</script>")
    d["notes"] = ['<img src="http://evil.example/x.png">']
    page = audit_html(d)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    _assert_self_contained(page)


def test_comparison_page(tmp_path):
    d = make_comparison()
    page = comparison_html(d)
    _assert_self_contained(page)
    assert check_comparison_table(d, *html_tables(page)["comparison"]) > 10
    assert check_worst_comparison_table(d, *html_tables(page)["worst-comparison"]) == 3 * 2 + 2 * 2
    assert len(_images(page)) == 1 and '<figure id="fig-scatter">' in page
    for name in d["models"]:
        assert f"<h3>{name}</h3>" in page


def test_comparison_gate_badge():
    d = make_comparison()
    d["gate"] = {"max_gap": 0.01, "min_auc": None, "passed": False, "reasons": ["bit: sex gap 0.02 > 0.01"]}
    assert (
        '<span class="gate bad">FAILED (max gap 1.00): bit: sex gap 0.02 &gt; 0.01</span>'
        in comparison_html(d)
    )


def test_write_report_writes_three_files(tmp_path, audit):
    paths = write_report(audit, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == REPORT_FILES
    assert json.loads(paths["json"].read_text()) == audit
    assert paths["markdown"].read_text().startswith("# Fairness audit: preds")
    assert paths["html"].read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        REPORT_FILES.values()
    )  # no temp files


def test_write_report_comparison_and_bad_input(tmp_path):
    paths = write_report(make_comparison(), tmp_path / "cmp")
    assert paths["markdown"].read_text().startswith("# Fairness comparison")
    with pytest.raises(InputError, match="schema"):
        write_report({"schema": "something/9"}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_minimal_audit_renders_without_figures():
    page = audit_html({"schema": "fairscan.audit/1", "model": "empty", "labels": {}, "summary": {}})
    assert "<h1>Fairness audit: empty</h1>" in page and "<img" not in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_opens_in_headless_chromium(tmp_path, audit):
    from PIL import Image

    html = write_report(audit, tmp_path / "report")["html"]
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,2000",
        f"--screenshot={shot}",
        "--dump-dom",
        html.resolve().as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = run.stdout
    assert "<h1>Fairness audit: preds</h1>" in dom, run.stderr[-2000:]
    for heading in ("Summary", "Figures", "Per label", "Notes"):
        assert f"<h2>{heading}</h2>" in dom
    for table in ("summary-sex", "summary-race", "labels-sex", "labels-race", "thresholds"):
        assert f'<table id="{table}">' in dom
    assert len(_images(dom)) == 3

    assert shot.exists(), run.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2000)
    small = img.resize((300, 500))
    pixels = list(small.getdata())
    non_white = sum(1 for p in pixels if sum(p) < 720) / len(pixels)
    assert non_white > 0.03, "the screenshot is blank"
    # the figures' subgroup colours (Okabe-Ito blue and orange) only come from the rendered SVGs
    blue = sum(1 for r, g, b in img.getdata() if r < 30 and 95 < g < 135 and 160 < b < 195)
    orange = sum(1 for r, g, b in img.getdata() if r > 200 and 130 < g < 185 and b < 40)
    assert blue > 200 and orange > 200, (blue, orange)
