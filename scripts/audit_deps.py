"""Run pip-audit on the installed environment; fail on known vulnerabilities in our direct dependencies.

Everything pip-audit finds is reported. Packages it cannot audit (no vulnerability
service reachable, as on machines whose only network is a package mirror) are
counted and reported, not hidden.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def direct_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = set()
    for spec in project["dependencies"]:
        names.add(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def main() -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-l", "--format", "json", "--progress-spinner", "off"],
        capture_output=True, text=True, timeout=600,
    )
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        print(f"pip-audit produced no report (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        return 1
    direct = direct_dependencies()
    failures = 0
    audited = skipped = 0
    for dep in report.get("dependencies", []):
        name = dep["name"].lower().replace("_", "-")
        if "skip_reason" in dep:
            skipped += 1
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            tag = "DIRECT" if name in direct else "transitive"
            print(f"[{tag}] {name} {dep.get('version')}: {vuln['id']} fixed in {vuln.get('fix_versions')}")
            failures += name in direct
    print(f"pip-audit: {audited} packages audited, {skipped} could not be audited "
          f"(no vulnerability data reachable for them), {failures} known vulnerabilities in direct dependencies")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
