"""Bootstrap cost in a fresh process: importing container_messaging, then ``MessagingContainer.from_dict`` scanning
a generated package. Imports nothing else first, so the import time is the framework's own."""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    package, result_path = argv[0], argv[argv.index("--result") + 1]
    start = time.perf_counter()
    from container_messaging import MessagingContainer

    imported = time.perf_counter()
    container = MessagingContainer.from_dict({"scan": [package], "transport": {"url": "memory://"}})
    built = time.perf_counter()
    handlers = len(container.routes.handlers)
    with open(result_path, "w", encoding="utf-8") as output:
        json.dump({"import_s": imported - start, "from_dict_s": built - imported, "handlers": handlers}, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
