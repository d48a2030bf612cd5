"""Scrape a Prometheus endpoint and parse it with the Prometheus project's own text parser.

    scrape_metrics.py <url>

Prints one JSON object: {"families": {name: {"type": ..., "samples": [{"name", "labels", "value"}]}}}.
A malformed exposition makes the parser (and this script) fail.
"""

from __future__ import annotations

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main(url: str) -> None:
    with urllib.request.urlopen(url, timeout=30) as resp:
        content_type = resp.headers.get("Content-Type", "")
        text = resp.read().decode("utf-8")
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "documentation": family.documentation,
            "samples": [
                {"name": s.name, "labels": dict(s.labels), "value": s.value} for s in family.samples
            ],
        }
    print(json.dumps({"content_type": content_type, "families": families}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
