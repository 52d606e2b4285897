#!/usr/bin/env python3
"""wordcount, written with the `p3ak.plugin` helper (`pip install p3ak`): the same plugin as
`wordcount.py`, which speaks the protocol by hand with the standard library only.

Each decorated function is an action. Its JSON Schema comes from the type hints, its
description from the docstring, and the helper runs the protocol (docs/protocol.md): hello,
register, then invoke, ping and shutdown. Arguments are checked against the schema before
the function runs; what does not match is answered with an `invalid` error.
"""

from p3ak.plugin import Plugin

plugin = Plugin(software="wordcount_sdk.py 0.1")


@plugin.action(tier="observe")
def count(text: str) -> dict[str, int]:
    """Count the words, lines and characters of a text."""
    # chars counts Unicode code points.
    return {"words": len(text.split()), "lines": len(text.splitlines()), "chars": len(text)}


@plugin.action(tier="act")  # only a recommendation: the operator's policy decides
def shout(text: str) -> dict[str, str]:
    """Return the text in upper case."""
    return {"text": text.upper()}


if __name__ == "__main__":
    plugin.run()
