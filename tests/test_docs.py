"""The documentation says what the code does: tables generated from code, one namespace, no outside pointers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.support.helmchart import render
from webhook.metrics import readme_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_the_readme_metrics_table_is_the_code_table() -> None:
    # The table lives in webhook/metrics.py (TABLE); paste readme_table()'s output after a change.
    assert readme_table() in README.read_text()


def test_the_readme_and_the_chart_alert_at_the_same_time_to_expiry() -> None:
    rule = (ROOT / "charts/regcred/templates/prometheusrule.yaml").read_text()
    chart = re.findall(r"regcred_token_expiry_timestamp_seconds > 0\) - time\(\) < (\d+)", rule)
    readme = re.findall(r"regcred_token_expiry_timestamp_seconds - time\(\) < (\d+)", README.read_text())
    assert len(chart) == 1 and readme and set(readme) == set(chart)


DOCS = [README, ROOT / "CONTRIBUTING.md", ROOT / "charts/regcred/README.md", ROOT / "charts/regcred/values.yaml",
        ROOT / "charts/regcred/templates/NOTES.txt", ROOT / "certs/README.md", ROOT / "bench/README.md",
        *sorted((ROOT / "examples").rglob("*.yaml"))]
# regcred's namespace written any way but regcred-system: -n X, --namespace X, namespace: X,
# a Kubernetes ServiceAccount reference [X/sa], or "in X" / "X/<secret>" in prose.
OTHER_NAMESPACE = re.compile(
    r"(?:-n |--namespace[ =]|namespace: ?|\[)(?!regcred-system\b)regcred\b(?![-.@_])"
    r"|\bsecret regcred/(?!-)"
)


def test_the_docs_use_one_namespace() -> None:
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in DOCS if path.exists()
             for number, line in enumerate(path.read_text().splitlines(), 1) if OTHER_NAMESPACE.search(line)]
    assert found == [], "use regcred-system:\n" + "\n".join(found)
    assert "regcred-system" in README.read_text()


def test_the_readme_ci_values_example_is_complete_and_renders() -> None:
    section = README.read_text().split("### Turning it on", 1)[1].split("\n### ", 1)[0]
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL) if b.startswith("ci:")]
    example = yaml.safe_load(block)
    defaults = yaml.safe_load((ROOT / "charts/regcred/values.yaml").read_text())

    def keys(tree: dict, shape: dict, prefix: str = "") -> set[str]:
        # Descends where values.yaml has named keys, not into free-form maps such as annotations.
        return {f"{prefix}{k}" for k in tree} | {key for k, v in tree.items() if isinstance(shape.get(k), dict)
                                                 and shape[k] for key in keys(v, shape[k], f"{prefix}{k}.")}

    assert keys(example["ci"], defaults["ci"]) == keys(defaults["ci"], defaults["ci"])
    rendered = render(example)
    assert rendered.get("Service", "regcred-ci") and rendered.get("Ingress")


# Built from parts so that this file does not match itself.
OUTSIDE = re.compile("|".join([re.escape("/".join(["shared", "STYLE"])), re.escape("../" + "shared/")]))


def test_nothing_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pointing = [name for name in files if (ROOT / name).is_file() and (ROOT / name).suffix not in (".png", ".gz")
                and OUTSIDE.search((ROOT / name).read_text(errors="replace"))]
    assert pointing == [] and (ROOT / "CONTRIBUTING.md").is_file()


def test_figures_are_dated_not_numbered_by_session() -> None:
    numbered = [f"{path.name}:{number}" for path in (README, ROOT / "bench/README.md")
                for number, line in enumerate(path.read_text().splitlines(), 1)
                if re.search(r"\bsessions? \d|\b(this|that|the) session\b", line, re.IGNORECASE)]
    assert numbered == []
    assert re.search(r"## Latest figures \(\d{1,2} \w+ 20\d\d", (ROOT / "bench/README.md").read_text())


def test_contributing_lists_every_module_and_package_of_webhook() -> None:
    """The file list in CONTRIBUTING.md is how a newcomer finds a behaviour: it must stay whole."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    block = text[text.index("```\nwebhook/\n"):]
    block = block[:block.index("\n```")]
    listed = {line.split()[0] for line in block.splitlines()[1:] if line.startswith("  ") and line.strip()}
    package = ROOT / "webhook"
    present = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    present |= {p.name + "/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert sorted(present - listed) == [], "missing from CONTRIBUTING.md's file list"
    assert sorted(listed - present) == [], "listed in CONTRIBUTING.md, but not in webhook/"
