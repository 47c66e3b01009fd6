"""A table that passed but waits for a quarantined table of its partition says so, on the board and in status."""

from __future__ import annotations

from conftest import CATALOGUE, reach_state

from hdh_migration.board import board_view, render_board
from hdh_migration.catalogue import load_catalogue
from hdh_migration.ledger import Ledger
from hdh_migration.status import status_rows


def test_the_board_and_status_say_which_table_waits_on_which(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.set_domain_state("dcir", "transferring")
    reach_state(ledger, "dcir", "ER_PHA_F", "2024-01-01", "quarantined", run_id="r1", last_error="quarantined: ...")
    waits = "waits for ER_PHA_F (quarantined in the same partition)"
    reach_state(ledger, "dcir", "ER_PRS_F", "2024-01-01", "validated", run_id="r1", rows=5, last_error=waits)
    reach_state(
        ledger, "dcir", "ER_PRS_F", "2024-02-01", "validated", run_id="r2", rows=5
    )  # in flight, waiting on nothing
    catalogue = load_catalogue(CATALOGUE)

    (dcir,) = [row for row in status_rows(catalogue, ledger) if row["domain"] == "dcir"]
    assert dcir["waiting"] == [{"table": "ER_PRS_F", "partition": "2024-01-01", "waits_for": waits}]
    view = board_view(catalogue, ledger)
    (board_dcir,) = [d for d in view["domains"] if d["domain"] == "dcir"]
    assert board_dcir["waiting"] == dcir["waiting"]
    page = render_board(view, "/airflow/hdh")
    assert '<tr class="waiting" data-domain="dcir" data-table="ER_PRS_F">' in page
    assert f"passed; {waits}" in page
