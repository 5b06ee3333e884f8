"""Every count the zoo gives stays exactly what it was when the zoo was Python (tests/golden/zoo-counts.json, written
by tests/zoo_counts.py at commit d7acbcf): moving models into files changed no number."""

import json
from pathlib import Path

from zoo_counts import zoo_counts

GOLDEN = Path(__file__).parent / "golden" / "zoo-counts.json"


def test_every_zoo_count_equals_the_golden():
    # through JSON, as the golden was written: floats and tuples compare as they were stored
    assert json.loads(json.dumps(zoo_counts())) == json.loads(GOLDEN.read_text())
