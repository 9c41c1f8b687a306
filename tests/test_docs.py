"""The docs a reader meets: a short front page that starts with the two commands, quoted tables that match
the files they come from, links that resolve, and no private tracker or spec numbers."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "results_readme.py"
DOCS = [ROOT / "README.md", ROOT / "reports" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _generator():
    spec = importlib.util.spec_from_file_location("results_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quoted_tables_match_the_files_they_come_from():
    run = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_generator_copies_a_section_and_a_filtered_csv_and_check_sees_a_stale_copy(tmp_path):
    (tmp_path / "t.md").write_text("# T\n\nintro\n\n## Wanted part\n\n| a |\n|---|\n| 1 |\n\n## Next\n\nno\n")
    (tmp_path / "t.csv").write_text("x,y,z\n1,a|b,keep\n2,c,drop\n")
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- include: t.md#Wanted part -->\nold\n<!-- end include -->\n\n"
                   "<!-- include: t.csv columns=z,y where=z:keep -->\n<!-- end include -->\n")
    gen = _generator()
    assert gen.main([str(doc), "--check"]) == 1 and "old" in doc.read_text()  # --check writes nothing
    assert gen.main([str(doc)]) == 0 and gen.main([str(doc), "--check"]) == 0
    assert doc.read_text() == ("<!-- include: t.md#Wanted part -->\n\n| a |\n|---|\n| 1 |\n\n<!-- end include -->\n\n"
                               "<!-- include: t.csv columns=z,y where=z:keep -->\n\n| z | y |\n|---|---|\n"
                               "| keep | a\\|b |\n\n<!-- end include -->\n")


def test_readme_is_a_short_front_page_that_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 15_000
    first_block = FENCE.search(readme).group(0)
    assert "bash scripts/setup.sh && bash scripts/quick.sh" in first_block
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in first_block


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", path.read_text())
    titles = re.findall(r"^#{1,6}\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", t.lower().replace("`", "")).replace(" ", "-") for t in titles}


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(FENCE.sub("", doc.read_text())):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            rel, _, anchor = target.partition("#")
            dest = (doc.parent / rel).resolve() if rel else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no heading)")
    assert not broken, broken


def test_docs_name_no_tracker_issues_or_spec_sections():
    pattern = re.compile(r"issue[ -]\d|§\s*\d", re.I)
    hits = [f"{doc.relative_to(ROOT)}: {m.group(0)!r}" for doc in DOCS for m in pattern.finditer(doc.read_text())]
    assert not hits, hits


def test_pipeline_graph_in_the_docs_is_current():
    """docs/pipeline.md is what `dvc dag --mermaid` gives for dvc.yaml now, collapsed to one node per stage."""
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "pipeline_dag.py"), "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_pipeline_graph_collapses_instances():
    spec = importlib.util.spec_from_file_location("pipeline_dag", ROOT / "scripts" / "pipeline_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mermaid = ('flowchart TD\n\tnode1["prepare@a"]\n\tnode2["prepare@b"]\n\tnode3["report"]\n'
               "\tnode1-->node3\n\tnode2-->node3\n")
    assert module.collapsed_mermaid(mermaid) == 'flowchart LR\n\tprepare["prepare (2)"]\n\treport["report"]\n' \
                                               "\tprepare-->report"
