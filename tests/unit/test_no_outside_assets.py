"""The pages we serve load only their own stylesheet and script, and no shipped file names an outside origin.

The Content-Security-Policy of the plugin's app allows its own origin only and no inline code: a
page that needed more would break in the browser without the server knowing. ``tests/e2e/test_board.py``
watches the real browser; these tests read the markup and the code.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from conftest import reach_state
from html_assets import page_assets

from hdh_migration.board import board_view, render_board
from hdh_migration.catalogue import load_catalogue
from hdh_migration.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
# Hosts of the public CDNs and clouds that GX's Data Docs pulled in, and their kin.
OUTSIDE = re.compile(
    r"https?://[A-Za-z0-9.-]*(jsdelivr|unpkg|cdnjs|cloudflare|googleapis|gstatic|jquery|bootstrapcdn|amazonaws|"
    r"azureedge|fontawesome)[A-Za-z0-9./-]*",
    re.IGNORECASE,
)


def test_the_board_page_loads_its_own_stylesheet_and_script_only(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.set_domain_state("causes_deces", "transferring")
    ledger.record_event("causes_deces", "planned", {"source_bytes": 10**7}, table_name="KI_CCI_R", partition="2022")
    reach_state(
        ledger, "causes_deces", "KI_CCI_R", "2022", "committed", run_id="r1", rows=5, bytes=10**7, duration_s=4.0
    )
    ledger.record_event(
        "causes_deces",
        "quarantine_report",
        {"expectations": ["expect_column_values_to_not_be_null(DCD_DAT)"], "severity": "data",
         "report_key": "_quarantine/causes_deces/KI_CCI_R/FLX_PER_ANN=2023/0123456789abcdef.json"},
        table_name="KI_CCI_R", partition="2023", run_id="r2",
    )  # fmt: skip
    reach_state(ledger, "causes_deces", "KI_CCI_R", "2023", "quarantined", run_id="r2")
    ledger.record_gap_scan(
        started_at=dt.datetime(2026, 11, 28, 6, tzinfo=dt.UTC), dry_run=True, partitions_checked=3, gaps=1,
        backfills=0, run_id="g1", report={"gaps": [{"domain": "dcir", "table": "ER_PRS_F", "partition": "2024-03-01"}]},
    )  # fmt: skip
    page = render_board(board_view(load_catalogue(), ledger), "/airflow/hdh")
    assert 'href="/hdh/reports/causes_deces/KI_CCI_R/FLX_PER_ANN=2023/0123456789abcdef"' in page
    assert "<rect" in page and "<polyline" in page and "<progress" in page, "the plots and the bars are in the page"
    assert page_assets(page) == {"/airflow/hdh/static/hdh.css", "/airflow/hdh/static/hdh.js"}


def test_the_shipped_code_names_no_outside_origin():
    shipped = [p for top in ("plugins", "dags") for p in (ROOT / top).rglob("*") if p.is_file()]
    assert any(p.name == "hdh.css" for p in shipped) and any(p.name == "board.py" for p in shipped)
    found = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in shipped
        if "__pycache__" not in p.parts
        for m in OUTSIDE.finditer(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert found == []


def test_the_scan_finds_an_outside_origin():
    assert OUTSIDE.search('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>')
    assert OUTSIDE.search("https://greatexpectations-web-assets.s3.us-east-2.amazonaws.com/logo.png")
    assert OUTSIDE.search('<link href="https://cdnjs.cloudflare.com/ajax/libs/x.css">')
