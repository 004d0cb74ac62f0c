"""The documentation says what the code does: tables generated from code, one namespace, no outside pointers."""

from __future__ import annotations

from pathlib import Path

from webhook.metrics import readme_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_readme_metrics_table_is_the_code_table() -> None:
    # The table lives in webhook/metrics.py (TABLE); paste readme_table()'s output after a change.
    assert readme_table() in README.read_text()
