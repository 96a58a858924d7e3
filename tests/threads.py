"""Running test code on several threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_threads(*targets: Callable[[], None]) -> list[BaseException]:
    """Run each target in a thread of its own; the exceptions they raised."""
    raised: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as error:
            raised.append(error)

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return raised
