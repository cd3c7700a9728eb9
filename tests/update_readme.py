"""Regenerate the README's example outputs: ``python tests/update_readme.py``.

Run it after changing rule files, messages or the text explanation; then review the
diff of README.md.  ``tests/test_readme.py`` fails until the README is up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.readme_blocks import README, generate  # noqa: E402


def main() -> int:
    before = README.read_text(encoding="utf-8")
    after = generate(before)
    if after == before:
        print("README.md: examples up to date")
        return 0
    README.write_text(after, encoding="utf-8")
    print("README.md: examples regenerated; review with git diff README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
