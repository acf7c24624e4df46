"""Sends a few ``billing.changeDetails`` commands from the user service: ``python -m examples.user.main``."""

from __future__ import annotations

import argparse

from container_messaging import MessagingContainer
from examples.user.handlers import UserController


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/user.yaml")
    parser.add_argument("--count", type=int, default=3)
    args = parser.parse_args(argv)
    with MessagingContainer.from_config(args.config) as container:
        controller = container.get(UserController)
        for number in range(1, args.count + 1):
            controller.change_billing(str(100 + number), f"IBAN-{number:04d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
